"""Which recording each record belongs to, when a recording is over, and which
Kafka offsets are safe to commit. No I/O: the service feeds records in, takes
ready recordings out, and commits what :meth:`RecordingTracker.safe_offsets` says.

A *recording* is the audio of one call from its first stream's start until
every stream of it closed (plus grace). A call that starts new streams after
its recording was handed over for archiving gets a new recording: a new part.

Decisions depend on the records, never on when they are read, so that a replay
after a crash takes the same decisions and writes the same bytes:

- a ``start`` joins the call's current recording if that recording has an open
  stream, or its last stream closed at most ``grace_ms`` earlier *by the records'
  own clocks* (``received_ns``); otherwise it begins a new recording;
- a recording is ready once all its streams are closed and either a later record
  of its partition is stamped more than ``grace_ms`` after the last close, or
  (quiet partition) ``grace_ms`` passed on our clock since we read that close;
- a recording with open streams and no record for ``idle_timeout_s`` is ready too,
  marked incomplete: the ingest pod that held its streams vanished.

Call lifecycle records of the control plane (``CallLifecycle``, docs/control.md) refine
this: ``answered`` opens the recording with the call's metadata before its first stream;
``paused`` keeps it open however long its streams stay closed (the pause is silence),
until the next stream (started on ``resume``) joins it; ``completed`` ends it as soon as its streams
are closed, without the grace period (or after ``COMPLETED_WAIT_S`` when a stream's
close never comes). A recording that never got a stream is dropped, not archived.

Commit rule (docs/architecture.md, "Guarantees"): a partition's committed offset is the lowest first
offset of any recording of that partition not yet durable in the archive, or
the next offset to read when there is none. A crash therefore replays every
recording that was not archived, from its first record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, assert_never

from schemas import envelope

log = logging.getLogger(__name__)

COMPLETED_WAIT_S = 5.0
"""After the call's ``completed``, how long streams still open may take to close."""
MAX_PAUSE_S = 3600.0
"""A pause longer than this (no resume, no completed) no longer holds the recording open."""


class Assembler(Protocol):
    """What the tracker needs from a recording's reassembler (workers.recorder.reassembly)."""

    def add_start(self, record: envelope.StreamStarted) -> None: ...

    def add_chunk(self, record: envelope.MediaChunk) -> None: ...

    def add_batch(self, record: envelope.MediaBatch) -> None: ...

    def add_close(self, record: envelope.StreamClosed) -> None: ...

    def add_mark(self, record: envelope.MarkReceived) -> None: ...

    def discard(self) -> None:
        """Delete spilled files without archiving (partition revoked)."""


@dataclass(eq=False)
class Recording:
    """One recording being assembled, and what the tracker knows about it."""

    call_id: str
    partition: int
    first_offset: int
    """Offset of its first record: commits never pass it until the recording is durable."""
    assembler: Assembler
    known_streams: set[str] = field(default_factory=set)
    open_streams: set[str] = field(default_factory=set)
    closed_at_ns: int | None = None
    """Record time of the close that left no stream open."""
    closed_seen: float | None = None
    """Our monotonic clock when we read that close."""
    last_record_ns: int = 0
    last_seen: float = 0.0
    idle: bool = False
    """Finalized without every stream closed: incomplete."""
    cut_reason: str = "idle timeout"
    """Why the recording was ended without its close records."""
    handed_over: bool = False
    """Given to the archiver; records for it that still come are late."""
    answered: envelope.CallLifecycle | None = None
    """The control plane's ``answered`` record: the call's metadata."""
    completed: envelope.CallLifecycle | None = None
    """The control plane's ``completed`` record: the call is over."""
    completed_seen: float | None = None
    paused: bool = False
    paused_seen: float = 0.0
    pauses: list[envelope.CallLifecycle] = field(default_factory=list)
    """``paused`` records, in log order: each names the stream it stopped."""

    @property
    def all_closed(self) -> bool:
        return bool(self.known_streams) and not self.open_streams


class RecordingTracker:
    """Routes records to recordings; see the module docstring for the rules."""

    def __init__(
        self,
        make_assembler: Callable[[str], Assembler],
        *,
        grace_ms: int,
        idle_timeout_s: float,
    ) -> None:
        self._make_assembler = make_assembler
        self.grace_ns = grace_ms * 1_000_000
        self.grace_s = grace_ms / 1000
        self.idle_timeout_s = idle_timeout_s
        self._calls: dict[str, list[Recording]] = {}
        """call_id -> its recordings not yet durable, oldest first."""
        self._next_offset: dict[int, int] = {}
        """partition -> the offset after the last record read."""
        self._watermark_ns: dict[int, int] = {}
        """partition -> the latest record time seen in it."""
        self.late = 0

    # -- input ---------------------------------------------------------------------------

    def add(self, partition: int, offset: int, record: envelope.Record, now: float) -> None:
        """Take one record of ``callrec.media`` read at ``offset``; ``now`` is monotonic."""
        self._next_offset[partition] = offset + 1
        if isinstance(record, envelope.RecordingFinished | envelope.CallEventReceived
                      | envelope.ControlState):
            return  # not a media-topic record; ignore
        stamp = record.received_ns
        if stamp > self._watermark_ns.get(partition, 0):
            self._watermark_ns[partition] = stamp
        match record:
            case envelope.MediaChunk():
                rec = self._recording_of(record.stream_id, record, partition, offset)
                if rec is not None:
                    rec.assembler.add_chunk(record)
            case envelope.MediaBatch():
                rec = self._recording_of(record.stream_id, record, partition, offset)
                if rec is not None:
                    rec.assembler.add_batch(record)
            case envelope.StreamStarted():
                rec = self._recording_for_start(record, partition, offset)
                rec.open_streams.add(record.stream_id)
                rec.assembler.add_start(record)
            case envelope.StreamClosed():
                rec = self._recording_of(record.stream_id, record, partition, offset)
                if rec is not None:
                    rec.assembler.add_close(record)
                    rec.open_streams.discard(record.stream_id)
                    if rec.all_closed:
                        rec.closed_at_ns = max(rec.closed_at_ns or 0, record.received_ns)
                        rec.closed_seen = now
            case envelope.MarkReceived():
                rec = self._recording_of(record.stream_id, record, partition, offset)
                if rec is not None:
                    rec.assembler.add_mark(record)
            case envelope.CallLifecycle():
                rec = self._lifecycle(record, partition, offset, now)
            case _:
                assert_never(record)
        if rec is not None:
            rec.last_record_ns = max(rec.last_record_ns, stamp)
            rec.last_seen = now

    def add_nothing(self, partition: int, offset: int) -> None:
        """A record was read and skipped (undecodable): the position still moves on."""
        self._next_offset[partition] = offset + 1

    def next_offset(self, partition: int) -> int:
        """The offset after the last record read from ``partition``."""
        return self._next_offset.get(partition, 0)

    def _current(self, call_id: str) -> Recording | None:
        recordings = self._calls.get(call_id)
        if recordings and not recordings[-1].handed_over:
            return recordings[-1]
        return None

    def _new(self, call_id: str, partition: int, offset: int) -> Recording:
        rec = Recording(call_id, partition, offset, self._make_assembler(call_id))
        self._calls.setdefault(call_id, []).append(rec)
        return rec

    def _lifecycle(self, record: envelope.CallLifecycle, partition: int, offset: int,
                   now: float) -> Recording | None:
        rec = self._current(record.call_id)
        if record.event == "answered":
            if rec is None or rec.completed is not None:
                rec = self._new(record.call_id, partition, offset)
            rec.answered = rec.answered or record
            return rec
        if rec is None:
            return None  # nothing being recorded: nothing to pause, resume or end
        if record.event == "paused":
            rec.paused, rec.paused_seen = True, now
            rec.pauses.append(record)
        elif record.event == "resumed":
            # Stays paused (open) until the resumed stream starts and joins it.
            rec.paused_seen = now
        elif record.event == "completed":
            rec.completed, rec.completed_seen, rec.paused = record, now, False
        else:
            assert_never(record.event)
        return rec

    def _recording_for_start(
        self, start: envelope.StreamStarted, partition: int, offset: int
    ) -> Recording:
        rec = self._current(start.call_id)
        joins = rec is not None and (
            not rec.all_closed
            or rec.paused
            or start.stream_id in rec.known_streams
            or (
                rec.closed_at_ns is not None
                and start.received_ns <= rec.closed_at_ns + self.grace_ns
            )
        )
        if rec is None or not joins:
            rec = self._new(start.call_id, partition, offset)
        rec.paused = False
        rec.known_streams.add(start.stream_id)
        rec.closed_at_ns = rec.closed_seen = None
        return rec

    def _recording_of(
        self, stream_id: str, record: envelope.Record, partition: int, offset: int
    ) -> Recording | None:
        """The recording a chunk, close or mark belongs to; None when it came too late."""
        call_id = record.call_id
        for rec in reversed(self._calls.get(call_id, [])):
            if stream_id in rec.known_streams:
                if rec.handed_over:
                    self.late += 1
                    return None
                return rec
        # A stream whose start we have not seen (its batch was re-sent after later ones,
        # or it precedes our committed offset): it joins the current recording.
        rec = self._current(call_id) or self._new(call_id, partition, offset)
        rec.known_streams.add(stream_id)
        if not isinstance(record, envelope.StreamClosed):
            rec.open_streams.add(stream_id)
        return rec

    # -- output --------------------------------------------------------------------------

    def ready(self, now: float) -> list[Recording]:
        """Recordings to archive now, oldest first per call; each is returned once."""
        found = []
        for recordings in self._calls.values():
            # Only a call's oldest recording not yet durable may go: parts are numbered in
            # the archive, so part 1 must wait until part 0's manifest exists.
            rec = recordings[0]
            if not rec.handed_over and self._is_over(rec, now):
                rec.handed_over = True
                found.append(rec)
        return found

    def _is_over(self, rec: Recording, now: float) -> bool:
        watermark = self._watermark_ns.get(rec.partition, 0)
        if rec.completed is not None and rec.completed_seen is not None:
            if rec.all_closed or not rec.known_streams:
                return True
            if now - rec.completed_seen >= COMPLETED_WAIT_S:
                rec.idle, rec.cut_reason = True, "call completed, stream close missing"
                return True
            return False
        if rec.paused:
            return now - rec.paused_seen >= MAX_PAUSE_S
        if not rec.known_streams:
            # Answered, no stream yet: ends (unarchived) after the idle timeout.
            return now - rec.last_seen >= self.idle_timeout_s
        if rec.all_closed and rec.closed_at_ns is not None and rec.closed_seen is not None:
            return (
                watermark > rec.closed_at_ns + self.grace_ns
                or now - rec.closed_seen >= self.grace_s
            )
        idle_ns = int(self.idle_timeout_s * 1e9)
        if now - rec.last_seen >= self.idle_timeout_s or watermark - rec.last_record_ns > idle_ns:
            rec.idle = True
            return True
        return False

    def cut_open(self, reason: str, before: dict[int, int]) -> int:
        """End, as incomplete, every recording with open streams that began before
        ``before[partition]`` (the log end when the process started).

        For a single-process deployment after a restart: the sockets of those
        streams died with the previous process, no close record will come.
        Returns how many recordings were cut.
        """
        cut = 0
        for recordings in self._calls.values():
            for rec in recordings:
                began_before = rec.first_offset < before.get(rec.partition, 0)
                if began_before and not rec.handed_over and not rec.all_closed:
                    rec.idle, rec.cut_reason = True, reason
                    rec.last_seen = float("-inf")
                    cut += 1
        return cut

    def restart_idle_clocks(self, now: float) -> None:
        """Our clock's idle time starts again (reading resumed after a pause): time we
        spent not reading says nothing about the calls."""
        for recordings in self._calls.values():
            for rec in recordings:
                rec.last_seen = max(rec.last_seen, now)
                if rec.closed_seen is not None:
                    rec.closed_seen = max(rec.closed_seen, now)

    def done(self, rec: Recording) -> None:
        """The recording is durable in the archive: forget it (commits may pass it)."""
        recordings = self._calls.get(rec.call_id, [])
        if rec in recordings:
            recordings.remove(rec)
        if not recordings:
            self._calls.pop(rec.call_id, None)

    def safe_offsets(self) -> dict[int, int]:
        """partition -> offset to commit: nothing before it is still needed."""
        safe = dict(self._next_offset)
        for recordings in self._calls.values():
            for rec in recordings:
                if rec.first_offset < safe.get(rec.partition, rec.first_offset + 1):
                    safe[rec.partition] = rec.first_offset
        return safe

    def forget_partitions(self, partitions: Iterable[int]) -> list[Recording]:
        """Drop all state of partitions we no longer own; returns the dropped recordings."""
        gone = set(partitions)
        dropped: list[Recording] = []
        for call_id in list(self._calls):
            keep: list[Recording] = []
            for rec in self._calls[call_id]:
                (dropped if rec.partition in gone else keep).append(rec)
            if keep:
                self._calls[call_id] = keep
            else:
                del self._calls[call_id]
        for p in gone:
            self._next_offset.pop(p, None)
            self._watermark_ns.pop(p, None)
        return dropped

    def forget_all(self) -> list[Recording]:
        """Drop every recording (shutdown); returns them so their files can be deleted."""
        partitions = set(self._next_offset)
        partitions |= {r.partition for recs in self._calls.values() for r in recs}
        return self.forget_partitions(partitions)

    @property
    def open_count(self) -> int:
        return sum(len(r) for r in self._calls.values())
