"""One run: the services, a live load, faults on a timeline, then measure and verify.

::

    with Run(RunConfig(...), workdir) as run:    # Kafka, MinIO, topic, bucket, services
        run.start_load()                         # load generators (and hostile clients)
        run.at(8.0); run.kill_recorder(0)        # the scenario: faults at load time 8 s...
        run.at(9.0); run.start_recorder()
        run.fault("recorder kill -9", start, end)
        result = run.finish()                    # wait, measure, verify: a JSON-able dict

Every wait has a deadline; every process is stopped when the ``with`` block ends,
also on error or Ctrl-C. Times in the result are seconds; ``t`` values are
relative to the load's start.

Recovery time of a fault = from the moment it was lifted (process restarted,
server back) until the system is caught up again, which is the later of:

- the first sample (taken at least one second after the fault was lifted)
  where every live ingest is ready and holds at most half a second of audio
  not yet acknowledged by Kafka, the load generators owe at most one frame per
  call (nobody is held back by backpressure), every partition has a recorder
  whose consumer lag, summed, is at most half a second of the load's records,
  and (while the load runs) the recorders have read records since the sample
  before (their lag gauge is fresh, not left over from before an outage);
- the archiving of every call that ended before the fault was lifted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.harness.procs import Service, log
from bench.harness.promstats import add_buckets, histogram, histogram_quantile, quantile
from bench.harness.sampler import Sampler
from bench.harness.topics import create_topics
from bench.loadharness import calls as callaudio
from bench.loadharness.figures import (
    hostile_figures,
    ingest_figures,
    log_counts,
    log_errors,
    recorder_figures,
)
from bench.loadharness.loadproc import LoadProcess
from bench.loadharness.verify import list_manifests, verify
from deploy.local import stack

TOKEN = "reliability-token"
_COALESCE_MS = float(os.environ.get("CALLREC_INGEST_COALESCE_MS", "100"))
RECORDS_PER_CALL_S = 100.0 if _COALESCE_MS <= 0 else min(100.0, 1000.0 / _COALESCE_MS)
"""Media records per second of a two-track call: 2 tracks x 50 frames, or one record per
coalescing window of its one ``both`` stream (ingest inherits the environment)."""
AUDIO_BYTES_PER_CALL_S = 96_000
"""Audio bytes per second of a two-track L16/24000 call."""


@dataclass
class RunConfig:
    name: str
    calls: int
    duration_s: float
    """Length of every call."""
    ramp_s: float
    """Call starts are spread evenly over this many seconds."""
    ingests: int = 1
    """Ingest processes; call n goes to ingest n mod ingests."""
    recorders: int = 1
    partitions: int = 6
    ingest_env: dict[str, str] = field(default_factory=dict)
    recorder_env: dict[str, str] = field(default_factory=dict)
    calls_per_loadgen: int = 150
    hostile: bool = False
    """Run the hostile-client battery beside the load."""
    hostile_waves: int = 3
    idle_baseline_s: float = 3.0
    """Services idle before the load: their idle CPU rate is measured here."""
    settle_timeout_s: float = 180.0
    """After the load: how long every recording may take to appear."""
    load_slack_s: float = 150.0
    """How far behind its schedule the load may fall before it gives up."""


class Run:
    def __init__(self, cfg: RunConfig, workdir: Path,
                 kafka: stack.KafkaServer | None = None,
                 minio: stack.MinioServer | None = None) -> None:
        self.cfg = cfg
        self.dir = workdir / f"{cfg.name}-{uuid.uuid4().hex[:6]}"
        self.dir.mkdir(parents=True)
        self._own_kafka = kafka is None
        self._own_minio = minio is None
        self.kafka = kafka or stack.KafkaServer(self.dir / "kafka")
        self.minio = minio or stack.MinioServer(self.dir / "minio")
        tag = f"{cfg.name}-{uuid.uuid4().hex[:8]}"
        self.topic = f"callrec.media.{tag}"
        self.recordings_topic = f"callrec.recordings.{tag}"
        self.bucket = f"rel-{uuid.uuid4().hex[:12]}"
        self.group = f"recorder-{tag}"
        self.prefix = f"{cfg.name}-{uuid.uuid4().hex[:4]}"
        """Call ids are <prefix>-<n>."""
        self.sampler = Sampler()
        self.ingests: list[Service] = []
        self.recorders: list[Service] = []
        self._retired: list[Service] = []
        self._serial = 0
        self.loadgens: list[LoadProcess] = []
        self.hostile: LoadProcess | None = None
        self.t0 = 0.0
        self.idle_s = cfg.idle_baseline_s
        self.events: list[tuple[float, str]] = []
        self.faults: list[dict[str, Any]] = []
        self._s3: Any = None

    # -- set-up and tear-down ------------------------------------------------------------

    def __enter__(self) -> Run:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _setup(self) -> None:
        cfg = self.cfg
        if self._own_kafka or self._own_minio:
            stack.install(kafka=self._own_kafka, minio=self._own_minio)
        if self._own_kafka:
            self.kafka.start()
        if self._own_minio:
            self.minio.start()
        asyncio.run(create_topics(self.kafka.bootstrap, {self.topic: cfg.partitions,
                                                          self.recordings_topic: 2}))
        import boto3

        self._s3 = boto3.client("s3", endpoint_url=self.minio.endpoint, region_name="us-east-1",
                                aws_access_key_id=self.minio.access_key,
                                aws_secret_access_key=self.minio.secret_key)
        self._s3.create_bucket(Bucket=self.bucket)
        self.sampler.watch(self.kafka.pid, "kafka", "kafka")
        self.sampler.watch(self.minio.pid, "minio", "minio")
        self.sampler.start()
        for _ in range(cfg.recorders):
            self.start_recorder(wait=False)
        for i in range(cfg.ingests):
            self.start_ingest(i, wait=False)
        for s in [*self.recorders, *self.ingests]:
            s.wait_ready(90)
        log(f"{cfg.name}: {cfg.ingests} ingest, {cfg.recorders} recorder ready; "
            f"topic {self.topic}, bucket {self.bucket}")

    def close(self) -> None:
        """Stop everything this run started (idempotent)."""
        for proc in [*self.loadgens, *([self.hostile] if self.hostile else [])]:
            proc.stop()
        for s in [*self.ingests, *self.recorders, *self._retired]:
            with contextlib.suppress(Exception):
                s.stop(timeout=20)
        self.sampler.close()
        if self._own_kafka:
            with contextlib.suppress(Exception):
                self.kafka.stop()
        if self._own_minio:
            with contextlib.suppress(Exception):
                self.minio.stop()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- services ------------------------------------------------------------------------

    def _common_env(self) -> dict[str, str]:
        return {
            "CALLREC_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "CALLREC_KAFKA_MEDIA_TOPIC": self.topic,
            "CALLREC_KAFKA_RECORDINGS_TOPIC": self.recordings_topic,
            "CALLREC_LOG_LEVEL": "INFO",
        }

    def start_ingest(self, slot: int, wait: bool = True) -> Service:
        """Start an ingest process in ``slot`` (replacing a dead one there)."""
        self._serial += 1
        name = f"ingest{slot}-{self._serial}"
        env = {**self._common_env(), "CALLREC_INGEST_HOST": "127.0.0.1",
               "CALLREC_INGEST_PORT": "0", "CALLREC_INGEST_TOKENS": TOKEN,
               "CALLREC_INGEST_POD_NAME": name, **self.cfg.ingest_env}
        service = Service("ingest", name, env, self.dir)
        service.start()
        if slot < len(self.ingests):
            self._retired.append(self.ingests[slot])
            self.ingests[slot] = service
        else:
            self.ingests.append(service)
        self.sampler.add(service)
        if wait:
            service.wait_ready(90)
        return service

    def start_recorder(self, wait: bool = True) -> Service:
        self._serial += 1
        name = f"recorder-{self._serial}"
        port = stack.free_ports(1)[0]
        env = {
            **self._common_env(),
            "CALLREC_ARCHIVE_URI": f"s3://{self.bucket}",
            "CALLREC_S3_ENDPOINT_URL": self.minio.endpoint,
            "CALLREC_S3_ACCESS_KEY_ID": self.minio.access_key,
            "CALLREC_S3_SECRET_ACCESS_KEY": self.minio.secret_key,
            "CALLREC_RECORDER_GROUP_ID": self.group,
            "CALLREC_RECORDER_SPILL_DIR": str(self.dir / f"spill-{name}"),
            "CALLREC_RECORDER_HOST": "127.0.0.1",
            "CALLREC_RECORDER_PORT": str(port),
            "CALLREC_RECORDER_SESSION_TIMEOUT_MS": "6000",
            **self.cfg.recorder_env,
        }
        service = Service("recorder", name, env, self.dir, port=port)
        service.start()
        self.recorders.append(service)
        self.sampler.add(service)
        if wait:
            service.wait_ready(90)
        return service

    def kill_recorder(self, i: int = 0) -> None:
        s = self.recorders.pop(i)
        s.signal(signal.SIGKILL)
        s.wait(10)
        self._retired.append(s)
        self.event(f"kill -9 {s.name}")

    def stop_recorder(self, i: int = 0) -> None:
        """SIGTERM: the recorder hands its partitions back and exits."""
        s = self.recorders.pop(i)
        self.event(f"SIGTERM {s.name}")
        s.signal(signal.SIGTERM)
        s.wait(60)
        self._retired.append(s)
        self.event(f"{s.name} exited")

    def kill_ingest(self, slot: int) -> None:
        s = self.ingests[slot]
        s.signal(signal.SIGKILL)
        s.wait(10)
        self.event(f"kill -9 {s.name}")

    def term_ingest(self, slot: int) -> Service:
        s = self.ingests[slot]
        s.draining = True
        s.signal(signal.SIGTERM)
        self.event(f"SIGTERM {s.name}")
        return s

    def stop_kafka(self) -> None:
        self.kafka.stop()
        self.event("Kafka stopped")

    def start_kafka(self) -> None:
        self.kafka.start()
        self.sampler.watch(self.kafka.pid, "kafka", "kafka")
        self.event("Kafka started")

    def stop_minio(self) -> None:
        self.minio.stop()
        self.event("MinIO stopped")

    def start_minio(self) -> None:
        self.minio.start()
        self.sampler.watch(self.minio.pid, "minio", "minio")
        self.event("MinIO started")

    # -- the load ------------------------------------------------------------------------

    def call_id(self, n: int) -> str:
        return f"{self.prefix}-{n:04d}"

    def start_load(self, lead_s: float = 1.0) -> None:
        """Measure the idle baseline, then start the load generators ``lead_s`` later."""
        cfg = self.cfg
        self.sampler.mark("idle_start")
        time.sleep(cfg.idle_baseline_s)
        self.sampler.mark("idle_end")
        frames = callaudio.frames_for(cfg.duration_s)
        nprocs = max(1, math.ceil(cfg.calls / cfg.calls_per_loadgen))
        plans: list[list[dict[str, Any]]] = [[] for _ in range(nprocs)]
        for n in range(cfg.calls):
            slot = n % len(self.ingests)
            plans[n % nprocs].append({
                "index": n, "call_id": self.call_id(n), "ingest": slot,
                "url": f"ws://127.0.0.1:{self.ingests[slot].port}/v1/stream?token={TOKEN}",
                "offset_s": cfg.ramp_s * n / cfg.calls,
            })
        self.t0 = time.time() + lead_s
        deadline = cfg.ramp_s + cfg.duration_s + cfg.load_slack_s
        for i, calls in enumerate(plans):
            conf = {"calls": calls, "frames": frames, "start_at": self.t0,
                    "deadline_s": deadline, "result": str(self.dir / f"load{i}.json")}
            self.loadgens.append(LoadProcess(f"load{i}", "bench.loadharness.loadgen", conf,
                                              self.dir))
        if cfg.hostile:
            ingest = self.ingests[0]
            conf = {"port": ingest.port, "token": TOKEN, "start_at": self.t0 + 1.0,
                    "waves": cfg.hostile_waves,
                    "wave_interval_s": max(1.0, (cfg.duration_s - 4) / cfg.hostile_waves),
                    "idle_timeout_s": float(cfg.ingest_env.get("CALLREC_INGEST_IDLE_TIMEOUT_S",
                                                               "30")),
                    "max_message_bytes": 65536, "max_invalid": 50,
                    "deadline_s": cfg.duration_s + 120,
                    "result": str(self.dir / "hostile.json")}
            self.hostile = LoadProcess("hostile", "bench.loadharness.hostile", conf, self.dir)
        for proc in [*self.loadgens, *([self.hostile] if self.hostile else [])]:
            self.sampler.watch(proc.pid, proc.name, "loadgen")
        self.sampler.owed = lambda: sum(p.owed for p in self.loadgens if p.running)
        self.sampler.load_running = lambda: any(p.running for p in self.loadgens)
        wait = self.t0 - time.time()
        if wait > 0:
            time.sleep(wait)
        self.sampler.mark("load_start")
        self.event("load started")

    def now(self) -> float:
        """Seconds since the load started."""
        return time.time() - self.t0

    def at(self, t: float) -> None:
        """Sleep until ``t`` seconds after the load started."""
        delay = self.t0 + t - time.time()
        if delay > 0:
            time.sleep(delay)

    def event(self, label: str) -> None:
        self.events.append((time.time(), label))
        log(f"{self.cfg.name}: t={self.now():6.1f}s {label}")

    def begin_fault(self) -> float:
        """Call just before injecting a fault: CPU is marked; returns the time."""
        self.sampler.mark(f"fault{len(self.faults)}_start")
        return time.time()

    def fault(self, name: str, start: float, end: float, **detail: Any) -> None:
        """Record a fault injected from ``start`` (from :meth:`begin_fault`) to ``end``."""
        self.sampler.mark(f"fault{len(self.faults)}_end")
        self.faults.append({"name": name, "start": start, "end": end, **detail})

    # -- the end -------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        cfg = self.cfg
        deadline = self.t0 + cfg.ramp_s + cfg.duration_s + cfg.load_slack_s + 60
        reports: list[dict[str, Any]] = []
        load_cpu = 0.0
        lateness: list[dict[str, Any]] = []
        for proc in self.loadgens:
            result = proc.result(deadline)
            reports += result["calls"]
            load_cpu += result["cpu_s"]
            lateness.append(result)
        self.event("load finished")
        hostile = self.hostile.result(time.time() + 180) if self.hostile else None
        started = {r["call_id"] for r in reports if r["status"] == 101}
        self._wait_archived(started, time.time() + cfg.settle_timeout_s)
        self._wait_lag_zero(time.time() + 30)
        # Sample a little past the last fault's end, so that its recovery can be seen.
        last_fault = max((f["end"] for f in self.faults), default=0.0)
        while time.time() < last_fault + 3.0:
            time.sleep(0.25)
        self.sampler.mark("end")
        t_end = time.time()
        ingest_metrics = self.sampler.metrics_delta("ingest", lambda d: d)
        recorder_metrics = self.sampler.metrics_delta("recorder", lambda d: d)
        for s in [*self.ingests, *self.recorders]:
            s.stop(timeout=30)
        verification = verify(self._s3, self.bucket, reports)
        return self._result(reports, verification, hostile, ingest_metrics, recorder_metrics,
                            load_cpu, lateness, t_end)

    def _wait_archived(self, call_ids: set[str], deadline: float) -> None:
        while True:
            have = {key.split("/")[1].rpartition("-")[0]
                    for key in list_manifests(self._s3, self.bucket)}
            missing = call_ids - have
            if not missing:
                self.event(f"all {len(call_ids)} recordings archived")
                return
            if time.time() > deadline:
                self.event(f"{len(missing)} recordings still missing at the deadline")
                return
            time.sleep(0.5)

    def _wait_lag_zero(self, deadline: float) -> None:
        while time.time() < deadline:
            ticks = [t for t in self.sampler.ticks[-3:] if t.lag is not None]
            if len(ticks) == 3 and all(t.lag == 0 for t in ticks):
                return
            time.sleep(0.5)

    # -- figures -------------------------------------------------------------------------

    def _result(self, reports: list[dict[str, Any]], verification: Any,
                hostile: Any, ingest_metrics: list[Any], recorder_metrics: list[Any],
                load_cpu: float, lateness: list[dict[str, Any]],
                t_end: float) -> dict[str, Any]:
        cfg = self.cfg
        s = self.sampler
        window = t_end - self.t0
        cpu = {kind: s.cpu_between(kind, "load_start", "end")
               for kind in ("ingest", "recorder", "kafka", "minio")}
        idle = {kind: s.cpu_between(kind, "idle_start", "idle_end") / self.idle_s
                for kind in ("ingest", "recorder")}
        call_s = cfg.calls * cfg.duration_s
        services_cpu = cpu["ingest"] + cpu["recorder"]
        net_cpu = services_cpu - (idle["ingest"] + idle["recorder"]) * window
        produce = add_buckets(*(histogram(m, "callrec_ingest_produce_latency_seconds")
                                for m in ingest_metrics))
        verdicts = verification.verdicts
        complete = [v for v in verdicts if v.expected in ("complete", "either")
                    and v.stop_to_archive_s is not None and not v.reason]
        s2a = [v.stop_to_archive_s for v in complete]
        lags = [t.lag for t in s.ticks if t.lag is not None and t.t >= self.t0]
        rss = {kind: s.memory(kind) for kind in ("ingest", "recorder", "kafka", "minio")}
        late_max = max((r["late_max_ms"] for r in lateness), default=0.0)
        late_p99 = max((r["late_p99_ms"] for r in lateness), default=0.0)
        outcomes = Counter(r["outcome"] for r in reports)
        archived_at = {v.call_id: v.archived_at for v in verdicts}
        ended = {r["call_id"]: r["ended"] for r in reports}
        faults = [dict(f, **self._recovery(f, archived_at, ended), **self._during(k, f))
                  for k, f in enumerate(self.faults)]
        for f in faults:
            f["start_t"] = round(f.pop("start") - self.t0, 2)
            f["end_t"] = round(f.pop("end") - self.t0, 2)
        result: dict[str, Any] = {
            "name": cfg.name,
            "config": asdict(cfg),
            "calls": cfg.calls,
            "wall_s": round(window, 2),
            "outcomes": dict(outcomes),
            "close_codes_seen": dict(Counter(
                f"{r['close_code']} {r['close_reason']}".strip() for r in reports)),
            "verified_ok": sum(v.ok for v in verdicts),
            "lost": [asdict(v) for v in verification.lost],
            "cut": [asdict(v) for v in verdicts if v.expected == "cut" and v.ok],
            "refused": sum(1 for v in verdicts if v.expected == "none"),
            "other_recordings": verification.other_recordings,
            "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
            "loadgen_cpu_s": round(load_cpu, 2),
            "idle_cpu_per_s": {k: round(v, 4) for k, v in idle.items()},
            "per_call_cpu_pct": 100 * services_cpu / call_s,
            "per_call_cpu_net_pct": 100 * net_cpu / call_s,
            "per_call_cpu_pct_by_service": {
                k: 100 * (cpu[k] - idle[k] * window) / call_s for k in ("ingest", "recorder")},
            "rss_mib": {k: round(v[0] / 1024, 1) for k, v in rss.items()},
            "hwm_mib": {k: round(v[1] / 1024, 1) for k, v in rss.items()},
            "frame_to_kafka_ms": {
                "p50": 1000 * histogram_quantile(0.5, produce),
                "p99": 1000 * histogram_quantile(0.99, produce),
                "batches": produce[-1][1] if produce else 0,
            },
            "stop_to_archive_s": {"p50": quantile(s2a, 0.5), "p99": quantile(s2a, 0.99),
                                  "max": max(s2a, default=math.nan), "n": len(s2a)},
            "lag_max": max(lags, default=math.nan),
            "lag_end": lags[-1] if lags else math.nan,
            "sender_late_ms": {"p99": late_p99, "max": late_max},
            "ingest": ingest_figures(ingest_metrics),
            "ingest_log_errors": log_errors(self.dir, "ingest"),
            "ingest_log_counts": log_counts(self.dir, "ingest", (
                "OutOfOrderSequenceNumber", "LeaderNotAvailableError", "giving up on",
                "close record lost", "keepalive ping timeout")),
            "recorder": recorder_figures(recorder_metrics),
            "faults": faults,
            "events": [(round(t - self.t0, 2), label) for t, label in self.events],
            "timeline": [
                (round(k.t - self.t0, 1), k.lag, k.partitions, round(k.inflight / 1024),
                 k.owed, all(k.ingest_ready.values()) and bool(k.ingest_ready))
                for k in s.ticks if k.t >= self.t0 - 1
            ],
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        if hostile is not None:
            result["hostile"] = hostile_figures(hostile)
        return result

    def _recovery(self, fault: dict[str, Any], archived_at: dict[str, float | None],
                  ended: dict[str, float]) -> dict[str, Any]:
        end = fault["end"]
        live_at = None
        previous = None
        for tick in self.sampler.ticks:
            if tick.t >= end + 1.0 and self._caught_up(tick, previous):
                live_at = tick.t
                break
            previous = tick
        before = [c for c, t in ended.items() if t and t < end]
        times = [archived_at.get(c) for c in before]
        archive_at = None if any(t is None for t in times) else max(
            [t for t in times if t is not None], default=end)
        if live_at is None or archive_at is None:
            return {"recovery_s": None, "recovered": False, "ended_before": len(before)}
        return {"recovery_s": round(max(live_at, archive_at) - end, 2), "recovered": True,
                "live_after_s": round(live_at - end, 2),
                "archived_after_s": round(archive_at - end, 2),
                "ended_before": len(before)}

    def _during(self, k: int, fault: dict[str, Any]) -> dict[str, Any]:
        """What the processes did while fault ``k`` lasted."""
        s = self.sampler
        seconds = max(0.1, fault["end"] - fault["start"])
        out: dict[str, Any] = {}
        if f"fault{k}_start" in s.mark_times:
            out["ingest_cores_during"] = round(
                s.cpu_between("ingest", f"fault{k}_start", f"fault{k}_end") / seconds, 2)
            out["recorder_cores_during"] = round(
                s.cpu_between("recorder", f"fault{k}_start", f"fault{k}_end") / seconds, 2)
        ticks = [t for t in s.ticks if fault["start"] <= t.t <= fault["end"]]
        lags = [t.lag for t in ticks if t.lag is not None]
        out["lag_max_during"] = max(lags, default=None)
        if len(ticks) >= 2:
            out["acked_during"] = ticks[-1].acked - ticks[0].acked
        paused = [t for t in ticks if t.paused]
        if paused:
            out["paused_s"] = round(paused[-1].t - paused[0].t, 1)
            out["acked_while_paused"] = paused[-1].acked - paused[0].acked
            out["lag_max_while_paused"] = max((t.lag for t in paused if t.lag is not None),
                                              default=None)
        return out

    def _caught_up(self, tick: Any, previous: Any) -> bool:
        """Whether the pipeline was keeping up with the load at this sample (module docstring)."""
        calls = self.cfg.calls
        if not tick.ingest_ready or not all(tick.ingest_ready.values()):
            return False
        if tick.inflight > max(256 * 1024, 0.5 * calls * AUDIO_BYTES_PER_CALL_S):
            return False  # ingest still holds a backlog for Kafka
        if tick.owed > max(5, calls):
            return False  # senders held back by backpressure
        if tick.lag is None or tick.partitions < self.cfg.partitions:
            return False  # some partition has no recorder (yet)
        if tick.lag > max(200.0, 0.5 * calls * RECORDS_PER_CALL_S):
            return False
        # The lag gauge is only fresh while the recorder reads (the broker may be away):
        # while the load runs, the recorders must have read something since the last sample.
        fresh = previous is not None and tick.consumed > previous.consumed
        return fresh or not tick.load_running
