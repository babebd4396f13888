"""CPU and memory of processes, and of the whole machine, read from ``/proc``.

- :func:`proc_cpu_s`, :func:`proc_mem_kib`: one process (``/proc/PID/stat``
  utime + stime; ``VmRSS`` and ``VmHWM`` of ``/proc/PID/status``);
- :func:`system_busy_s`: every core of the machine (``/proc/stat``);
- :class:`CpuWindow`: what a stage's processes used, and what everything else on
  a shared machine used meanwhile.
"""

from __future__ import annotations

import os
import re
import resource
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of ``pid`` in KiB; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values: dict[str, str] = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M))
    if "VmRSS" not in values:
        return None
    rss = int(values["VmRSS"])
    return rss, int(values.get("VmHWM") or rss)


def proc_rss_kib(pid: int) -> int:
    """VmRSS of a live ``pid`` in KiB."""
    mem = proc_mem_kib(pid)
    if mem is None:
        raise RuntimeError(f"no VmRSS for {pid}")
    return mem[0]


def system_busy_s() -> float:
    """CPU seconds the whole machine spent not idle (all cores, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def self_cpu_s() -> float:
    """CPU seconds of this process (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuWindow:
    """CPU used by the processes of a stage, and by everything else on the machine.

    ``other_pct`` (CPU % of one core used by processes that are not ours) tells how
    far another workload on a shared machine may have moved the figures.
    """

    def __init__(self, *pids: int | None) -> None:
        self.pids = pids
        self.wall0 = time.monotonic()
        self.sys0 = system_busy_s()
        self.cpu0 = [self._cpu(p) for p in pids]
        self.mine0 = self._mine()

    @staticmethod
    def _cpu(pid: int | None) -> float:
        return (proc_cpu_s(pid) or 0.0) if pid is not None else 0.0

    @staticmethod
    def _mine() -> float:
        """This process and its reaped children (the load generator)."""
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def close(self) -> tuple[list[float], float, float]:
        """(CPU seconds of each pid, CPU % of other processes, seconds) since opened."""
        used = [self._cpu(p) - c for p, c in zip(self.pids, self.cpu0, strict=True)]
        wall = time.monotonic() - self.wall0
        other = system_busy_s() - self.sys0 - sum(used) - (self._mine() - self.mine0)
        return used, 100 * max(0.0, other) / wall, wall
