"""The Kafka envelope: round trips, and the fixed v1 byte samples stay decodable forever."""

from __future__ import annotations

import contextlib
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import envelope
from schemas.errors import EnvelopeError, UnsupportedVersionError

SAMPLES = Path(__file__).parent.parent / "data" / "envelope"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_v1_media_sample() -> None:
    record = envelope.decode(sample("v1_media.bin"))
    assert record == envelope.MediaChunk(
        call_id="call-1", stream_id="stream-a", track="inbound", chunk=7, timestamp_ms=120,
        codec="L16/24000", payload=bytes(range(16)), received_ns=1763712000000000000, seq=9,
    )


def test_v1_start_sample() -> None:
    record = envelope.decode(sample("v1_start.bin"))
    assert isinstance(record, envelope.StreamStarted)
    assert (record.call_id, record.stream_type, record.channel, record.codec) == (
        "call-1", "oneway", "both", "L16/24000"
    )
    assert (record.ingest_pod, record.event_time, record.seq) == (
        "ingest-0", "2025-11-21T08:00:00.000Z", 1
    )


def test_v1_close_sample() -> None:
    record = envelope.decode(sample("v1_close.bin"))
    assert isinstance(record, envelope.StreamClosed)
    assert (record.reason, record.detail, record.chunks, record.invalid) == (
        "disconnect", "socket closed without stop", 250, 2
    )


def test_v1_mark_sample() -> None:
    record = envelope.decode(sample("v1_mark.bin"))
    assert record == envelope.MarkReceived(
        call_id="call-1", stream_id="stream-a", name="greeting-done",
        received_ns=1763712001000000000, seq=51,
    )


def test_v1_recording_sample() -> None:
    record = envelope.decode(sample("v1_recording.bin"))
    assert isinstance(record, envelope.RecordingFinished)
    assert (record.call_id, record.part, record.tracks, record.complete) == (
        "call-1", 0, ["inbound", "outbound"], True
    )


def test_v1_recording_sample_written_before_pauses_has_none() -> None:
    record = envelope.decode(sample("v1_recording.bin"))
    assert isinstance(record, envelope.RecordingFinished)
    assert record.pauses == []


def test_v1_call_event_sample() -> None:
    data = sample("v1_call_event.bin")
    assert data[:4] == b"CR\x01\x06"
    record = envelope.decode(data)
    assert isinstance(record, envelope.CallEventReceived)
    assert record.call_id == "call-1"
    assert (record.event.event_type, record.event.from_number, record.event.tag,
            record.source) == ("answered", "+442079460001", "sales", "wavix")


def test_v1_lifecycle_sample() -> None:
    data = sample("v1_lifecycle.bin")
    assert data[:4] == b"CR\x01\x07"
    record = envelope.decode(data)
    assert record == envelope.CallLifecycle(
        call_id="call-1", event="paused", received_ns=1763712001000000000,
        from_number="+442079460001", to_number="+15550100", direction="inbound",
        stream_id="stream-a",
    )


def test_v1_control_state_sample() -> None:
    data = sample("v1_control_state.bin")
    assert data[:4] == b"CR\x01\x08"
    record = envelope.decode(data)
    assert isinstance(record, envelope.ControlState)
    assert (record.phase, record.offset, record.epoch, record.stream_id, record.rule) == (
        "started", 41, 1, "stream-a", "london"
    )


def test_header_layout_is_magic_version_kind() -> None:
    data = sample("v1_close.bin")
    assert data[:4] == b"CR\x01\x03"


def test_fields_added_by_a_later_writer_are_ignored() -> None:
    # A v1 writer of the future adds a field; this reader must still decode the record.
    import msgspec

    body = msgspec.msgpack.decode(sample("v1_mark.bin")[4:])
    body["added_later"] = [1, 2, 3]
    record = envelope.decode(b"CR\x01\x04" + msgspec.msgpack.encode(body))
    assert isinstance(record, envelope.MarkReceived) and record.name == "greeting-done"


def test_newer_version_is_refused_with_its_own_error() -> None:
    data = bytearray(sample("v1_media.bin"))
    data[2] = 2
    with pytest.raises(UnsupportedVersionError):
        envelope.decode(bytes(data))


@pytest.mark.parametrize(
    "value", [b"", b"CR", b"XX\x01\x01", b"CR\x01\x09\x80", b"CR\x01\x01\xc1", b"CR\x01\x01\x80"]
)
def test_garbage_is_an_envelope_error(value: bytes) -> None:
    with pytest.raises(EnvelopeError):
        envelope.decode(value)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_envelope_error(value: bytes) -> None:
    for candidate in (value, b"CR\x01" + value):
        with contextlib.suppress(EnvelopeError):
            envelope.decode(candidate)


@given(
    chunk=st.integers(min_value=0, max_value=2**40),
    ts=st.integers(min_value=0, max_value=2**40),
    payload=st.binary(max_size=2000),
    track=st.sampled_from(["inbound", "outbound"]),
)
def test_media_round_trip(chunk: int, ts: int, payload: bytes, track: str) -> None:
    record = envelope.MediaChunk(
        call_id="c", stream_id="s", track=track, chunk=chunk,  # type: ignore[arg-type]
        timestamp_ms=ts, codec="L16/24000", payload=payload, received_ns=1,
    )
    assert envelope.decode(envelope.encode(record)) == record


BATCH_FRAMES = [
    envelope.MediaFrame(track="inbound", chunk=7, timestamp_ms=120, payload=bytes(range(16)),
                        received_ns=1763712000000000000, seq=9),
    envelope.MediaFrame(track="outbound", chunk=7, timestamp_ms=120,
                        payload=bytes(range(16, 32)), received_ns=1763712000000100000, seq=10),
    envelope.MediaFrame(track="inbound", chunk=8, timestamp_ms=140,
                        payload=bytes(range(32, 48)), received_ns=1763712000020000000),
]


def test_v1_media_batch_sample() -> None:
    data = sample("v1_media_batch.bin")
    assert data[:4] == b"CR\x01\x09"
    record = envelope.decode(data)
    assert record == envelope.MediaBatch(
        call_id="call-1", stream_id="stream-a", codec="L16/24000", frames=BATCH_FRAMES
    )
    assert record.received_ns == 1763712000020000000  # the last frame's


def test_a_batch_stands_for_the_media_chunks_of_its_frames() -> None:
    record = envelope.decode(sample("v1_media_batch.bin"))
    assert isinstance(record, envelope.MediaBatch)
    first, second, third = record.chunks()
    # The first frame is the v1_media.bin sample's chunk, field for field.
    assert first == envelope.decode(sample("v1_media.bin"))
    assert (second.track, second.chunk, second.seq) == ("outbound", 7, 10)
    assert (third.chunk, third.seq, third.payload) == (8, None, bytes(range(32, 48)))


def test_an_empty_batch_is_an_envelope_error() -> None:
    empty = envelope.MediaBatch(call_id="c", stream_id="s", codec="L16/24000", frames=[])
    with pytest.raises(EnvelopeError):
        envelope.decode(envelope.encode(empty))


def test_frame_fields_added_by_a_later_writer_are_ignored() -> None:
    import msgspec

    body = msgspec.msgpack.decode(sample("v1_media_batch.bin")[4:])
    body["frames"][0]["added_later"] = "x"
    record = envelope.decode(b"CR\x01\x09" + msgspec.msgpack.encode(body))
    assert isinstance(record, envelope.MediaBatch) and record.frames == BATCH_FRAMES


@given(
    frames=st.lists(
        st.builds(
            envelope.MediaFrame,
            track=st.sampled_from(["inbound", "outbound"]),
            chunk=st.integers(min_value=0, max_value=2**40),
            timestamp_ms=st.integers(min_value=0, max_value=2**40),
            payload=st.binary(max_size=500),
            received_ns=st.integers(min_value=0, max_value=2**63 - 1),
            seq=st.none() | st.integers(min_value=0, max_value=2**40),
        ),
        min_size=1, max_size=20,
    )
)
def test_media_batch_round_trip(frames: list[envelope.MediaFrame]) -> None:
    record = envelope.MediaBatch(call_id="c", stream_id="s", codec="L16/24000", frames=frames)
    assert envelope.decode(envelope.encode(record)) == record


class MarkBeforeEventTime(msgspec.Struct, frozen=True, kw_only=True):
    """``MarkReceived`` as readers before ``event_time`` was added define it."""

    call_id: str
    stream_id: str
    name: str
    received_ns: int
    seq: int | None = None


def test_v1_mark_with_event_time_sample() -> None:
    """Marks gained ``event_time`` within version 1: the fixed bytes of such a record decode
    here, and still decode with the reader's old definition (which ignores the field)."""
    data = sample("v1_mark_event_time.bin")
    assert data[:4] == b"CR\x01\x04"
    assert envelope.decode(data) == envelope.MarkReceived(
        call_id="call-1", stream_id="stream-b", name="reply-3-played",
        received_ns=1763712002500000000, seq=77, event_time="2025-11-21T08:00:02.480Z",
    )
    old = msgspec.msgpack.decode(data[4:], type=MarkBeforeEventTime)
    assert old == MarkBeforeEventTime(call_id="call-1", stream_id="stream-b",
                                      name="reply-3-played", received_ns=1763712002500000000,
                                      seq=77)
    # A mark written before the field existed reads with event_time None.
    mark = envelope.decode(sample("v1_mark.bin"))
    assert isinstance(mark, envelope.MarkReceived) and mark.event_time is None
