"""The processes of a run and what is measured on them.

- :class:`Service`: one ``callrec ingest`` or ``callrec recorder`` subprocess
  (``CALLREC_*`` environment, log file, probes/metrics port).
- :class:`Sampler`: a thread that every ``interval`` reads each live process's
  CPU (``/proc/PID/stat`` utime + stime) and RSS (``VmRSS``, ``VmHWM``), scrapes
  each service's ``/metrics``, and records the series a run needs: summed
  recorder consumer lag, ingest readiness, the load generators' owed frames.
- Prometheus text parsing and PromQL-style ``histogram_quantile``.

Processes started here die with the thread that started them (``PR_SET_PDEATHSIG``),
so a crashed harness leaves nothing running; start them from the main thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """SIGKILL this child when the thread that forked it ends."""
    _libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- /proc ------------------------------------------------------------------------------


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


# -- Prometheus -------------------------------------------------------------------------


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""(sample name, sorted labels) -> value."""


def parse_metrics(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def metric_sum(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def metric_by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, ls), v in samples.items():
        if n == name:
            key = dict(ls).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def histogram(samples: Samples, name: str) -> list[tuple[float, float]]:
    """(le, cumulative count) buckets of histogram ``name``, +Inf last."""
    buckets = [
        (float(dict(ls)["le"]), v) for (n, ls), v in samples.items() if n == name + "_bucket"
    ]
    return sorted(buckets)


def subtract_buckets(after: Sequence[tuple[float, float]],
                     before: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    prior = dict(before)
    return [(le, count - prior.get(le, 0.0)) for le, count in after]


def add_buckets(*histograms: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    total: dict[float, float] = {}
    for h in histograms:
        for le, count in h:
            total[le] = total.get(le, 0.0) + count
    return sorted(total.items())


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL ``histogram_quantile``: linear interpolation inside the bucket holding rank q."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # Prometheus answers the highest finite bound
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return math.nan


def quantile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""


# -- services ---------------------------------------------------------------------------


class Service:
    """One ``callrec ingest`` / ``callrec recorder`` process."""

    def __init__(self, kind: str, name: str, env: dict[str, str], log_dir: Path,
                 port: int | None = None) -> None:
        self.kind = kind
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.port = port
        self.started_at = 0.0
        self.draining = False
        """Set when it was sent SIGTERM: not expected to be ready any more."""
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._pump: threading.Thread | None = None

    def start(self, timeout: float = 60) -> None:
        """Start the process; for ingest, wait for its port line."""
        self._log = self.log_path.open("ab")
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callrec.cli", self.kind],
            env={**os.environ, **self.env, "PYTHONPATH": str(REPO)}, cwd=REPO,
            stdout=subprocess.PIPE if self.kind == "ingest" else self._log,
            stderr=self._log, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )
        if self.kind == "ingest":
            self.port = self._read_port(timeout)

    def _read_port(self, timeout: float) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        lines: queue.Queue[bytes] = queue.Queue()
        stdout = self.proc.stdout

        def pump() -> None:
            with contextlib.suppress(ValueError, OSError):  # closed under us: we are done
                for line in stdout:
                    lines.put(line)
                    if self._log is not None and not self._log.closed:
                        self._log.write(line)

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        try:
            first = lines.get(timeout=timeout).decode(errors="replace")
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no port line in {timeout}s; see "
                               f"{self.log_path}") from None
        match = re.search(r"listening on port (\d+)", first)
        if not match:
            raise RuntimeError(f"{self.name}: unexpected first line {first!r}")
        return int(match.group(1))

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        return self.alive and self.port is not None and http_get(self.port, "/readyz")[0] == 200

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds from the process start until /readyz answered 200."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self.alive:
                code = self.proc.poll() if self.proc else None
                raise RuntimeError(f"{self.name} exited with {code}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout}s; see {self.log_path}")
            time.sleep(0.05)
        return time.time() - self.started_at

    def metrics(self) -> Samples | None:
        if self.port is None or not self.alive:
            return None
        status, body = http_get(self.port, "/metrics")
        return parse_metrics(body) if status == 200 else None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; close the log."""
        if self.alive:
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.signal(signal.SIGKILL)
                self.wait(10)
        if self._pump is not None:
            self._pump.join(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()


# -- sampling ---------------------------------------------------------------------------


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
