"""Reassembly of one recording's tracks: order, dedupe, fill gaps, align; bounded RAM.

Pure core of the recorder: it takes the Kafka records of one recording (any
order, duplicates, losses, several streams on several pods) and writes one raw
audio file per track, positioned from the recording start, plus the custody
and counts the manifest reports; ``infra.wav`` interleaves the tracks into
the WAV. No Kafka, no S3, no asyncio: the consumer service drives it::

    asm = RecordingAssembler(call_id, spool_dir)
    for record in records_of_the_recording:   # StreamStarted, MediaChunk/MediaBatch, ...
        asm.add(record)
    result = asm.finalize()                   # RecordingResult
    write_wav(wav_path, result.codec, result.track_paths, result.track_lengths)
    asm.discard()

Chunks go to a ``workers.recorder.spool.ChunkSpool`` per (stream, track): a reorder
buffer in RAM, sorted runs on local disk. ``finalize`` computes the stream
offsets, then :func:`assemble_track` merges a track's spools by position,
resolves conflicts and fills holes with silence into ``track-<track>.raw``.

Why per (stream, track), with the offset applied at the end: a stream's place
in the recording depends on the earliest start of *all* streams, and a start
record may arrive after other streams' chunks (another pod). Spools keep the
stream's own time (``timestamp_ms``); offsets are fixed at ``finalize``.

Determinism: the result is a function of the *set* of records, never of their
arrival order or of the wall clock, so a replay after a crash and any
permutation of the input give byte-identical audio. Only ``out_of_order`` and
``late`` describe arrival order, by definition. docs/reassembly.md is the
user-facing statement of the rules implemented here.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, TypeVar, assert_never

from schemas import envelope
from schemas.codecs import DEFAULT_CODEC, Codec, codec_by_id
from schemas.custody import (
    CloseEntry,
    StreamCustody,
    TimelineEntry,
    TrackCounts,
    iso_time,
    parse_iso_ns,
)
from schemas.errors import UnknownCodecError
from schemas.wavix import Track
from workers.recorder.errors import FinalizedError, ReassemblyError, WrongCallError
from workers.recorder.spool import (
    DEFAULT_MAX_DURATION_MS,
    DEFAULT_WINDOW_MS,
    ChunkSpool,
    IntervalSet,
)

TRACK_ORDER: tuple[Track, ...] = ("inbound", "outbound")
"""Channel order of the WAV: inbound = 0 (left), outbound = 1 (right)."""

_IO_BUFFER = 64 * 1024
_SILENCE_BLOCK = 64 * 1024
_PRECISE_TIME = re.compile(r"\d{2}:\d{2}:\d{2}[.,]\d{3}")
_ZONED_TIME = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")

MAX_MARKS = 10_000
"""Marks kept per stream for the manifest's timeline (a few hundred bytes each); later
ones are counted in ``StreamCustody.marks`` but not listed, so RAM stays bounded."""

Clock = Literal["event_time", "received", "none"]
"""Which clock aligned the streams: Wavix ``event_time``, ingest ``received_ns``, or none."""


@dataclass(frozen=True, slots=True)
class TrackSource:
    """One stream's contribution to a track, and where that stream sits in the recording."""

    spool: ChunkSpool
    rank: int
    """Priority of the stream in overlaps: 0 = the stream that started first."""
    offset_ms: int
    """Position of the stream's timestamp 0 in the recording."""


@dataclass(frozen=True, slots=True)
class TrackResult:
    """One assembled track: raw samples of the recording codec from the recording start."""

    track: Track
    path: Path
    length: int
    """Bytes of audio in ``path`` (whole samples)."""
    counts: TrackCounts
    overflow: int = 0
    """Chunks rejected in the merge for reaching past ``max_duration_ms`` of the recording."""


def assemble_track(
    track: Track,
    sources: list[TrackSource],
    codec: Codec,
    out_path: Path,
    *,
    max_duration_ms: int = DEFAULT_MAX_DURATION_MS,
    extra_rejected: int = 0,
) -> TrackResult:
    """Merge a track's spools into ``out_path`` by position, applying the conflict policy.

    Every record is visited once, in the order of ``(position, stream rank,
    chunk, payload)``; the policy (docs/reassembly.md) falls out of that order:
    identical records are adjacent (a duplicate is skipped); of several versions
    of one (stream, chunk) the first visited is kept; overlapping bytes belong
    to whoever was visited first, i.e. started earliest. Holes get silence.
    """
    max_bytes = codec.bytes_for_ms(max_duration_ms)
    emitted = {src.rank: IntervalSet() for src in sources}
    chunks = conflicting = rejected = overlaps = gaps = 0
    overlap_bytes = gap_bytes = lead_bytes = frontier = 0
    started = False
    prev: tuple[int, int, int, bytes] | None = None
    streams = [_positioned(src, codec) for src in sources]
    try:
        with open(out_path, "wb", buffering=_IO_BUFFER) as out:
            for rec in heapq.merge(*streams):
                if rec == prev:
                    continue  # an exact duplicate; counted when it arrived
                prev = rec
                pos, rank, chunk, payload = rec
                if not emitted[rank].add(chunk):
                    conflicting += 1
                    continue
                end = pos + len(payload)
                if end > max_bytes:
                    rejected += 1
                    continue
                chunks += 1
                if pos > frontier:
                    _write_silence(out, codec, pos - frontier)
                    if started:
                        gaps += 1
                        gap_bytes += pos - frontier
                    else:
                        lead_bytes = pos
                    frontier = pos
                started = True
                if end <= frontier:
                    overlaps += 1
                    overlap_bytes += len(payload)
                    continue
                if pos < frontier:
                    overlaps += 1
                    overlap_bytes += frontier - pos
                    out.write(memoryview(payload)[frontier - pos :])
                else:
                    out.write(payload)
                frontier = end
    finally:
        for gen in streams:
            gen.close()
    spools = [src.spool for src in sources]
    counts = TrackCounts(
        received=sum(s.received for s in spools),
        chunks=chunks,
        duplicates=sum(s.duplicates for s in spools),
        conflicting_duplicates=conflicting,
        out_of_order=sum(s.out_of_order for s in spools),
        late=sum(s.late for s in spools),
        rejected=rejected + extra_rejected + sum(s.rejected for s in spools),
        overlaps=overlaps,
        overlap_ms=_ms(codec, overlap_bytes),
        gaps=gaps,
        gap_ms=_ms(codec, gap_bytes),
        lead_ms=_ms(codec, lead_bytes),
        length_ms=_ms(codec, frontier),
        jitter_ms=round(max((s.jitter_ms for s in spools), default=0.0), 3),
    )
    return TrackResult(
        track=track, path=out_path, length=frontier, counts=counts, overflow=rejected
    )


def _positioned(src: TrackSource, codec: Codec) -> Generator[tuple[int, int, int, bytes]]:
    for ts, chunk, payload in src.spool.records():
        yield codec.bytes_for_ms(src.offset_ms + ts), src.rank, chunk, payload


def _write_silence(out: BinaryIO, codec: Codec, nbytes: int) -> None:
    block = codec.silence(min(nbytes, _SILENCE_BLOCK))
    while nbytes >= len(block):
        out.write(block)
        nbytes -= len(block)
    if nbytes:
        out.write(block[:nbytes])


def _ms(codec: Codec, nbytes: int) -> int:
    return nbytes * 1000 // (codec.sample_rate * codec.sample_width)


def event_time_ns(value: str | None) -> int | None:
    """A Wavix ``event_time`` (ISO-8601) as Unix ns; None unless it has ms precision.

    Whole seconds cannot align tracks to better than a second; the ingest pods'
    receive times (ns) are then the better clock. No zone means UTC; only
    differences between streams are used, so a consistent zone error is harmless.
    """
    if not value or not _PRECISE_TIME.search(value):
        return None
    return parse_iso_ns(value)


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """A finalized recording: per-track raw audio files plus what the manifest reports."""

    call_id: str
    codec: Codec
    """Codec of every track file (the WAV's sample format)."""
    start_ns: int
    """Recording time 0 as Unix ns: the Wavix ``event_time`` of the first stream's start
    when the streams were aligned on it and it names its zone, else when an ingest pod
    received that start (0 if no record said; then ``clock`` is ``none``)."""
    clock: Clock
    duration_ms: int
    """Length of the longest track."""
    tracks: tuple[TrackResult, ...]
    """In channel order: inbound first, outbound second."""
    streams: tuple[StreamCustody, ...]
    """Custody per stream, in overlap priority order (earliest start first)."""
    complete: bool
    reason: str
    """Empty when complete; otherwise every reason, ``; ``-separated, in a fixed order."""
    timeline: tuple[TimelineEntry, ...] = ()
    """Marks of the streams placed in the recording's time (:func:`_timeline`)."""

    @property
    def track_paths(self) -> list[Path]:
        return [t.path for t in self.tracks]

    @property
    def track_lengths(self) -> list[int]:
        return [t.length for t in self.tracks]


class _Stream:
    """What the assembler knows of one stream so far (all of it small and bounded)."""

    def __init__(self, stream_id: str, index: int) -> None:
        self.stream_id = stream_id
        self.index = index  # arrival index: names spool files, nothing else
        self.starts: dict[str, envelope.StreamStarted] = {}
        """Per connection (reconnects open new connections)."""
        self.closes: dict[str, envelope.StreamClosed] = {}
        self.spools: dict[Track, ChunkSpool] = {}
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.end_ms = 0  # the end of its latest audio, in the stream's own time
        self.chunks = 0  # media records received, whatever became of them
        self.rejected = 0  # media records with an unknown codec, or not their spool's
        self.marks = 0
        self.mark_records: set[envelope.MarkReceived] = set()
        """Distinct marks (a replayed record is the same record), up to MAX_MARKS."""

    @property
    def first_start(self) -> envelope.StreamStarted | None:
        return min(self.starts.values(), key=_record_order, default=None)

    @property
    def closed(self) -> bool:
        return bool(self.closes) and self.starts.keys() <= self.closes.keys()


class RecordingAssembler:
    """Every record of one recording in, per-track raw files and custody out.

    Feed records in any order with :meth:`add`; call :meth:`finalize` once
    (when :attr:`all_closed` plus a grace period, or on idle timeout); then
    :meth:`discard` the local files once the WAV is written. RAM is bounded
    by :attr:`buffered_bytes` (a few reorder windows per stream), never by
    call length; disk holds about twice the audio at the peak of ``finalize``.
    """

    def __init__(
        self,
        call_id: str,
        spool_dir: Path,
        *,
        window_ms: int = DEFAULT_WINDOW_MS,
        max_duration_ms: int = DEFAULT_MAX_DURATION_MS,
    ) -> None:
        self.call_id = call_id
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.window_ms = window_ms
        self.max_duration_ms = max_duration_ms
        self._streams: dict[str, _Stream] = {}
        self._result: RecordingResult | None = None
        self._failed = False
        self._spans: dict[str, tuple[int, int]] = {}

    @property
    def buffered_bytes(self) -> int:
        """Audio bytes held in RAM now, over all spools."""
        return sum(sp.buffered_bytes for st in self._streams.values() for sp in st.spools.values())

    @property
    def all_closed(self) -> bool:
        """Every connection that started has a close record (the recording may end)."""
        return bool(self._streams) and all(st.closed for st in self._streams.values())

    def add(self, record: envelope.Record) -> None:
        """Take any record of the ``callrec.media`` topic for this call."""
        match record:
            case envelope.MediaChunk():
                self.add_chunk(record)
            case envelope.MediaBatch():
                self.add_batch(record)
            case envelope.StreamStarted():
                self.add_start(record)
            case envelope.StreamClosed():
                self.add_close(record)
            case envelope.MarkReceived():
                self.add_mark(record)
            case (envelope.RecordingFinished() | envelope.CallEventReceived()
                  | envelope.CallLifecycle() | envelope.ControlState()):
                raise ReassemblyError(f"{type(record).__name__} carries no audio")
            case _:
                assert_never(record)

    def add_start(self, record: envelope.StreamStarted) -> None:
        st = self._stream(record.call_id, record.stream_id)
        old = st.starts.get(record.connection_id)
        st.starts[record.connection_id] = _earlier(old, record)

    def add_close(self, record: envelope.StreamClosed) -> None:
        st = self._stream(record.call_id, record.stream_id)
        old = st.closes.get(record.connection_id)
        st.closes[record.connection_id] = _earlier(old, record)

    def add_mark(self, record: envelope.MarkReceived) -> None:
        st = self._stream(record.call_id, record.stream_id)
        st.marks += 1
        if len(st.mark_records) < MAX_MARKS:
            st.mark_records.add(record)

    def add_chunk(self, record: envelope.MediaChunk) -> None:
        st = self._stream(record.call_id, record.stream_id)
        st.chunks += 1
        ns = record.received_ns
        st.first_ns = ns if st.first_ns is None else min(st.first_ns, ns)
        st.last_ns = ns if st.last_ns is None else max(st.last_ns, ns)
        spool = self._spool(st, record.track, record.codec)
        if spool is None:
            st.rejected += 1
            return
        spool.add(record.chunk, record.timestamp_ms, record.payload, record.received_ns)
        st.end_ms = max(st.end_ms, record.timestamp_ms + _ms(spool.codec, len(record.payload)))

    def add_batch(self, record: envelope.MediaBatch) -> None:
        """Take a batch's frames as that many ``MediaChunk`` records, in bulk.

        Per batch, not per frame: the stream and spool look-ups, the codec check and
        one write to each track's run; the result is the same as for the chunks one
        by one (tests/unit/test_reassembly.py checks it).
        """
        st = self._stream(record.call_id, record.stream_id)
        frames = record.frames
        st.chunks += len(frames)
        lo = min(f.received_ns for f in frames)
        hi = max(f.received_ns for f in frames)
        st.first_ns = lo if st.first_ns is None else min(st.first_ns, lo)
        st.last_ns = hi if st.last_ns is None else max(st.last_ns, hi)
        by_track: dict[Track, list[tuple[int, int, bytes, int | None]]] = {}
        for f in frames:
            item = (f.chunk, f.timestamp_ms, f.payload, f.received_ns)
            items = by_track.get(f.track)
            if items is None:
                by_track[f.track] = [item]
            else:
                items.append(item)
        for track, items in by_track.items():
            spool = self._spool(st, track, record.codec)
            if spool is None:
                st.rejected += len(items)
            else:
                spool.add_many(items)
                end = max(ts + _ms(spool.codec, len(payload)) for _, ts, payload, _ in items)
                st.end_ms = max(st.end_ms, end)

    def _spool(self, st: _Stream, track: Track, codec_id: str) -> ChunkSpool | None:
        """The stream's spool of ``track``, created on first use; None if ``codec_id``
        is unknown or not the spool's (the chunks are then rejected)."""
        spool = st.spools.get(track)
        if spool is None:
            try:
                codec = codec_by_id(codec_id)
            except UnknownCodecError:
                return None
            spool = ChunkSpool(
                self.spool_dir,
                f"s{st.index}-{track}",
                codec,
                window_ms=self.window_ms,
                max_duration_ms=self.max_duration_ms,
            )
            st.spools[track] = spool
        elif codec_id != spool.codec.id:
            return None
        return spool

    def finalize(
        self, *, timed_out: bool = False, cut_reason: str = "idle timeout"
    ) -> RecordingResult:
        """Align the streams, assemble every track into ``spool_dir``; idempotent.

        ``timed_out`` says the caller gave up waiting for close records, and
        ``cut_reason`` why (idle timeout, or the process restarted); they only word
        the reason of streams that never closed.
        """
        if self._result is not None:
            return self._result
        if self._failed:
            raise ReassemblyError(f"finalize of call {self.call_id!r} failed before; replay it")
        self._failed = True  # until it succeeds: spools are consumed as tracks are built
        streams = list(self._streams.values())
        clock, start_ns, offsets = _align(streams)
        self._spans = {st.stream_id: (offsets[st.stream_id], offsets[st.stream_id] + st.end_ms)
                       for st in streams}
        order = sorted(streams, key=lambda s: (not s.starts, offsets[s.stream_id], s.stream_id))
        rank = {st.stream_id: i for i, st in enumerate(order)}
        codec = _recording_codec(order)
        excluded: dict[str, int] = {}
        tracks: list[TrackResult] = []
        for track in _tracks(order):
            sources: list[TrackSource] = []
            mismatched = 0
            for st in order:
                spool = st.spools.get(track)
                if spool is None:
                    continue
                if spool.codec != codec:  # cannot share a WAV without transcoding
                    mismatched += spool.received
                    excluded[st.stream_id] = excluded.get(st.stream_id, 0) + spool.received
                    continue
                sources.append(TrackSource(spool, rank[st.stream_id], offsets[st.stream_id]))
            tracks.append(
                assemble_track(
                    track,
                    sources,
                    codec,
                    self.spool_dir / f"track-{track}.raw",
                    max_duration_ms=self.max_duration_ms,
                    extra_rejected=mismatched,
                )
            )
            for st in order:
                if track in st.spools:
                    st.spools[track].discard()  # free the disk before the next track
        custody = [
            _custody(st, offsets[st.stream_id], excluded.get(st.stream_id, 0)) for st in order
        ]
        cut = cut_reason if timed_out else None
        reasons = _reasons(order, custody, tracks, codec, cut, self.max_duration_ms)
        self._result = RecordingResult(
            call_id=self.call_id,
            codec=codec,
            start_ns=start_ns,
            clock=clock,
            duration_ms=_ms(codec, max((t.length for t in tracks), default=0)),
            tracks=tuple(tracks),
            streams=tuple(custody),
            complete=not reasons,
            reason="; ".join(reasons),
            timeline=tuple(_timeline(order, clock, offsets)),
        )
        self._failed = False
        return self._result

    def stream_spans(self) -> dict[str, tuple[int, int]]:
        """After :meth:`finalize`: stream id -> (start, end) of its audio in the recording (ms),
        from which paused intervals are derived."""
        return dict(self._spans)

    def discard(self) -> None:
        """Delete every local file of this recording (spools and track files)."""
        for st in self._streams.values():
            for spool in st.spools.values():
                spool.discard()
        for track in TRACK_ORDER:
            (self.spool_dir / f"track-{track}.raw").unlink(missing_ok=True)

    def _stream(self, call_id: str, stream_id: str) -> _Stream:
        if call_id != self.call_id:
            raise WrongCallError(f"record of call {call_id!r} given to call {self.call_id!r}")
        if self._result is not None:
            raise FinalizedError(f"call {self.call_id!r} is already finalized")
        st = self._streams.get(stream_id)
        if st is None:
            st = self._streams[stream_id] = _Stream(stream_id, len(self._streams))
        return st


def _record_order(record: envelope.StreamStarted | envelope.StreamClosed) -> tuple[int, bytes]:
    """A total order on control records, so that choosing one never depends on arrival."""
    return record.received_ns, envelope.encode(record)


_R = TypeVar("_R", envelope.StreamStarted, envelope.StreamClosed)


def _earlier(old: _R | None, new: _R) -> _R:
    """Of two control records for one connection (a replayed duplicate), the first in order."""
    return new if old is None or _record_order(new) < _record_order(old) else old


def _align(streams: list[_Stream]) -> tuple[Clock, int, dict[str, int]]:
    """Each stream's offset in the recording (ms), the clock used and the start time (ns).

    One clock for all streams, never a mix: Wavix ``event_time`` when every
    started stream has one with ms precision (one sender's clock, no network
    delay), else the ingest pods' receive times. Time 0 is the earliest start;
    a stream whose start record never arrived is placed at 0 (and the
    recording is marked incomplete).
    """
    started = [st for st in streams if st.starts]
    streams_by_id = {st.stream_id: st for st in started}
    offsets = {st.stream_id: 0 for st in streams}
    if not started:
        start_ns = min((st.first_ns for st in streams if st.first_ns is not None), default=0)
        return "none", start_ns, offsets
    received = {st.stream_id: min(r.received_ns for r in st.starts.values()) for st in started}
    events: dict[str, int | None] = {}
    for st in started:
        parsed = [t for r in st.starts.values() if (t := event_time_ns(r.event_time)) is not None]
        events[st.stream_id] = min(parsed, default=None)
    clock: Clock = "event_time" if all(t is not None for t in events.values()) else "received"
    times = received
    if clock == "event_time":
        times = {k: v for k, v in events.items() if v is not None}
    t0 = min(times.values())
    for stream_id, t in times.items():
        offsets[stream_id] = (t - t0 + 500_000) // 1_000_000
    first = min(times, key=lambda k: (times[k], k))
    # Time 0 on the aligning clock when Wavix said its zone: then the start time is the
    # sender's, the same on every run and backend for the same stream. Without a zone,
    # the pod's receive time, so a zone mistake cannot misdate the recording.
    first_event = next(iter(r.event_time for r in streams_by_id[first].starts.values()), None)
    if clock == "event_time" and first_event and _ZONED_TIME.search(first_event):
        return clock, times[first], offsets
    return clock, received[first], offsets


def _timeline(order: list[_Stream], clock: Clock, offsets: dict[str, int]) -> list[TimelineEntry]:
    """Every stream's marks placed in the recording, as its audio is: the stream's offset
    plus the mark's time since the stream's start, on the recording's clock (Wavix
    ``event_time`` when the recording is aligned on it and the mark has one; else the
    ingest pods' receive times). A function of the set of records, like the audio."""
    out: list[TimelineEntry] = []
    for st in order:
        received0 = min((r.received_ns for r in st.starts.values()), default=None)
        event0 = min((t for r in st.starts.values()
                      if (t := event_time_ns(r.event_time)) is not None), default=None)
        for mark in st.mark_records:
            at: int | None = None
            used: Clock = "received"
            mark_event = event_time_ns(mark.event_time)
            if clock == "event_time" and event0 is not None and mark_event is not None:
                at, used = offsets[st.stream_id] + _round_ms(mark_event - event0), "event_time"
            elif received0 is not None:
                at = offsets[st.stream_id] + _round_ms(mark.received_ns - received0)
            out.append(TimelineEntry(
                at_ms=at, kind="mark", stream_id=st.stream_id, name=mark.name, seq=mark.seq,
                event_time=mark.event_time, received=iso_time(mark.received_ns, 6), clock=used,
            ))
    out.sort(key=lambda e: (e.at_ms is None, e.at_ms or 0, e.stream_id, e.received, e.name,
                            e.seq or 0, e.event_time or ""))
    return out


def _round_ms(ns: int) -> int:
    return (ns + 500_000) // 1_000_000


def _recording_codec(order: list[_Stream]) -> Codec:
    """The codec of the earliest stream that names one we know; L16/24000 otherwise."""
    for st in order:
        start = st.first_start
        ids = [start.codec] if start else []
        ids += [st.spools[t].codec.id for t in TRACK_ORDER if t in st.spools]
        for codec_id in ids:
            try:
                return codec_by_id(codec_id)
            except UnknownCodecError:
                continue
    return DEFAULT_CODEC


def _tracks(order: list[_Stream]) -> list[Track]:
    """Tracks declared by the streams' channels or seen in chunks, in channel order.

    A declared track is kept even if silent, so a ``both`` stream always gives a
    stereo WAV with inbound on the left.
    """
    present: set[str] = set()
    for st in order:
        present.update(st.spools)
        for start in st.starts.values():
            if start.stream_type == "twoway":
                present.add("inbound")
            elif start.channel == "both":
                present.update(TRACK_ORDER)
            else:
                present.add(start.channel)
    return [t for t in TRACK_ORDER if t in present] or ["inbound"]


def _numbering(st: _Stream) -> tuple[str, int]:
    """How the stream numbers its chunks, and how many numbers are missing.

    A ``both`` stream may count per track or with one counter for both tracks;
    with one counter each track alone looks half lost. Two tracks whose number
    sets never coincide share a counter: gaps are then counted in the union.
    """
    sets = [st.spools[t].seen for t in TRACK_ORDER if t in st.spools and st.spools[t].seen.count]
    if len(sets) == 2 and sets[0].isdisjoint(sets[1]):
        return "shared", sets[0].union(sets[1]).missing
    return "per_track", sum(s.missing for s in sets)


def _custody(st: _Stream, offset_ms: int, excluded: int) -> StreamCustody:
    start = st.first_start
    closes = sorted(st.closes.values(), key=_record_order)
    spools = [st.spools[t] for t in TRACK_ORDER if t in st.spools]
    numbering, missing = _numbering(st)
    return StreamCustody(
        stream_id=st.stream_id,
        stream_type=start.stream_type if start else None,
        channel=start.channel if start else None,
        codec=start.codec if start else (spools[0].codec.id if spools else ""),
        tracks=[t for t in TRACK_ORDER if t in st.spools],
        event_time=start.event_time if start else None,
        start_time=iso_time(start.received_ns, 6) if start else None,
        offset_ms=offset_ms,
        ingest_pods=sorted(
            {s.ingest_pod for s in st.starts.values()} | {c.ingest_pod for c in closes}
        ),
        connection_ids=sorted(st.starts.keys() | st.closes.keys()),
        first_arrival=None if st.first_ns is None else iso_time(st.first_ns, 6),
        last_arrival=None if st.last_ns is None else iso_time(st.last_ns, 6),
        chunks=st.chunks,
        published=sum(c.chunks for c in closes) if closes else None,
        missing_chunks=missing,
        numbering=numbering,
        duplicates=sum(s.duplicates for s in spools),
        out_of_order=sum(s.out_of_order for s in spools),
        rejected=st.rejected + excluded + sum(s.rejected for s in spools),
        marks=st.marks,
        closes=[
            CloseEntry(
                reason=c.reason,
                detail=c.detail,
                ingest_pod=c.ingest_pod,
                connection_id=c.connection_id,
                time=iso_time(c.received_ns, 6),
                chunks=c.chunks,
                invalid=c.invalid,
            )
            for c in closes
        ],
    )


def _reasons(
    order: list[_Stream],
    custody: list[StreamCustody],
    tracks: list[TrackResult],
    codec: Codec,
    cut_reason: str | None,
    max_duration_ms: int,
) -> list[str]:
    """Why the recording is incomplete, in a fixed order (empty: complete)."""
    reasons: list[str] = []
    for st, cu in zip(order, custody, strict=True):
        name = f"stream {st.stream_id}"
        if not st.starts:
            reasons.append(f"{name}: start record missing")
        if st.starts.keys() - st.closes.keys() or not st.closes:
            reasons.append(f"{name}: not closed" + (f" ({cut_reason})" if cut_reason else ""))
        reasons.extend(f"{name} {c.reason}: {c.detail}" for c in cu.closes if c.reason != "stop")
        if cu.codec != codec.id:
            reasons.append(f"{name}: codec {cu.codec} differs from recording codec {codec.id}")
        if cu.published is not None and cu.chunks < cu.published:
            lost = cu.published - cu.chunks
            reasons.append(f"{name}: {lost} of {cu.published} published chunks not received")
        if cu.missing_chunks:
            reasons.append(f"{name}: gaps, {cu.missing_chunks} chunks missing")
        if cu.rejected:
            reasons.append(f"{name}: {cu.rejected} chunks rejected")
    for t in tracks:
        if t.overflow:
            reasons.append(
                f"track {t.track}: {t.overflow} chunks past {max_duration_ms} ms rejected"
            )
    if not any(t.length for t in tracks):
        reasons.append("no audio")
    return reasons
