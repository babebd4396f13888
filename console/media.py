"""Audio over HTTP: Range requests answered from the store, and waveform peaks.

``Range: bytes=a-b`` (one range; browsers send nothing else for media) is
answered ``206`` with ``Content-Range`` from ``ObjectStore.get_range``: only
those bytes are read, from a local file or as an S3 ranged GET, so seeking in
an hour-long call costs one small read. A range that starts past the end is
``416``; a request without Range gets the whole object, streamed in blocks.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

from console.errors import BadRequest, RangeNotSatisfiable
from infra.peaks import decode_peaks, peaks_bytes, wav_peaks
from infra.store import ObjectNotFoundError, ObjectStore
from schemas.codecs import codec_by_id
from schemas.layout import peaks_key, wav_key
from schemas.manifest import Manifest

MAX_RANGE_BYTES = 4 * 1024 * 1024
"""Largest slice one 206 carries: an open-ended ``bytes=N-`` is cut here (the browser
asks again), so no request reads a whole hour-long WAV into memory."""

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str, size: int) -> tuple[int, int]:
    """``[start, end)`` of a single ``bytes=`` range over an object of ``size`` bytes."""
    match = _RANGE.fullmatch(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        raise BadRequest(f"unsupported Range {header[:60]!r}: one bytes= range only")
    first, last = match.groups()
    if first == "":  # suffix: the last N bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable("empty suffix range")
        start, end = max(0, size - length), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
        if start >= size or end <= start:
            raise RangeNotSatisfiable(f"range starts at {start}, object has {size} bytes")
    return start, min(end, start + MAX_RANGE_BYTES)


class PeaksSource:
    """The peaks of a recording: the stored file, or computed from the WAV and cached.

    The console's credentials may not write recordings/ (docs/console.md), so peaks
    computed for an older recording stay in this process (an LRU of ``capacity``).
    """

    def __init__(self, store: ObjectStore, capacity: int) -> None:
        self.store = store
        self.capacity = capacity
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, manifest: Manifest) -> bytes:
        rec_id = manifest.recording_id
        try:
            return self.store.get_bytes(peaks_key(rec_id))
        except ObjectNotFoundError:
            pass
        with self._lock:
            if rec_id in self._cache:
                self._cache.move_to_end(rec_id)
                return self._cache[rec_id]
        data = peaks_bytes(
            wav_peaks(
                self.store.iter_bytes(wav_key(rec_id)), codec_by_id(manifest.codec), manifest.tracks
            )
        )
        decode_peaks(data)  # what is served must parse
        with self._lock:
            if self.capacity:
                self._cache[rec_id] = data
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        return data
