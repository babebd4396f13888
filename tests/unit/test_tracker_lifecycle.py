"""The recorder's tracker and the control plane's call lifecycle records."""

from __future__ import annotations

from schemas import envelope
from workers.recorder.tracker import COMPLETED_WAIT_S, RecordingTracker


class NullAssembler:
    def add_start(self, record: envelope.StreamStarted) -> None: ...
    def add_chunk(self, record: envelope.MediaChunk) -> None: ...
    def add_close(self, record: envelope.StreamClosed) -> None: ...
    def add_mark(self, record: envelope.MarkReceived) -> None: ...
    def discard(self) -> None: ...


def tracker() -> RecordingTracker:
    return RecordingTracker(lambda call_id: NullAssembler(), grace_ms=5000, idle_timeout_s=60)


def life(event: envelope.LifecycleEvent, ns: int, **kw: str) -> envelope.CallLifecycle:
    return envelope.CallLifecycle(call_id="c", event=event, received_ns=ns, **kw)


def start(stream: str, ns: int) -> envelope.StreamStarted:
    return envelope.StreamStarted(
        call_id="c",
        stream_id=stream,
        stream_type="oneway",
        channel="both",
        codec="L16/24000",
        ingest_pod="p",
        connection_id=stream,
        received_ns=ns,
    )


def close(stream: str, ns: int) -> envelope.StreamClosed:
    return envelope.StreamClosed(
        call_id="c",
        stream_id=stream,
        reason="stop",
        detail="",
        ingest_pod="p",
        connection_id=stream,
        received_ns=ns,
        chunks=0,
        invalid=0,
    )


S = 1_000_000_000


def test_completed_ends_the_recording_without_the_grace_period() -> None:
    t = tracker()
    t.add(0, 0, life("answered", 1 * S, from_number="+1"), now=1.0)
    t.add(0, 1, start("s1", 2 * S), now=2.0)
    t.add(0, 2, close("s1", 9 * S), now=9.0)
    assert t.ready(now=9.1) == []  # grace of 5 s still running
    t.add(0, 3, life("completed", 9 * S + 1), now=9.2)
    [rec] = t.ready(now=9.2)
    assert rec.answered is not None and rec.answered.from_number == "+1"
    assert rec.completed is not None and not rec.idle


def test_completed_with_a_stream_still_open_waits_briefly_then_cuts() -> None:
    t = tracker()
    t.add(0, 0, start("s1", 1 * S), now=1.0)
    t.add(0, 1, life("completed", 5 * S), now=5.0)
    assert t.ready(now=5.0 + COMPLETED_WAIT_S / 2) == []
    [rec] = t.ready(now=5.0 + COMPLETED_WAIT_S)
    assert rec.idle and rec.cut_reason == "call completed, stream close missing"


def test_a_pause_keeps_the_recording_open_until_the_resumed_stream_joins() -> None:
    t = tracker()
    t.add(0, 0, start("s1", 1 * S), now=1.0)
    t.add(0, 1, life("paused", 3 * S, stream_id="s1"), now=3.0)
    t.add(0, 2, close("s1", 3 * S), now=3.0)
    assert t.ready(now=100.0) == []  # far past the grace period: still paused
    t.add(0, 3, life("resumed", 100 * S), now=100.0)
    t.add(0, 4, start("s2", 200 * S), now=200.0)  # however late the stream comes
    t.add(0, 5, close("s2", 210 * S), now=210.0)
    t.add(0, 6, life("completed", 210 * S), now=210.0)
    [rec] = t.ready(now=210.0)
    assert rec.known_streams == {"s1", "s2"}
    assert [p.stream_id for p in rec.pauses] == ["s1"]


def test_an_answered_call_without_a_stream_is_handed_over_empty_on_completed() -> None:
    t = tracker()
    t.add(0, 0, life("answered", 1 * S), now=1.0)
    t.add(0, 1, life("completed", 2 * S), now=2.0)
    [rec] = t.ready(now=2.0)
    assert not rec.known_streams
