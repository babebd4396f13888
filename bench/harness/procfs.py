"""CPU and memory of processes, and of the whole machine, read from ``/proc``.

- :func:`proc_cpu_s`, :func:`proc_mem_kib`: one process with its child processes
  (``/proc/PID/stat`` utime + stime, cutime + cstime; ``VmRSS`` and ``VmHWM`` of
  ``/proc/PID/status``);
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
    """utime + stime of ``pid`` and of its children (live ones, and reaped ones' times
    the kernel added to it) in seconds: a service's worker processes are its CPU too.
    None when ``pid`` is gone."""
    own = _stat_cpu(pid, with_reaped=True)
    if own is None:
        return None
    return own + sum(_stat_cpu(child, with_reaped=True) or 0.0 for child in descendants(pid))


def _stat_cpu(pid: int, with_reaped: bool) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def descendants(pid: int) -> list[int]:
    """Live child processes of ``pid``, their children, and so on."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            todo.extend(children)
    return found


def proc_mem_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB of ``pid`` plus its live descendants (each one's peak: an
    upper bound of the tree's); None when ``pid`` is gone."""
    own = _status_mem(pid)
    if own is None:
        return None
    rss, hwm = own
    for child in descendants(pid):
        mem = _status_mem(child)
        if mem is not None:
            rss, hwm = rss + mem[0], hwm + mem[1]
    return rss, hwm


def _status_mem(pid: int) -> tuple[int, int] | None:
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
