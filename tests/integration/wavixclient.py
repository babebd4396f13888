"""A minimal hand-driven Wavix sender for tests that need exact control of each frame."""

from __future__ import annotations

from schemas import wavix

EVENT_TIME = "2025-11-21T08:00:00.000Z"


def start(call_id: str, stream_id: str, channel: wavix.Channel = "both",
          stream_type: wavix.StreamType = "oneway") -> bytes:
    return wavix.encode(wavix.Start(call_id=call_id, stream_id=stream_id, channel=channel,
                                    stream_type=stream_type, sequence_number=1,
                                    event_time=EVENT_TIME))


def media(call_id: str, stream_id: str, chunk: int, payload: bytes,
          track: wavix.Track = "inbound") -> bytes:
    return wavix.encode(wavix.Media(
        call_id=call_id, stream_id=stream_id, sequence_number=chunk + 1, event_time=EVENT_TIME,
        media=wavix.MediaBody(payload=payload, chunk=chunk, timestamp=(chunk - 1) * 20,
                              track=track),
    ))


def stop(call_id: str, stream_id: str) -> bytes:
    return wavix.encode(wavix.Stop(call_id=call_id, stream_id=stream_id, event_time=EVENT_TIME))


def frame(chunk: int) -> bytes:
    """960 distinct-looking bytes (20 ms of L16/24000) that encode their chunk number."""
    return chunk.to_bytes(4, "little") * 240


def mark(call_id: str, stream_id: str, name: str, seq: int, event_time: str) -> bytes:
    """A twoway stream's ``mark`` coming back: the audio sent before it has played."""
    return wavix.encode(wavix.Mark(call_id=call_id, stream_id=stream_id,
                                   mark=wavix.MarkBody(name), sequence_number=seq,
                                   event_time=event_time))
