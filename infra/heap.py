"""Keeping freed heap memory in the process instead of handing it back at once (glibc).

Ingest and the recorder allocate and free large buffers all the time: aiokafka builds each
produce request by joining a partition's batch bytes two or three times over, a fetch
response arrives as one block of up to megabytes, an archive reads megabyte WAV blocks.
glibc serves a block above its mmap threshold with a fresh ``mmap`` and gives the top of
the heap back to the kernel (``brk``) once a little of it is free, so the next such
buffer takes the memory again: one page fault per 4 KiB it touches. A profile of
ingest's Kafka path had 40 % of its samples in the ``memcpy`` that faults those pages
in, and 4 % in ``brk``.

:func:`keep_freed_heap` sets, with ``mallopt(3)`` and from the service's settings (as
the ``MALLOC_*_`` environment variables would): ``M_MMAP_THRESHOLD``, the size from
which a block gets its own mapping; ``M_TRIM_THRESHOLD``, the free memory at the top of
a heap kept before any is given back; ``M_TOP_PAD``, the extra memory taken with each
growth. The cost is resident memory that stays with the process after a burst: up to
the trim threshold per malloc arena (the main thread's, and one per worker thread that
allocates). Measured in docs/benchmarks.md ("Cost per call", fifth pass).

On a C library without ``mallopt`` (musl) nothing is changed; that is logged once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter numbers, from glibc's ``malloc.h``."""
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024
"""The largest mmap threshold glibc accepts on 64-bit (``HEAP_MAX_SIZE / 2``)."""


def keep_freed_heap(trim_threshold_bytes: int, top_pad_bytes: int,
                    mmap_threshold_bytes: int) -> bool:
    """Set glibc's trim threshold, top pad and mmap threshold; return True when all
    three were applied.

    ``trim_threshold_bytes`` 0 changes nothing (glibc's own, adaptive, thresholds stay,
    as do any ``MALLOC_*_`` variables of the environment). The mmap threshold is capped
    at :data:`MAX_MMAP_THRESHOLD`.
    """
    if trim_threshold_bytes <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("no mallopt in this C library: heap trimming left as it is")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = ((M_TRIM_THRESHOLD, min(trim_threshold_bytes, 2**31 - 1)),
                (M_TOP_PAD, min(max(top_pad_bytes, 0), 2**31 - 1)),
                (M_MMAP_THRESHOLD, min(max(mmap_threshold_bytes, 0), MAX_MMAP_THRESHOLD)))
    ok = all([bool(mallopt(param, value)) for param, value in settings])
    if not ok:
        log.warning("mallopt refused the heap settings: heap trimming left as it is")
    return ok
