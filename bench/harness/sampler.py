"""A thread that samples the processes of a run and the /metrics of its services.

Every ``interval`` :class:`Sampler` reads each live process's CPU (``/proc/PID/stat``
utime + stime) and RSS (``VmRSS``, ``VmHWM``), scrapes each service's ``/metrics``,
and records the series a run needs: summed recorder consumer lag, ingest
readiness, the load generators' owed frames (bench/loadharness/run.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.harness.procfs import proc_cpu_s, proc_mem_kib
from bench.harness.procs import Service
from bench.harness.promstats import Samples, metric_by_label, metric_sum


@dataclass
class ProcStats:
    """What the sampler saw of one process."""

    name: str
    kind: str
    first_seen: float = 0.0
    first_cpu: float | None = None
    last_cpu: float | None = None
    max_rss_kib: int = 0
    hwm_kib: int = 0
    marks: dict[str, float] = field(default_factory=dict)
    """CPU seconds at named moments (see :meth:`Sampler.mark`)."""


@dataclass
class Tick:
    """One sampling moment."""

    t: float
    lag: float | None
    """Summed recorder consumer lag, None when no recorder reported any partition."""
    partitions: int
    """Partitions the answering recorders reported a lag for."""
    recorders: int
    """Recorders that answered /metrics."""
    ingest_ready: dict[str, bool]
    inflight: float
    """Bytes the live ingests handed to Kafka and have not yet seen acknowledged."""
    acked: float
    """Records the live ingests have seen acknowledged by Kafka (their counters summed)."""
    consumed: float
    """Records the live recorders have read so far (their counters summed)."""
    owed: int
    """Frames the load generators owed at their last status line."""
    load_running: bool
    paused: bool
    """Some recorder has its partitions paused (archive failing)."""


class Sampler(threading.Thread):
    """Samples the run's processes every ``interval`` seconds until :meth:`close`."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name="sampler")
        self.interval = interval
        self.lock = threading.Lock()
        self.services: list[Service] = []
        self.extra: dict[int, tuple[str, str]] = {}
        """Other pids to measure (Kafka, MinIO, load generators): pid -> (name, kind)."""
        self.stats: dict[int, ProcStats] = {}
        self.last_metrics: dict[int, Samples] = {}
        """Last /metrics of each service process (counters of a killed one stay here)."""
        self.first_metrics: dict[int, Samples] = {}
        self.ticks: list[Tick] = []
        self.mark_times: dict[str, float] = {}
        self.owed: Callable[[], int] = lambda: 0
        self.load_running: Callable[[], bool] = lambda: False
        self._halt = threading.Event()

    def add(self, service: Service) -> None:
        with self.lock:
            self.services.append(service)

    def watch(self, pid: int | None, name: str, kind: str) -> None:
        if pid is not None:
            with self.lock:
                self.extra[pid] = (name, kind)

    def close(self) -> None:
        self._halt.set()
        self.join(10)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            with contextlib.suppress(Exception):  # never let a sample kill the thread
                self.sample()

    def sample(self) -> None:
        with self.lock:
            services = list(self.services)
            extra = dict(self.extra)
        targets = [(s.pid, s.name, s.kind) for s in services if s.pid is not None]
        targets += [(pid, name, kind) for pid, (name, kind) in extra.items()]
        for pid, name, kind in targets:
            assert pid is not None
            self._proc(pid, name, kind)
        lag: float | None = None
        partitions: set[str] = set()
        recorders = 0
        inflight = consumed = acked = 0.0
        paused = False
        ready: dict[str, bool] = {}
        for s in services:
            if not s.alive:
                continue
            samples = s.metrics()
            if samples is None:
                if s.kind == "ingest" and not s.draining:
                    ready[s.name] = False
                continue
            assert s.pid is not None
            self.first_metrics.setdefault(s.pid, samples)
            self.last_metrics[s.pid] = samples
            if s.kind == "recorder":
                recorders += 1
                per_partition = metric_by_label(samples, "callrec_recorder_consumer_lag_records",
                                                "partition")
                if per_partition:
                    partitions |= set(per_partition)
                    lag = (lag or 0.0) + sum(per_partition.values())
                consumed += metric_sum(samples, "callrec_recorder_records_total")
                paused |= metric_sum(samples, "callrec_recorder_paused") > 0
            else:
                if not s.draining:
                    ready[s.name] = metric_sum(samples, "callrec_ingest_ready") == 1.0
                inflight += metric_sum(samples, "callrec_ingest_inflight_bytes")
                acked += metric_sum(samples, "callrec_ingest_records_total")
        self.ticks.append(Tick(time.time(), lag, len(partitions), recorders, ready, inflight,
                               acked, consumed, self.owed(), self.load_running(), paused))

    def _proc(self, pid: int, name: str, kind: str) -> None:
        cpu = proc_cpu_s(pid)
        mem = proc_mem_kib(pid)
        with self.lock:
            st = self.stats.get(pid)
            if st is None:
                st = self.stats[pid] = ProcStats(name, kind, first_seen=time.time())
            if cpu is not None:
                if st.first_cpu is None:
                    st.first_cpu = cpu
                st.last_cpu = cpu
            if mem is not None:
                st.max_rss_kib = max(st.max_rss_kib, mem[0])
                st.hwm_kib = max(st.hwm_kib, mem[1])

    def mark(self, label: str) -> None:
        """Take a sample now and remember each process's CPU under ``label``."""
        self.sample()
        with self.lock:
            self.mark_times[label] = time.time()
            for st in self.stats.values():
                if st.last_cpu is not None:
                    st.marks[label] = st.last_cpu

    def cpu_between(self, kind: str, start: str, end: str) -> float:
        """CPU seconds the processes of ``kind`` used between two marks.

        A process started after ``start`` counts from zero (its start-up is part of
        the window); one that died before ``end`` counts up to its last sample (at most
        ``interval`` short); one started after ``end`` does not count.
        """
        total = 0.0
        with self.lock:
            began, ended = self.mark_times[start], self.mark_times[end]
            for st in self.stats.values():
                if st.kind != kind or st.last_cpu is None or st.first_seen > ended:
                    continue
                a = st.marks.get(start, 0.0 if st.first_seen > began else st.first_cpu or 0.0)
                b = st.marks.get(end, st.last_cpu)
                total += max(0.0, b - a)
        return total

    def memory(self, kind: str) -> tuple[int, int]:
        """(max VmRSS, max VmHWM) in KiB over the processes of ``kind``."""
        with self.lock:
            rows = [st for st in self.stats.values() if st.kind == kind]
        return (max((st.max_rss_kib for st in rows), default=0),
                max((st.hwm_kib for st in rows), default=0))

    def metrics_delta(self, kind: str, reduce: Callable[[Samples], Any]) -> list[Any]:
        """``reduce`` applied to (last - first) metrics of each process of ``kind``."""
        out = []
        for pid, last in self.last_metrics.items():
            st = self.stats.get(pid)
            if st is None or st.kind != kind:
                continue
            first = self.first_metrics.get(pid, {})
            delta = {k: v - first.get(k, 0.0) for k, v in last.items()}
            out.append(reduce(delta))
        return out
