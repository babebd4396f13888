"""The fault matrix: each fault injected into a live load, on a timeline.

Each scenario is a function ``(run) -> None`` called once the load has started;
it injects its fault at fixed load times and records it with ``run.fault``.
:data:`MATRIX` lists them with the run configuration each needs (e.g. two
ingest processes for the ingest faults); :func:`expectations` says which calls
the design promises to keep whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.harness.promstats import http_get
from bench.loadharness.run import TOKEN, Run


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    """What is done, in words, for the tables."""
    promise: str
    """What the design promises (docs/architecture.md "Guarantees", docs/formats.md)."""
    inject: Callable[[Run], None]
    ingests: int = 1
    recorders: int = 1
    ingest_env: dict[str, str] = field(default_factory=dict)
    recorder_env: dict[str, str] = field(default_factory=dict)
    hostile: bool = False
    duration_s: float | None = None
    """Call length for this scenario, when the matrix's does not fit the fault."""
    ramp_s: float | None = None


def baseline(run: Run) -> None:
    """No fault: the reference for the others."""


def recorder_kill(run: Run) -> None:
    run.at(10.0)
    start = run.begin_fault()
    run.kill_recorder(0)
    run.at(11.0)
    run.start_recorder(wait=False)
    end = run.recorders[-1].started_at
    run.event("recorder restarted")
    run.fault("recorder kill -9, restarted 1 s later", start, end)


def rebalance(run: Run) -> None:
    run.at(7.0)
    run.begin_fault()
    added = run.start_recorder(wait=False)
    run.event(f"{added.name} added")
    run.fault("recorder added (rebalance)", added.started_at, added.started_at)
    run.at(15.0)
    start = run.begin_fault()
    run.stop_recorder(0)  # the first recorder: SIGTERM, hands its partitions back
    run.fault("recorder removed by SIGTERM (rebalance)", start, time.time())


def broker_outage(run: Run, seconds: float = 10.0, at: float = 8.0) -> None:
    run.at(at)
    start = run.begin_fault()
    run.stop_kafka()
    run.at(at + seconds)
    run.start_kafka()
    run.fault(f"Kafka broker stopped {seconds:g} s, restarted", start, time.time())


def minio_outage(run: Run, seconds: float = 30.0) -> None:
    # Stopped just before the first calls end, so that they end while S3 is away.
    at = run.cfg.duration_s - 3.0
    run.at(at)
    start = run.begin_fault()
    run.stop_minio()
    run.at(at + seconds)
    run.start_minio()
    run.fault(f"MinIO stopped {seconds:g} s, restarted", start, time.time())


def broker_long(run: Run) -> None:
    """Longer than ingest's idle timeout (30 s) once the in-flight budget is full."""
    broker_outage(run, seconds=45.0, at=8.0)


def minio_past_idle(run: Run) -> None:
    """MinIO away for longer than the recorder's idle timeout while calls are live."""
    run.at(15.0)
    start = run.begin_fault()
    run.stop_minio()
    run.at(40.0)
    run.start_minio()
    run.fault("MinIO stopped 25 s (recorder idle timeout 8 s)", start, time.time())


READY_FLIP_LIMIT_S = 1.0
"""How soon after SIGTERM a draining ingest must answer /readyz 503 (a probe period)."""


def ingest_drain(run: Run) -> None:
    """A rolling update of one of two ingest pods: SIGTERM, a replacement starts at once."""
    run.at(8.0)
    start = run.begin_fault()
    draining = run.term_ingest(0)
    assert draining.port is not None
    # The signal is delivered and handled asynchronously: a probe sent the same
    # microsecond can be read before it (one of three runs). Probe as Kubernetes
    # does, repeatedly, for up to a second; once not ready, a new stream must be refused.
    readyz, flipped = http_get(draining.port, "/readyz")[0], time.time()
    while readyz == 200 and time.time() - start < READY_FLIP_LIMIT_S:
        time.sleep(0.005)
        readyz, flipped = http_get(draining.port, "/readyz")[0], time.time()
    upgrade, _ = http_get(draining.port, f"/v1/stream?token={TOKEN}")
    replacement = run.start_ingest(0)
    run.event(f"{replacement.name} ready")
    ready_s = time.time() - start
    code = draining.wait(run.cfg.duration_s + 90)
    exited = time.time()
    run.event(f"{draining.name} exited with {code}")
    run.fault("ingest SIGTERM (drain, grace 60 s), replacement started", start, exited,
              readyz_while_draining=readyz, upgrade_while_draining=upgrade,
              not_ready_after_ms=round(1000 * (flipped - start), 1),
              exit_code=code, drain_s=round(exited - start, 2),
              replacement_ready_s=round(ready_s, 2))


def ingest_kill(run: Run) -> None:
    run.at(10.0)
    start = run.begin_fault()
    run.kill_ingest(0)
    run.at(11.0)
    replacement = run.start_ingest(0)
    run.event(f"{replacement.name} ready")
    run.fault("ingest kill -9, replaced 1 s later", start, replacement.started_at,
              replacement_ready_s=round(time.time() - replacement.started_at, 2))


def hostile(run: Run) -> None:
    """The hostile clients run beside the load from t = 1 s (see hostile.py)."""


MATRIX: list[Scenario] = [
    Scenario("baseline", "no fault", "every recording complete and sample-identical",
             baseline),
    Scenario("recorder-kill", "recorder kill -9 at 10 s, restarted at 11 s",
             "zero loss, no duplicate part (exactly-once archive)", recorder_kill),
    Scenario("rebalance", "second recorder added at 7 s; first one SIGTERMed at 15 s",
             "zero loss, no duplicate part", rebalance),
    Scenario("broker", "Kafka broker stopped at 8 s for 10 s",
             "zero loss: backpressure, nothing acknowledged before acks=all", broker_outage),
    Scenario("minio", "MinIO stopped 3 s before the first calls end, for 30 s",
             "zero loss: partitions paused, archive retried", minio_outage),
    Scenario("ingest-drain", "ingest 1 of 2 SIGTERMed at 8 s (grace 60 s), then replaced",
             "zero loss: live streams finish within the grace period", ingest_drain,
             ingests=2, ingest_env={"CALLREC_INGEST_DRAIN_GRACE_S": "60"}),
    Scenario("ingest-kill", "ingest 1 of 2 killed -9 at 10 s, replaced at 11 s",
             "its calls archived incomplete, reason 'not closed (idle timeout)', audio up "
             "to the cut intact; the other ingest's calls untouched", ingest_kill,
             ingests=2, recorder_env={"CALLREC_RECORDER_IDLE_TIMEOUT_S": "5"}),
    Scenario("hostile", "hostile clients beside the load (3 waves)",
             "every bad client gets its documented outcome; zero loss for the load",
             hostile, ingest_env={"CALLREC_INGEST_IDLE_TIMEOUT_S": "8"}, hostile=True),
    # Limits: outages longer than the services' own timeouts.
    Scenario("broker-45s", "Kafka broker stopped at 8 s for 45 s, calls of 60 s, defaults",
             "zero loss: ingest holds the senders (backpressure) up to "
             "CALLREC_INGEST_PRODUCE_TIMEOUT_S (120 s), whatever its idle timeout (30 s)",
             broker_long, duration_s=60),
    Scenario("minio-past-idle", "MinIO stopped at 15 s for 25 s while calls are live, "
             "recorder idle timeout 8 s (a short stand-in for an S3 outage longer than the "
             "default 60 s)",
             "zero loss: an archive outage is not a vanished ingest pod", minio_past_idle,
             recorder_env={"CALLREC_RECORDER_IDLE_TIMEOUT_S": "8"}, duration_s=20, ramp_s=20),
]
BY_NAME = {s.name: s for s in MATRIX}


def judge(scenario: Scenario, result: dict[str, Any]) -> list[str]:
    """What broke the scenario's promise; empty when it was kept."""
    problems = [f"{v['call_id']}: {v['problem']}" for v in result["lost"]]
    if scenario.name == "ingest-kill":
        killed = result["cut"]
        wrong = [v for v in killed if "idle timeout" not in v["reason"]]
        problems += [f"{v['call_id']}: cut with reason {v['reason']!r}" for v in wrong]
        if not killed:
            problems.append("no call was cut by the ingest kill")
    elif result["cut"]:
        problems += [f"{v['call_id']}: cut ({v['reason']})" for v in result["cut"]]
    if result["refused"]:
        problems.append(f"{result['refused']} calls refused")
    for fault in result["faults"]:
        if not fault.get("recovered", True):
            problems.append(f"{fault['name']}: not recovered")
    if scenario.hostile:
        for case, figures in result.get("hostile", {}).items():
            if figures["as_documented"] != figures["clients"]:
                problems.append(f"hostile {case}: {figures['as_documented']}/"
                                f"{figures['clients']} as documented ({figures['seen']})")
    if scenario.name == "ingest-drain":
        fault = result["faults"][0]
        if fault["readyz_while_draining"] != 503 or fault["upgrade_while_draining"] != 503:
            problems.append(f"draining ingest answered readyz {fault['readyz_while_draining']}"
                            f" (polled for {READY_FLIP_LIMIT_S:g} s), then upgrade "
                            f"{fault['upgrade_while_draining']} (expected 503 and 503)")
    return problems
