"""One track's audio from its streams' spools: merged by position, holes filled with silence.

:func:`assemble_track` is the last step of reassembly (workers/recorder/reassembly.py):
each stream's chunks, already ordered and deduplicated by its spool, are placed at
the stream's offset in the recording; where two chunks claim the same samples the
earlier-starting one wins, and gaps become the codec's silence (docs/reassembly.md).
"""

from __future__ import annotations

import heapq
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from schemas.codecs import Codec
from schemas.custody import (
    TrackCounts,
)
from schemas.wavix import Track
from workers.recorder.errors import SpoolCorruptError
from workers.recorder.spool import (
    DEFAULT_MAX_DURATION_MS,
    RECORD_HEADER_BYTES,
    ChunkSpool,
    ContiguousRun,
    IntervalSet,
)

_IO_BUFFER = 64 * 1024
_SILENCE_BLOCK = 64 * 1024
_COPY_BLOCK = 1024 * 1024

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
    bulk: bool = True,
) -> TrackResult:
    """Merge a track's spools into ``out_path`` by position, applying the conflict policy.

    A track of one stream whose chunks continue each other without a gap (a healthy
    call: ``ChunkSpool.contiguous_run``) is copied in bulk by :func:`_assemble_run`,
    with the bytes and counts the general merge below gives (``bulk=False`` forces
    the merge; tests/unit/test_tracks_bulk.py compares them).

    Every record is visited once, in the order of ``(position, stream rank,
    chunk, payload)``; the policy (docs/reassembly.md) falls out of that order:
    identical records are adjacent (a duplicate is skipped); of several versions
    of one (stream, chunk) the first visited is kept; overlapping bytes belong
    to whoever was visited first, i.e. started earliest. Holes get silence.
    """
    max_bytes = codec.bytes_for_ms(max_duration_ms)
    if bulk and len(sources) == 1:
        run = sources[0].spool.contiguous_run()
        if run is not None:
            return _assemble_run(track, sources[0], run, codec, out_path, max_bytes,
                                 extra_rejected)
    emitted = {src.rank: IntervalSet() for src in sources}
    chunks = conflicting = rejected = overlaps = gaps = 0
    overlap_bytes = gap_bytes = lead_bytes = frontier = 0
    started = False
    prev: tuple[int, int, int, bytes] | None = None
    streams = [_positioned(src, codec) for src in sources]
    # One stream per track is the common case: its records need no merge.
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams)
    try:
        with open(out_path, "wb", buffering=_IO_BUFFER) as out:
            for rec in merged:
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
    return _result(track, out_path, codec, spools, chunks=chunks, conflicting=conflicting,
                   rejected=rejected, extra_rejected=extra_rejected, overlaps=overlaps,
                   overlap_bytes=overlap_bytes, gaps=gaps, gap_bytes=gap_bytes,
                   lead_bytes=lead_bytes, frontier=frontier)


def _assemble_run(track: Track, src: TrackSource, run: ContiguousRun, codec: Codec,
                  out_path: Path, max_bytes: int, extra_rejected: int) -> TrackResult:
    """The general merge's result for one gap-free run, from bulk copies.

    The run's chunks sit end to end from ``pos0``: no duplicates, overlaps or gaps,
    so the merge would write ``pos0`` bytes of silence (the lead) and then every
    payload that ends within ``max_bytes``; the rest it rejects, in order.
    """
    pos0 = codec.bytes_for_ms(src.offset_ms + run.timestamp_ms)
    size = run.frame_size
    fits = max(0, min(run.chunks, (max_bytes - pos0) // size)) if max_bytes >= pos0 else 0
    record = RECORD_HEADER_BYTES + size
    per_block = max(1, _COPY_BLOCK // record)
    with open(run.path, "rb", buffering=0) as runs, open(out_path, "wb") as out:
        if fits and pos0:
            _write_silence(out, codec, pos0)
        left = fits
        while left:
            n = min(left, per_block)
            data = runs.read(n * record)
            if len(data) < n * record:
                raise SpoolCorruptError(f"{run.path} holds fewer than {run.chunks} chunks")
            records = np.frombuffer(data, np.uint8).reshape(n, record)
            out.write(records[:, RECORD_HEADER_BYTES:].tobytes())
            left -= n
    frontier = pos0 + fits * size if fits else 0
    return _result(track, out_path, codec, [src.spool], chunks=fits, conflicting=0,
                   rejected=run.chunks - fits, extra_rejected=extra_rejected, overlaps=0,
                   overlap_bytes=0, gaps=0, gap_bytes=0, lead_bytes=pos0 if fits else 0,
                   frontier=frontier)


def _result(track: Track, out_path: Path, codec: Codec, spools: list[ChunkSpool], *,
            chunks: int, conflicting: int, rejected: int, extra_rejected: int, overlaps: int,
            overlap_bytes: int, gaps: int, gap_bytes: int, lead_bytes: int,
            frontier: int) -> TrackResult:
    counts = TrackCounts(
        received=sum(s.received for s in spools),
        chunks=chunks,
        duplicates=sum(s.duplicates for s in spools),
        conflicting_duplicates=conflicting,
        out_of_order=sum(s.out_of_order for s in spools),
        late=sum(s.late for s in spools),
        rejected=rejected + extra_rejected + sum(s.rejected for s in spools),
        overlaps=overlaps,
        overlap_ms=bytes_ms(codec, overlap_bytes),
        gaps=gaps,
        gap_ms=bytes_ms(codec, gap_bytes),
        lead_ms=bytes_ms(codec, lead_bytes),
        length_ms=bytes_ms(codec, frontier),
        jitter_ms=round(max((s.jitter_ms for s in spools), default=0.0), 3),
    )
    return TrackResult(
        track=track, path=out_path, length=frontier, counts=counts, overflow=rejected
    )


def _positioned(src: TrackSource, codec: Codec) -> Generator[tuple[int, int, int, bytes]]:
    rate, width, offset, rank = codec.sample_rate, codec.sample_width, src.offset_ms, src.rank
    for ts, chunk, payload in src.spool.records():
        # codec.bytes_for_ms(offset + ts), inline: this runs for every chunk of a call
        yield rate * (offset + ts) // 1000 * width, rank, chunk, payload


def _write_silence(out: BinaryIO, codec: Codec, nbytes: int) -> None:
    block = codec.silence(min(nbytes, _SILENCE_BLOCK))
    while nbytes >= len(block):
        out.write(block)
        nbytes -= len(block)
    if nbytes:
        out.write(block[:nbytes])


def bytes_ms(codec: Codec, nbytes: int) -> int:
    """Milliseconds of audio in ``nbytes`` of ``codec``."""
    return nbytes * 1000 // (codec.sample_rate * codec.sample_width)


