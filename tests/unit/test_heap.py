"""Heap tuning (infra/heap.py): freed memory stays in the process for the next buffer.

Each case runs in its own interpreter: ``mallopt`` changes the whole process, and the
point is what that process's resident memory does after a burst of large buffers.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from infra.heap import keep_freed_heap

ROOT = Path(__file__).parents[2]

BURST = """
import json, os, sys
from infra.heap import keep_freed_heap
applied = keep_freed_heap(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
page = os.sysconf("SC_PAGE_SIZE")
statm = os.open("/proc/self/statm", os.O_RDONLY)
def rss():
    return int(os.pread(statm, 200, 0).split()[1]) * page
before = rss()
# 24 MiB in 100 kB buffers (below glibc's mmap threshold: they come from the heap),
# freed newest first so the free space gathers at the top of the heap.
blocks = [None] * 240
for i in range(240):
    blocks[i] = bytearray(100_000)
peak = rss()
for i in reversed(range(240)):
    blocks[i] = None
print(json.dumps({"applied": applied, "before": before, "peak": peak, "after": rss()}))
"""


def _burst(trim: int, pad: int, mmap: int) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", BURST, str(trim), str(pad), str(mmap)], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=60)
    result: dict[str, int] = json.loads(out.stdout)
    return result


def test_zero_leaves_glibc_alone() -> None:
    assert keep_freed_heap(0, 16 * 1024 * 1024, 32 * 1024 * 1024) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_buffers_stay_resident_only_when_tuned() -> None:
    mib = 1024 * 1024
    default = _burst(0, 0, 0)
    tuned = _burst(64 * mib, 16 * mib, 32 * mib)
    assert not default["applied"] and tuned["applied"]
    for run in (default, tuned):
        assert run["peak"] - run["before"] >= 20 * mib  # the burst was resident
    # glibc's own threshold hands the freed top of the heap back at once...
    assert default["after"] - default["before"] < 4 * mib
    # ...tuned, it stays for the next burst (and is bounded by the trim threshold).
    assert tuned["after"] - tuned["before"] >= 20 * mib
    assert tuned["after"] - tuned["before"] <= 64 * mib + 16 * mib
