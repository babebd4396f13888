"""RecordingTracker: which recording a record joins, when a recording is over, what may be
committed. Driven with record times and a fake clock, so every rule is exact."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import envelope
from workers.recorder.tracker import RecordingTracker

MS = 1_000_000
T0 = 1_763_712_000_000 * MS


@dataclass
class Collected:
    """Keeps what the tracker hands to an assembler."""

    call_id: str
    records: list[envelope.Record] = field(default_factory=list)
    discarded: bool = False

    def add_start(self, r: envelope.StreamStarted) -> None:
        self.records.append(r)

    def add_chunk(self, r: envelope.MediaChunk) -> None:
        self.records.append(r)

    def add_close(self, r: envelope.StreamClosed) -> None:
        self.records.append(r)

    def add_mark(self, r: envelope.MarkReceived) -> None:
        self.records.append(r)

    def discard(self) -> None:
        self.discarded = True


def tracker(grace_ms: int = 500, idle_s: float = 60) -> RecordingTracker:
    return RecordingTracker(Collected, grace_ms=grace_ms, idle_timeout_s=idle_s)


def start(stream: str, at_ms: int, call: str = "c1") -> envelope.StreamStarted:
    return envelope.StreamStarted(call_id=call, stream_id=stream, stream_type="oneway",
                                  channel="inbound", codec="L16/24000", ingest_pod="p",
                                  connection_id=stream, received_ns=T0 + at_ms * MS)


def chunk(stream: str, n: int, at_ms: int, call: str = "c1") -> envelope.MediaChunk:
    return envelope.MediaChunk(call_id=call, stream_id=stream, track="inbound", chunk=n,
                               timestamp_ms=(n - 1) * 20, codec="L16/24000", payload=b"\0\0",
                               received_ns=T0 + at_ms * MS)


def close(stream: str, at_ms: int, call: str = "c1") -> envelope.StreamClosed:
    return envelope.StreamClosed(call_id=call, stream_id=stream, reason="stop", detail="",
                                 ingest_pod="p", connection_id=stream,
                                 received_ns=T0 + at_ms * MS, chunks=1, invalid=0)


def feed(t: RecordingTracker, records: list[envelope.Record], partition: int = 0,
         first_offset: int = 0, now: float = 0.0) -> None:
    for i, record in enumerate(records):
        t.add(partition, first_offset + i, record, now)


def test_a_recording_is_over_after_the_grace_period_on_our_clock() -> None:
    t = tracker()
    feed(t, [start("s1", 0), chunk("s1", 1, 20), close("s1", 40)], now=10.0)
    assert t.ready(10.4) == []
    [rec] = t.ready(10.5)
    assert rec.call_id == "c1" and not rec.idle
    assert t.ready(11.0) == [], "handed over once"


def test_a_later_record_in_the_partition_ends_the_grace_period_by_record_time() -> None:
    t = tracker()
    feed(t, [start("s1", 0), close("s1", 40), start("x", 541, call="other")], now=10.0)
    assert [r.call_id for r in t.ready(10.0)] == ["c1"]


def test_a_start_joins_within_grace_by_record_time_and_starts_a_new_recording_after() -> None:
    # close at 100 ms + 500 ms grace: a start stamped 600 ms joins, 601 ms does not.
    t = tracker()
    feed(t, [start("s1", 0), close("s1", 100), start("s2", 600), close("s2", 700)], now=1.0)
    [rec] = t.ready(2.0)
    assert rec.known_streams == {"s1", "s2"}

    t = tracker()
    feed(t, [start("s1", 0), close("s1", 100), start("s2", 601), close("s2", 700)], now=1.0)
    recs = t.ready(2.0)
    assert [r.known_streams for r in recs] == [{"s1"}]
    t.done(recs[0])
    assert [r.known_streams for r in t.ready(2.0)] == [{"s2"}]


def test_parts_of_one_call_are_handed_over_in_order() -> None:
    t = tracker()
    feed(t, [start("s1", 0), close("s1", 100), start("s2", 5000), close("s2", 5100)], now=1.0)
    [first] = t.ready(2.0)
    assert first.known_streams == {"s1"}
    assert t.ready(3.0) == [], "part 1 waits until part 0 is durable"
    t.done(first)
    [second] = t.ready(3.0)
    assert second.known_streams == {"s2"}


def test_commits_never_pass_a_recording_that_is_not_durable() -> None:
    t = tracker()
    feed(t, [start("a", 0, "A"), chunk("a", 1, 20, "A")], first_offset=10, now=99.0)
    feed(t, [start("b", 30, "B"), close("b", 40, "B")], first_offset=12, now=99.0)
    feed(t, [start("z", 50, "Z")], partition=1, first_offset=7, now=99.0)
    assert t.safe_offsets() == {0: 10, 1: 7}
    [b] = t.ready(100.0)
    assert b.call_id == "B"
    assert t.safe_offsets() == {0: 10, 1: 7}, "handed over is not durable"
    t.done(b)
    feed(t, [close("a", 60, "A")], first_offset=14, now=100.0)
    [a] = t.ready(101.0)
    t.done(a)
    assert t.safe_offsets() == {0: 15, 1: 7}


def test_an_open_recording_with_no_record_for_the_idle_timeout_is_over_and_idle() -> None:
    t = tracker(idle_s=5)
    feed(t, [start("s1", 0), chunk("s1", 1, 20)], now=100.0)
    assert t.ready(104.9) == []
    [rec] = t.ready(105.0)
    assert rec.idle


def test_idle_by_record_time_when_the_partition_moves_on() -> None:
    t = tracker(idle_s=5)
    feed(t, [start("s1", 0), start("x", 5001, call="other")], now=100.0)
    [rec] = t.ready(100.0)
    assert rec.call_id == "c1" and rec.idle


def test_records_for_a_recording_being_archived_are_late() -> None:
    t = tracker()
    feed(t, [start("s1", 0), close("s1", 100)], now=1.0)
    [rec] = t.ready(2.0)
    feed(t, [chunk("s1", 9, 120)], first_offset=2, now=2.0)
    assert t.late == 1
    assert isinstance(rec.assembler, Collected) and len(rec.assembler.records) == 2


def test_a_chunk_whose_start_was_not_seen_opens_the_stream() -> None:
    t = tracker()
    feed(t, [chunk("s1", 2, 40), start("s1", 0), close("s1", 100)], now=1.0)
    [rec] = t.ready(2.0)
    assert isinstance(rec.assembler, Collected)
    assert [type(r).__name__ for r in rec.assembler.records] == [
        "MediaChunk", "StreamStarted", "StreamClosed"
    ]
    assert rec.first_offset == 0


def test_revoked_partitions_are_forgotten() -> None:
    t = tracker()
    feed(t, [start("a", 0, "A")], partition=0)
    feed(t, [start("b", 0, "B")], partition=1)
    [dropped] = t.forget_partitions({1})
    assert dropped.call_id == "B"
    assert t.safe_offsets() == {0: 0} and t.open_count == 1


def test_time_spent_paused_does_not_count_as_idleness() -> None:
    t = tracker(idle_s=5)
    feed(t, [start("s1", 0), chunk("s1", 1, 20)], now=100.0)
    # Archive down, partitions paused from 101 to 130: on resume the idle clock restarts.
    t.restart_idle_clocks(130.0)
    assert t.ready(134.0) == []
    [rec] = t.ready(135.0)
    assert rec.idle
