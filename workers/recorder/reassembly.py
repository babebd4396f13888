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

from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

from schemas import envelope
from schemas.codecs import Codec, codec_by_id
from schemas.custody import (
    StreamCustody,
    TimelineEntry,
)
from schemas.errors import UnknownCodecError
from schemas.wavix import Track
from workers.recorder.errors import FinalizedError, ReassemblyError, WrongCallError
from workers.recorder.spool import (
    DEFAULT_MAX_DURATION_MS,
    DEFAULT_WINDOW_MS,
    ChunkSpool,
)
from workers.recorder.streams import (
    MAX_MARKS,
    TRACK_ORDER,
    Clock,
    StreamState,
    align,
    earlier,
    incomplete_reasons,
    recording_codec,
    stream_custody,
    stream_tracks,
    timeline,
)
from workers.recorder.tracks import TrackResult, TrackSource, assemble_track, bytes_ms


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
    """Marks of the streams placed in the recording's time (:func:`timeline`)."""

    @property
    def track_paths(self) -> list[Path]:
        return [t.path for t in self.tracks]

    @property
    def track_lengths(self) -> list[int]:
        return [t.length for t in self.tracks]


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
        self._streams: dict[str, StreamState] = {}
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
        st.starts[record.connection_id] = earlier(old, record)

    def add_close(self, record: envelope.StreamClosed) -> None:
        st = self._stream(record.call_id, record.stream_id)
        old = st.closes.get(record.connection_id)
        st.closes[record.connection_id] = earlier(old, record)

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
        spool.add_many((record,))
        st.end_ms = max(st.end_ms, record.timestamp_ms + bytes_ms(spool.codec, len(record.payload)))

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
        by_track: dict[Track, list[envelope.MediaFrame]] = {}
        for f in frames:
            items = by_track.get(f.track)
            if items is None:
                by_track[f.track] = [f]
            else:
                items.append(f)
        for track, items in by_track.items():
            spool = self._spool(st, track, record.codec)
            if spool is None:
                st.rejected += len(items)
            else:
                spool.add_many(items)
                per_s = spool.codec.sample_rate * spool.codec.sample_width
                end = max(f.timestamp_ms + len(f.payload) * 1000 // per_s for f in items)
                st.end_ms = max(st.end_ms, end)

    def _spool(self, st: StreamState, track: Track, codec_id: str) -> ChunkSpool | None:
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
        clock, start_ns, offsets = align(streams)
        self._spans = {st.stream_id: (offsets[st.stream_id], offsets[st.stream_id] + st.end_ms)
                       for st in streams}
        order = sorted(streams, key=lambda s: (not s.starts, offsets[s.stream_id], s.stream_id))
        rank = {st.stream_id: i for i, st in enumerate(order)}
        codec = recording_codec(order)
        excluded: dict[str, int] = {}
        tracks: list[TrackResult] = []
        for track in stream_tracks(order):
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
            stream_custody(st, offsets[st.stream_id], excluded.get(st.stream_id, 0)) for st in order
        ]
        cut = cut_reason if timed_out else None
        reasons = incomplete_reasons(order, custody, tracks, codec, cut, self.max_duration_ms)
        self._result = RecordingResult(
            call_id=self.call_id,
            codec=codec,
            start_ns=start_ns,
            clock=clock,
            duration_ms=bytes_ms(codec, max((t.length for t in tracks), default=0)),
            tracks=tuple(tracks),
            streams=tuple(custody),
            complete=not reasons,
            reason="; ".join(reasons),
            timeline=tuple(timeline(order, clock, offsets)),
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

    def _stream(self, call_id: str, stream_id: str) -> StreamState:
        if call_id != self.call_id:
            raise WrongCallError(f"record of call {call_id!r} given to call {self.call_id!r}")
        if self._result is not None:
            raise FinalizedError(f"call {self.call_id!r} is already finalized")
        st = self._streams.get(stream_id)
        if st is None:
            st = self._streams[stream_id] = StreamState(stream_id, len(self._streams))
        return st


