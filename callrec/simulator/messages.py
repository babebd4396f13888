"""The steps of a connection rendered as Wavix JSON text frames (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import assert_never

import msgspec

from callrec.simulator.calls import SimulatedCall
from callrec.simulator.plan import Step, StreamPlan
from schemas import wavix
from schemas.codecs import Codec

FRAME_MS = 20
"""Audio per media message, as Wavix sends it."""


class MessageWriter:
    """Renders the steps of one connection as Wavix JSON (sans I/O)."""

    def __init__(
        self,
        call: SimulatedCall,
        plan: StreamPlan,
        codec: Codec,
        started_at: float,
        numbers_as_strings: bool,
    ) -> None:
        self.call = call
        self.plan = plan
        self.frame_bytes = codec.frame_bytes(FRAME_MS)
        self.started_at = started_at
        self.numbers_as_strings = numbers_as_strings
        self._time_cache = (-1, "")

    def render(self, step: Step) -> bytes:
        """The text frame for ``step`` (not for ``drop``, which sends nothing)."""
        call_id, stream_id = self.call.call_id, self.plan.stream_id
        when = self._event_time(step.tick)
        event: wavix.Event
        match step.kind:
            case "connected":
                event = wavix.Connected(event_time=when)
            case "start":
                event = wavix.Start(
                    call_id=call_id,
                    stream_id=stream_id,
                    stream_type="oneway",
                    channel=self.plan.channel,
                    sequence_number=step.seq,
                    event_time=when,
                )
            case "media":
                event = wavix.Media(
                    call_id=call_id,
                    stream_id=stream_id,
                    media=self._body(step),
                    sequence_number=step.seq,
                    event_time=when,
                )
            case "stop":
                event = wavix.Stop(call_id, stream_id, sequence_number=step.seq, event_time=when)
            case "malformed":
                return self._malformed(step, when)
            case "drop":
                raise ValueError("a dropped chunk has no message")
            case _:
                assert_never(step.kind)
        return wavix.encode(event, numbers_as_strings=self.numbers_as_strings)

    def _body(self, step: Step) -> wavix.MediaBody:
        assert step.track is not None
        offset = (step.chunk - 1) * self.frame_bytes
        payload = self.call.tracks[step.track][offset : offset + self.frame_bytes]
        return wavix.MediaBody(
            payload=payload,
            chunk=step.chunk,
            timestamp=(step.chunk - 1) * FRAME_MS,
            track=step.track,
        )

    def _malformed(self, step: Step, when: str) -> bytes:
        ids = {"call_id": self.call.call_id, "stream_id": self.plan.stream_id}
        match step.malformed:
            case "not_json":
                return b'{"event": "media", "media": {"payload": "AAAA'  # cut off mid-message
            case "bad_base64":
                media = {
                    "payload": "*** not base64 ***",
                    "track": step.track,
                    "chunk": step.chunk,
                    "timestamp": (step.chunk - 1) * FRAME_MS,
                }
                return msgspec.json.encode(
                    {"event": "media", **ids, "media": media, "event_time": when}
                )
            case "unknown_event":
                return msgspec.json.encode({"event": "simulator_noise", **ids, "event_time": when})
            case None:
                raise ValueError("a malformed step needs a kind")
            case _:
                assert_never(step.malformed)

    def _event_time(self, tick: int) -> str:
        cached_tick, text = self._time_cache
        if cached_tick != tick:
            text = iso_time(self.started_at + tick * FRAME_MS / 1000)
            self._time_cache = (tick, text)
        return text


def iso_time(epoch_s: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.120Z``."""
    stamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
