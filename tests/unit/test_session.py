"""The per-connection state machine of ingest, fed bytes directly."""

from __future__ import annotations

import pytest

from ingest.errors import SkippedMessage
from ingest.session import StreamSession
from schemas import envelope, wavix
from schemas.codecs import L16_24K

FRAME = b"\x01\x02" * 480


def session() -> StreamSession:
    return StreamSession(L16_24K, pod="ingest-0", connection_id="conn-1")


def start(channel: wavix.Channel = "both", stream_type: wavix.StreamType = "oneway") -> bytes:
    return wavix.encode(wavix.Start(call_id="c1", stream_id="s1", channel=channel,
                                    stream_type=stream_type, sequence_number=1,
                                    event_time="2025-11-21T08:00:00.000Z"))


def media(chunk: int = 1, track: wavix.Track | None = "inbound", stream_id: str = "s1") -> bytes:
    return wavix.encode(wavix.Media(
        call_id="c1", stream_id=stream_id, sequence_number=chunk + 1,
        media=wavix.MediaBody(payload=FRAME, chunk=chunk, timestamp=(chunk - 1) * 20,
                              track=track),
    ))


def stop() -> bytes:
    return wavix.encode(wavix.Stop(call_id="c1", stream_id="s1", sequence_number=99))


def test_a_stream_from_connected_to_stop() -> None:
    s = session()
    assert s.receive(b'{"event":"connected"}') is None
    started = s.receive(start())
    assert isinstance(started, envelope.StreamStarted)
    assert (started.ingest_pod, started.connection_id, started.codec) == (
        "ingest-0", "conn-1", "L16/24000"
    )
    assert started.event_time == "2025-11-21T08:00:00.000Z"
    chunk = s.receive(media(1, "outbound"))
    assert isinstance(chunk, envelope.MediaFrame)
    assert (chunk.track, chunk.chunk, chunk.timestamp_ms, chunk.payload) == (
        "outbound", 1, 0, FRAME
    )
    assert s.receive(stop()) is None and s.stopped
    closed = s.close_record("stop", "stop received")
    assert (closed.reason, closed.chunks, closed.invalid) == ("stop", 1, 0)


@pytest.mark.parametrize(
    ("channel", "stream_type", "track", "expected"),
    [
        ("inbound", "oneway", None, "inbound"),
        ("outbound", "oneway", None, "outbound"),
        ("outbound", "oneway", "outbound", "outbound"),
        ("both", "oneway", "inbound", "inbound"),
        ("inbound", "twoway", None, "inbound"),
    ],
)
def test_track_follows_the_stream_channel(
    channel: wavix.Channel, stream_type: wavix.StreamType, track: wavix.Track | None,
    expected: str,
) -> None:
    s = session()
    s.receive(start(channel, stream_type))
    chunk = s.receive(media(1, track))
    assert isinstance(chunk, envelope.MediaFrame) and chunk.track == expected


@pytest.mark.parametrize(
    ("channel", "stream_type", "track", "reason"),
    [
        ("inbound", "oneway", "outbound", "track_mismatch"),
        ("outbound", "oneway", "inbound", "track_mismatch"),
        ("both", "oneway", None, "missing_track"),
        ("inbound", "twoway", "outbound", "track_mismatch"),
    ],
)
def test_chunks_on_the_wrong_track_are_skipped(
    channel: wavix.Channel, stream_type: wavix.StreamType, track: wavix.Track | None,
    reason: str,
) -> None:
    s = session()
    s.receive(start(channel, stream_type))
    with pytest.raises(SkippedMessage) as info:
        s.receive(media(1, track))
    assert info.value.reason == reason


def test_media_before_start_is_skipped() -> None:
    with pytest.raises(SkippedMessage, match="before start") as info:
        session().receive(media())
    assert info.value.reason == "media_before_start"


def test_media_for_another_stream_is_skipped() -> None:
    s = session()
    s.receive(start())
    with pytest.raises(SkippedMessage) as info:
        s.receive(media(stream_id="other"))
    assert info.value.reason == "unknown_stream"


def test_second_start_and_media_after_stop_are_skipped() -> None:
    s = session()
    s.receive(start())
    with pytest.raises(SkippedMessage) as info:
        s.receive(start())
    assert info.value.reason == "duplicate_start"
    s.receive(stop())
    with pytest.raises(SkippedMessage) as info:
        s.receive(media(2))
    assert info.value.reason == "after_stop"


def test_mark_becomes_a_record() -> None:
    s = session()
    s.receive(start("inbound", "twoway"))
    mark = s.receive(wavix.encode(wavix.Mark(call_id="c1", stream_id="s1",
                                             mark=wavix.MarkBody(name="m1"), sequence_number=5)))
    assert isinstance(mark, envelope.MarkReceived) and (mark.name, mark.seq) == ("m1", 5)
