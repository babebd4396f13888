"""Spooling one stream's chunks of one track to local disk, in sorted runs.

Part of the recorder's pure core (see ``workers.recorder.reassembly`` for the whole).
A :class:`ChunkSpool` keeps a reorder buffer of ``window_ms`` of audio in RAM
and everything older in sorted run files, so RAM stays flat in call length
while the final merge still sees every record in one canonical order: that is
what makes the assembled audio independent of arrival order (the conflict
policy needs to know every chunk that claims a byte, not just the first one
that happened to be written).

Run file format (local, never archived)::

    repeated: int64 timestamp_ms | int64 chunk | uint32 n | n bytes payload   (little-endian)

sorted by ``(timestamp_ms, chunk, payload)``. Chunks that arrive after the
window has moved past them are buffered apart and written as extra runs; runs
are merged level by level (as in an LSM tree), ``FAN_IN`` at a time, so the
number of files and the rewrite cost stay logarithmic in the number of late chunks.

RAM per spool: ``window_bytes + late_buffer_bytes`` of payload at most, plus 16
bytes per run of consecutive chunk numbers (:class:`IntervalSet`: one run for
a loss-free stream), plus one file buffer.
"""

from __future__ import annotations

import heapq
import struct
from array import array
from bisect import bisect_right, insort
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import NamedTuple, Protocol

from schemas.codecs import Codec
from workers.recorder.errors import FinalizedError, SpoolCorruptError

DEFAULT_WINDOW_MS = 100
"""Default reorder window: chunks up to this much audio late still land in the main run.

A stream's chunks come over one WebSocket and one Kafka partition, in order; the window
only saves a late run file when a sender reorders. It was 2000 ms: at 400 calls that kept
150 MiB of audio in reorder buffers, whose cache misses cost the recorder ~15 % of its
CPU, and 500 ms still 7-9 % more than 100 (docs/benchmarks.md, "Cost per call")."""
DEFAULT_MAX_DURATION_MS = 6 * 3600 * 1000
"""Audio past this point is rejected: it bounds disk use against a bogus timestamp, and
keeps a stereo 24 kHz WAV (96 kB/s, 2 GB for 6 h) below the 4 GiB RIFF limit."""
FAN_IN = 8
"""Late runs of one level merged into one as soon as the level holds this many."""

_RECORD = struct.Struct("<qqI")
RECORD_HEADER_BYTES = _RECORD.size
_IO_BUFFER = 64 * 1024
_READ_BLOCK = 1024 * 1024

Key = tuple[int, int, bytes]
"""A spooled chunk, which is also its sort key: (timestamp_ms, chunk, payload)."""


class Frame(Protocol):
    """What the spool reads of a chunk: ``MediaChunk`` and ``MediaFrame`` records have it."""

    @property
    def chunk(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def received_ns(self) -> int | None: ...


class ContiguousRun(NamedTuple):
    """A spool whose chunks continue each other without a gap (``contiguous_run``)."""

    path: Path
    """The main run file: ``chunks`` records of ``frame_size`` payload bytes, in order."""
    timestamp_ms: int
    """Of the first chunk."""
    chunk: int
    """Number of the first chunk."""
    chunks: int
    """How many: the run file holds exactly these."""
    frame_size: int


class Chunk(NamedTuple):
    """A :class:`Frame` built from plain values (:meth:`ChunkSpool.add`)."""

    chunk: int
    timestamp_ms: int
    payload: bytes
    received_ns: int | None = None


class IntervalSet:
    """A set of integers stored as sorted, disjoint, half-open runs ``[start, end)``.

    Chunk numbers of a healthy stream form one run, so the set takes the same
    few bytes for a call of any length; each hole in the numbering costs 16.
    """

    __slots__ = ("_ends", "_starts", "count")

    def __init__(self, values: Iterable[int] = ()) -> None:
        self._starts = array("q")
        self._ends = array("q")
        self.count = 0
        """How many integers the set holds."""
        for value in values:
            self.add(value)

    def add(self, n: int) -> bool:
        """Add ``n``; return False if it was already there."""
        starts, ends = self._starts, self._ends
        if ends and n == ends[-1]:  # the next number of a healthy stream
            ends[-1] = n + 1
            self.count += 1
            return True
        i = bisect_right(starts, n) - 1
        if i >= 0 and n < ends[i]:
            return False
        joins_left = i >= 0 and ends[i] == n
        joins_right = i + 1 < len(starts) and starts[i + 1] == n + 1
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif joins_left:
            ends[i] = n + 1
        elif joins_right:
            starts[i + 1] = n
        else:
            starts.insert(i + 1, n)
            ends.insert(i + 1, n + 1)
        self.count += 1
        return True

    def __contains__(self, n: object) -> bool:
        if not isinstance(n, int):
            return False
        i = bisect_right(self._starts, n) - 1
        return i >= 0 and n < self._ends[i]

    def __len__(self) -> int:
        return self.count

    def intervals(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    @property
    def missing(self) -> int:
        """Integers absent between the smallest and the largest member."""
        return self._ends[-1] - self._starts[0] - self.count if self.count else 0

    def isdisjoint(self, other: IntervalSet) -> bool:
        a, b = list(self.intervals()), list(other.intervals())
        i = j = 0
        while i < len(a) and j < len(b):
            if a[i][0] < b[j][1] and b[j][0] < a[i][1]:
                return False
            if a[i][1] <= b[j][1]:
                i += 1
            else:
                j += 1
        return True

    def union(self, other: IntervalSet) -> IntervalSet:
        merged = IntervalSet()
        for start, end in sorted([*self.intervals(), *other.intervals()]):
            if merged._ends and start <= merged._ends[-1]:
                merged._ends[-1] = max(merged._ends[-1], end)
            else:
                merged._starts.append(start)
                merged._ends.append(end)
        merged.count = sum(e - s for s, e in merged.intervals())
        return merged


class ChunkSpool:
    """The chunks of one track of one stream, kept in sorted runs on local disk.

    ``add`` puts a chunk into an in-RAM sorted buffer (the reorder window) keyed by
    ``(timestamp_ms, chunk, payload)``; whenever it holds more than
    ``window_bytes``, its smallest record is appended to the main run, which is
    therefore sorted. The buffer is a deque kept sorted: a chunk that arrives in
    order (nearly all of them) is appended at its end in O(1). A chunk that sorts
    before the last record already written is *late*: it is buffered separately and
    written as an extra sorted run. ``records()`` merges all runs into one sorted
    stream. Nothing is resolved here (duplicates, overlaps):
    ``workers.recorder.tracks.assemble_track`` does it, and it sees every record, so
    the result does not depend on arrival order.
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        codec: Codec,
        *,
        window_ms: int = DEFAULT_WINDOW_MS,
        max_duration_ms: int = DEFAULT_MAX_DURATION_MS,
    ) -> None:
        self.codec = codec
        self.window_bytes = max(codec.bytes_for_ms(window_ms), codec.sample_width)
        """Reorder buffer size; chunks later than this (in audio) become late runs."""
        self.late_buffer_bytes = max(self.window_bytes // 2, codec.sample_width)
        self.max_duration_ms = max_duration_ms
        self.seen = IntervalSet()
        """Distinct chunk numbers received."""
        self.received = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.late = 0
        self.rejected = 0
        self.jitter_ms = 0.0
        """RFC 3550 interarrival jitter of the accepted chunks, in arrival order (ms)."""
        self._last_arrival: tuple[int, int] | None = None
        self._dir = directory
        self._name = name
        self._max_chunk = -1
        self._buffer: deque[Key] = deque()
        self._buffer_bytes = 0
        self._late: list[Key] = []
        self._late_bytes = 0
        self._last: Key | None = None
        self._main_path = directory / f"{name}.run"
        self._main = open(self._main_path, "wb", buffering=_IO_BUFFER)  # noqa: SIM115
        self._levels: list[list[Path]] = []
        self._run_seq = 0
        self._finished = False
        self._step_bytes = codec.bytes_for_ms(1) if codec.sample_rate % 1000 == 0 else 0
        """Bytes per ms when whole (every codec we know): positions are then linear in ms."""
        self._contiguous = self._step_bytes > 0
        """Every accepted chunk so far continued the previous one: next number, next
        timestamp, same size (a healthy stream). :meth:`contiguous_run` relies on it."""
        self._first: tuple[int, int] | None = None
        """(timestamp_ms, chunk) of the first accepted chunk."""
        self._frame_size = 0
        self._next: tuple[int, int] = (0, 0)
        """(timestamp_ms, chunk) the next chunk has while the stream stays contiguous."""

    @property
    def ram_limit_bytes(self) -> int:
        """Upper bound of :attr:`buffered_bytes` after any ``add``."""
        return self.window_bytes + self.late_buffer_bytes

    @property
    def buffered_bytes(self) -> int:
        """Payload bytes held in RAM right now."""
        return self._buffer_bytes + self._late_bytes

    def add(
        self, chunk: int, timestamp_ms: int, payload: bytes, received_ns: int | None = None
    ) -> bool:
        """Spool one chunk; return False if it was rejected (and counted as such).

        Rejected: negative numbers, a payload that is empty or not whole
        samples, or audio reaching past ``max_duration_ms`` of the stream.
        ``received_ns`` (when the ingest pod read it) feeds :attr:`jitter_ms`.
        """
        return self.add_many((Chunk(chunk, timestamp_ms, payload, received_ns),)) == 1

    def add_many(self, frames: Iterable[Frame]) -> int:
        """Spool ``frames`` in order, as :meth:`add` would one by one; return how many
        were accepted.

        The same decisions, counts and run bytes as that many ``add`` calls, for less
        CPU: this loop runs for every 20 ms frame of every call, so the common case (the
        next chunk of a healthy stream, in order) is spelled out inline, and the writes
        to the main run are gathered into one per call (a ``MediaBatch``).
        """
        if self._finished:
            raise FinalizedError(f"spool {self._name} is finished")
        width, max_ms = self.codec.sample_width, self.max_duration_ms
        bytes_per_ms = self.codec.bytes_per_ms
        buffer, late, window = self._buffer, self._late, self.window_bytes
        popleft, pack, step = buffer.popleft, _RECORD.pack, self._step_bytes
        seen = self.seen
        ends = seen._ends
        out: list[bytes] = []
        accepted = 0
        # The state every frame touches lives in locals for the loop (attribute reads and
        # writes were a third of its time) and is stored back however the loop ends.
        jitter, last_arrival = self.jitter_ms, self._last_arrival
        buffer_bytes, last, max_chunk = self._buffer_bytes, self._last, self._max_chunk
        try:
            for frame in frames:
                payload, timestamp_ms, chunk = frame.payload, frame.timestamp_ms, frame.chunk
                size = len(payload)
                if (
                    chunk < 0
                    or timestamp_ms < 0
                    or size == 0
                    or size % width
                    or timestamp_ms + size / bytes_per_ms > max_ms
                ):
                    self.rejected += 1
                    continue
                accepted += 1
                if self._contiguous:
                    expected = self._next
                    if (self._first is not None and timestamp_ms == expected[0]
                            and chunk == expected[1] and size == self._frame_size):
                        self._next = (timestamp_ms + size // step, chunk + 1)  # _follow's
                    else:
                        self._follow(timestamp_ms, chunk, size)
                received_ns = frame.received_ns
                if received_ns is not None:
                    # RFC 3550 6.4.1: D = (arrival difference) - (timestamp difference),
                    # and J += (|D| - J) / 16, over chunks in the order they arrived.
                    if last_arrival is not None:
                        d = (received_ns - last_arrival[1]) / 1e6 - (timestamp_ms - last_arrival[0])
                        jitter += (abs(d) - jitter) / 16
                    last_arrival = (timestamp_ms, received_ns)
                if ends and chunk == ends[-1]:  # the next number: IntervalSet.add's fast path
                    ends[-1] = chunk + 1
                    seen.count += 1
                    max_chunk = chunk
                elif seen.add(chunk):
                    if chunk < max_chunk:
                        self.out_of_order += 1
                    else:
                        max_chunk = chunk
                else:
                    self.duplicates += 1
                key = (timestamp_ms, chunk, bytes(payload))
                if last is not None and key < last:
                    self.late += 1
                    late.append(key)
                    self._late_bytes += size
                    if self._late_bytes > self.late_buffer_bytes:
                        self._flush_late()
                    continue
                if not buffer or key >= buffer[-1]:
                    buffer.append(key)
                else:
                    insort(buffer, key)
                buffer_bytes += size
                while buffer_bytes > window:  # _pop_main's work, inline
                    last = popleft()
                    popped = last[2]
                    buffer_bytes -= len(popped)
                    out.append(pack(last[0], last[1], len(popped)))
                    out.append(popped)
        finally:
            self.jitter_ms, self._last_arrival = jitter, last_arrival
            self._buffer_bytes, self._last, self._max_chunk = buffer_bytes, last, max_chunk
            # Popped chunks are written even if a late run failed: the main run stays whole.
            self.received += accepted
            if out:
                self._main.write(b"".join(out))
        return accepted

    def _follow(self, timestamp_ms: int, chunk: int, size: int) -> None:
        """Keep :attr:`_contiguous` true only while chunks continue each other exactly."""
        if self._first is None:
            frame_ms, rest = divmod(size, self._step_bytes)
            if rest or frame_ms == 0:
                self._contiguous = False
                return
            self._first = (timestamp_ms, chunk)
            self._frame_size = size
            self._next = (timestamp_ms + frame_ms, chunk + 1)
        elif (timestamp_ms, chunk) == self._next and size == self._frame_size:
            self._next = (timestamp_ms + size // self._step_bytes, chunk + 1)
        else:
            self._contiguous = False

    def contiguous_run(self) -> ContiguousRun | None:
        """The spool as one gap-free run, if it is one (after :meth:`finish`).

        True when every accepted chunk had the next chunk number and the next
        timestamp after the previous one, the same payload size, and nothing was
        late: the main run file then holds exactly those chunks in order, each
        payload starting where the previous one ended. The track assembler copies
        such a run's payloads in bulk instead of visiting each chunk
        (workers/recorder/tracks.py); the result is the same bytes.
        """
        self.finish()
        if not self._contiguous or self._first is None or self._levels:
            return None
        return ContiguousRun(self._main_path, self._first[0], self._first[1],
                             self.received, self._frame_size)

    def finish(self) -> None:
        """Write out everything still in RAM; idempotent. ``add`` is refused afterwards."""
        if self._finished:
            return
        out: list[bytes] = []
        while self._buffer:
            self._pop_main(out)
        self._main.write(b"".join(out))
        self._flush_late()
        self._main.close()
        self._finished = True

    def records(self) -> Generator[Key]:
        """Every spooled record, sorted by ``(timestamp_ms, chunk, payload)``."""
        self.finish()
        paths = [self._main_path, *(p for level in self._levels for p in level)]
        yield from _merge_runs(paths)

    def discard(self) -> None:
        """Delete the spool's files."""
        if not self._main.closed:
            self._main.close()
        for path in [self._main_path, *(p for level in self._levels for p in level)]:
            path.unlink(missing_ok=True)
        self._levels.clear()
        self._finished = True

    def _pop_main(self, out: list[bytes]) -> None:
        """Move the smallest buffered chunk to the main run (written by the caller)."""
        key = self._buffer.popleft()
        payload = key[2]
        self._buffer_bytes -= len(payload)
        out.append(_RECORD.pack(key[0], key[1], len(payload)))
        out.append(payload)
        self._last = key

    def _flush_late(self) -> None:
        if not self._late:
            return
        self._late.sort()
        path = self._new_run_path()
        with open(path, "wb", buffering=_IO_BUFFER) as f:
            for ts, chunk, payload in self._late:
                f.write(_RECORD.pack(ts, chunk, len(payload)))
                f.write(payload)
        self._late.clear()
        self._late_bytes = 0
        self._add_run(0, path)

    def _add_run(self, level: int, path: Path) -> None:
        while len(self._levels) <= level:
            self._levels.append([])
        self._levels[level].append(path)
        if len(self._levels[level]) < FAN_IN:
            return
        merged = self._new_run_path()
        with open(merged, "wb", buffering=_IO_BUFFER) as f:
            for ts, chunk, payload in _merge_runs(self._levels[level]):
                f.write(_RECORD.pack(ts, chunk, len(payload)))
                f.write(payload)
        for old in self._levels[level]:
            old.unlink()
        self._levels[level] = []
        self._add_run(level + 1, merged)

    def _new_run_path(self) -> Path:
        self._run_seq += 1
        return self._dir / f"{self._name}.late{self._run_seq}.run"


def _read_run(path: Path) -> Generator[Key]:
    """The records of one run file, in file order.

    Read in blocks of ``_READ_BLOCK`` and cut with ``unpack_from``: two ``read`` calls
    per record (header, payload) cost more than the rest of the final merge.
    """
    header_size = _RECORD.size
    unpack_from = _RECORD.unpack_from
    with open(path, "rb", buffering=0) as f:
        data, pos = b"", 0
        while True:
            if len(data) - pos < header_size:
                more = f.read(_READ_BLOCK)
                if not more:
                    if pos < len(data):
                        raise SpoolCorruptError(f"{path} ends inside a record header")
                    return
                data, pos = data[pos:] + more, 0
                continue
            ts, chunk, size = unpack_from(data, pos)
            end = pos + header_size + size
            if end > len(data):
                more = f.read(max(_READ_BLOCK, end - len(data)))
                if not more:
                    raise SpoolCorruptError(f"{path} ends inside a record payload")
                data, pos = data[pos:] + more, 0
                continue
            yield ts, chunk, data[pos + header_size : end]
            pos = end


def _merge_runs(paths: list[Path]) -> Generator[Key]:
    with ExitStack() as stack:
        readers = [stack.enter_context(closing(_read_run(p))) for p in paths]
        yield from heapq.merge(*readers)
