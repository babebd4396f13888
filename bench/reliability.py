"""Scale and fault proof: many concurrent calls end to end, with failures injected.

One command::

    .venv/bin/python -m bench.reliability [--quick] [--write-docs] [--only NAMES]

runs, every component a real process on 127.0.0.1 (bench/loadharness/):

1. **The scale curve**: 10 → 100 → 200 → 400 concurrent real-time calls of 30 s
   (starts spread over 10 s) through one ingest and one recorder: per-call CPU,
   frame→Kafka and stop→archive percentiles, consumer lag, RSS, loss. With
   ``--steady`` each step is sustained load instead: N calls live at once for a
   whole call length while calls keep ending and starting (2N calls in all).
2. **The fault matrix** (bench/loadharness/scenarios.py): the same live load
   (40 real-time two-track calls of 24 s) with one fault each: none (baseline),
   recorder ``kill -9`` + restart, recorders added/removed (rebalance), Kafka
   broker stopped 10 s, MinIO stopped 30 s, ingest SIGTERM (drain), ingest
   ``kill -9``, hostile clients; then two limits: a 45 s Kafka outage, and an
   archive outage longer than the recorder's idle timeout. Each run reports loss
   (calls whose recording is missing, split or not sample-identical where the
   design promises it) and recovery time (bench/loadharness/run.py says exactly
   what "caught up" means).

It prints the tables; ``--write-docs`` writes docs/reliability.md (whole file)
and the "## Scale curve" section of docs/benchmarks.md; ``--json FILE`` keeps
every figure, and ``--render FILE`` writes the docs again from such a file
without running anything. Every run starts its own Kafka and MinIO
(deploy/local/stack.py) in a temp dir and stops every process it started, also
on error or Ctrl-C. Exit status 1 when a promise was broken or a run failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.procs import log
from bench.harness.report import fmt, machine_facts, markdown_table, replace_section, text_table
from bench.loadharness.run import Run, RunConfig
from bench.loadharness.scenarios import BY_NAME, MATRIX, Scenario, judge
from bench.loadharness.tables import (
    FLAT_WITHIN,
    MATRIX_HEAD,
    SCALE_HEAD,
    flatness,
    hostile_rows,
    matrix_rows,
    scale_rows,
)

REPO = Path(__file__).resolve().parent.parent
RELIABILITY_DOC = REPO / "docs" / "reliability.md"
BENCHMARKS_DOC = REPO / "docs" / "benchmarks.md"
COALESCING_DOC = Path(__file__).resolve().parent / "loadharness" / "coalescing.md"


@dataclass
class Plan:
    matrix_calls: int
    matrix_duration_s: float
    matrix_ramp_s: float
    scale_steps: list[int]
    scale_duration_s: float
    scale_ramp_s: float
    scale_recorders: int = 1
    """Recorder processes of a scale step (a consumer group: partitions spread over them)."""
    scale_steady: bool = False
    """Steps of sustained load instead (``--steady``): a step of N runs 2N calls whose
    starts are spread evenly over twice the call length, so N calls are live at once for
    a whole call length while calls keep ending and starting (N / length a second), as
    under a day's traffic; the default step starts its N calls within ``scale_ramp_s``,
    so they also end within it."""
    scenarios: list[str] = field(default_factory=lambda: [s.name for s in MATRIX])


FULL = Plan(matrix_calls=40, matrix_duration_s=24, matrix_ramp_s=4,
            scale_steps=[10, 100, 200, 400], scale_duration_s=30, scale_ramp_s=10)
QUICK = Plan(matrix_calls=10, matrix_duration_s=20, matrix_ramp_s=3,
             scale_steps=[10, 50], scale_duration_s=15, scale_ramp_s=5)


# -- running ------------------------------------------------------------------------------


def run_scenario(scenario: Scenario, calls: int, duration_s: float, ramp_s: float,
                 workdir: Path, keep: bool = False) -> dict[str, Any]:
    duration_s = scenario.duration_s or duration_s
    ramp_s = scenario.ramp_s or ramp_s
    cfg = RunConfig(scenario.name, calls=calls, duration_s=duration_s, ramp_s=ramp_s,
                    ingests=scenario.ingests, recorders=scenario.recorders,
                    ingest_env=dict(scenario.ingest_env),
                    recorder_env=dict(scenario.recorder_env), hostile=scenario.hostile)
    log(f"=== {scenario.name}: {scenario.title} ({calls} calls of {duration_s:g} s)")
    with Run(cfg, workdir) as run:
        try:
            run.start_load()
            scenario.inject(run)
            result = run.finish()
        finally:
            run.close()
            if not keep:
                run.cleanup()
    result["scenario"] = {"title": scenario.title, "promise": scenario.promise}
    result["problems"] = judge(scenario, result)
    log(f"    {'KEPT' if not result['problems'] else 'BROKEN'}: "
        f"{result['verified_ok']}/{calls} verified; "
        + "; ".join(f"{f['name']}: recovery {f['recovery_s']} s" for f in result["faults"]))
    for problem in result["problems"][:10]:
        log(f"    problem: {problem}")
    return result


def run_scale_step(live: int, plan: Plan, workdir: Path, keep: bool = False) -> dict[str, Any]:
    """One step of ``live`` calls at once (``Plan.scale_steady`` says how they come)."""
    if plan.scale_steady:
        calls, ramp_s, name = 2 * live, 2 * plan.scale_duration_s, f"steady{live}"
    else:
        calls, ramp_s, name = live, plan.scale_ramp_s, f"scale{live}"
    cfg = RunConfig(name, calls=calls, duration_s=plan.scale_duration_s, ramp_s=ramp_s,
                    recorders=plan.scale_recorders)
    log(f"=== scale: {calls} calls of {plan.scale_duration_s:g} s "
        f"(starts over {ramp_s:g} s)")
    with Run(cfg, workdir) as run:
        try:
            run.start_load()
            result = run.finish()
        finally:
            run.close()
            if not keep:
                run.cleanup()
    result["problems"] = [f"{v['call_id']}: {v['problem']}" for v in result["lost"]]
    result["problems"] += [f"{v['call_id']}: cut ({v['reason']})" for v in result["cut"]]
    log(f"    {result['verified_ok']}/{calls} verified; per-call CPU "
        f"{result['per_call_cpu_net_pct']:.3f} % net; frame->Kafka p99 "
        f"{result['frame_to_kafka_ms']['p99']:.1f} ms; stop->archive p99 "
        f"{result['stop_to_archive_s']['p99']:.2f} s")
    return result


# -- docs ----------------------------------------------------------------------------------


def render_scale_section(res: dict[str, Any]) -> str:
    steps = res["scale"]
    m = res["machine"]
    ratio, flat = flatness(steps)
    last = steps[-1] if steps else None
    zero_loss_top = last is not None and not last["problems"]
    plan = res["plan"]
    md = [
        "## Scale curve",
        "",
        f"`{res['command']}` ({res['date']}; {m['nproc']} x {m['cpu']}, {m['ram']} RAM, "
        f"Python {m['python']}; load average before the run {res['loadavg']}). "
        f"Real-time two-track calls of {plan['scale_duration_s']:g} s (starts spread over "
        f"{plan['scale_ramp_s']:g} s) through one `callrec ingest` and one "
        "`callrec recorder` process, real Kafka and MinIO, every recording then checked "
        "sample by sample. How it is measured: [reliability.md](reliability.md).",
        "",
        markdown_table(SCALE_HEAD, scale_rows(steps)),
        "",
        f"- **Per-call CPU never rises with the calls** (largest step over the smallest "
        f"with fewer calls, net; {1 + FLAT_WITHIN:.1f} allowed for noise): "
        f"{fmt(ratio)} — {'met' if flat else '**not met**'}.",
        f"- **Zero loss at {last['calls'] if last else '?'} calls**: "
        f"{'met' if zero_loss_top else '**not met**'}"
        + (f" ({last['verified_ok']}/{last['calls']} verified)" if last else "") + ".",
        "",
        "Per-call CPU = CPU seconds of the ingest and recorder processes (from `/proc`) from "
        "the load's start until every recording was archived, divided by calls x call "
        f"length, as % of one core; *net* subtracts their idle rate measured just before "
        f"the load ({fmt(100 * _idle(steps), 1)} % of a core for the two: Kafka probes, "
        "polling). Kafka, MinIO and the load generators share the same cores and are in "
        "\"avg cores busy\" (averaged from the load's start to the last archive). "
        "Per-call CPU falls as calls are added instead of staying flat: ingest hands "
        "Kafka bigger batches (\"records per Kafka batch\") and the recorder gets more "
        "records per poll, so fixed costs per batch and per poll are shared by more calls.",
        "",
    ]
    md += _scale_remarks(steps)
    return "\n".join(md) + "\n"


def _idle(steps: list[dict[str, Any]]) -> float:
    rates = [sum(r["idle_cpu_per_s"].values()) for r in steps]
    return sum(rates) / len(rates) if rates else math.nan


def _scale_remarks(steps: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in steps:
        s2a = r["stop_to_archive_s"]["p99"]
        if s2a > 1.5:
            rate = r["calls"] / max(1.0, r["config"]["ramp_s"])
            out.append(f"- {r['calls']} calls: stop→archive p99 {s2a:.1f} s, over DESIGN §7's "
                       f"1.5 s: the calls end {rate:.0f} a second here, and finished recordings "
                       "queue for the archive (at most 4 written at a time, sharing the 2 "
                       "cores with everything else).")
        p99 = r["frame_to_kafka_ms"]["p99"]
        if p99 > 100:
            out.append(f"- {r['calls']} calls: frame→Kafka p99 {p99 / 1000:.2f} s: Kafka "
                       "acknowledged slower than ingest read: records waited in ingest's "
                       "in-flight budget (up to 32 MiB) for their batch's acknowledgement.")
        if r["problems"]:
            out.append(f"- {r['calls']} calls: " + "; ".join(r["problems"][:5]))
        late = r["sender_late_ms"]["max"]
        if late > 200:
            out.append(f"- {r['calls']} calls: the senders fell up to {late / 1000:.1f} s "
                       "behind the real-time schedule (TCP backpressure from ingest).")
    return [*out, ""] if out else []


def render_reliability(res: dict[str, Any]) -> str:
    m = res["machine"]
    plan = res["plan"]
    matrix = res["matrix"]
    md = [
        "# Reliability",
        "",
        "What callrec keeps when things break, measured: every figure below comes from "
        "`bench/reliability.py` (harness: `bench/loadharness/`), which runs the real "
        "processes — Kafka, MinIO, `callrec ingest`, `callrec recorder`, load generators — "
        "on 127.0.0.1, injects each fault into a live load, and then checks every "
        "recording in MinIO against the audio that was sent, sample by sample.",
        "",
        f"Measured {res['date']} on {m['nproc']} x {m['cpu']}, {m['ram']} RAM, Linux "
        f"{m['kernel']}, Python {m['python']} (load average before the run: "
        f"{res['loadavg']}), by",
        "",
        "```",
        f"{res['command']}",
        "```",
        "",
        "A fast subset (20 calls, recorder `kill -9` + restart, broker stopped 10 s) runs in "
        "the test suite: `tests/integration/test_reliability.py`.",
        "",
        # What coalescing changes in the guarantees: prose, kept beside the harness.
        COALESCING_DOC.read_text().rstrip("\n"),
        "",
    ]
    if matrix:
        md += [
            "## Fault matrix",
            "",
            f"Each row: {plan['matrix_calls']} real-time two-track calls of "
            f"{plan['matrix_duration_s']:g} s unless the row says otherwise (starts spread over "
            f"{plan['matrix_ramp_s']:g} s), the fault injected at the load time given, then "
            "every recording verified. The last two rows probe limits: outages longer than "
            "the services' own timeouts. "
            "*Loss* counts calls whose recording is missing, split into parts, incomplete or "
            "not sample-identical where the design promises it whole (for the ingest kill: "
            "calls on the surviving ingest, and the killed ingest's calls not archived as "
            "documented). *Recovery*: from the moment the fault was lifted to the system "
            "caught up (definition below).",
            "",
            markdown_table(MATRIX_HEAD, matrix_rows(matrix)),
            "",
            "Promises checked per scenario:",
            "",
        ]
        md += [f"- **{r['name']}**: {r['scenario']['promise']}." for r in matrix]
        md += [""]
        hostile = next((r for r in matrix if "hostile" in r), None)
        if hostile is not None:
            md += [
                "### Hostile clients",
                "",
                "Run beside the load against the same ingest, in 3 waves; each client "
                "checks the outcome docs/formats.md documents (bench/loadharness/hostile.py)."
                " Ingest ran with `CALLREC_INGEST_IDLE_TIMEOUT_S=8`.",
                "",
                markdown_table(["case", "clients", "as documented", "what they saw"],
                               hostile_rows(hostile)),
                "",
                "Ingest's own count of what it refused (`callrec_ingest_*` deltas): "
                f"invalid messages {json.dumps(hostile['ingest']['invalid'])}, close codes "
                f"{json.dumps(hostile['ingest']['close_codes'])}, connections "
                f"{json.dumps(hostile['ingest']['connections'])}.",
                "",
            ]
    if res["scale"]:
        ratio, flat = flatness(res["scale"])
        md += [
            "## Scale curve",
            "",
            f"Calls of {plan['scale_duration_s']:g} s through one ingest and one recorder "
            "(also in [benchmarks.md](benchmarks.md#scale-curve)):",
            "",
            markdown_table(SCALE_HEAD, scale_rows(res["scale"])),
            "",
            f"Per-call CPU, largest step over the smallest with fewer calls: {fmt(ratio)} "
            f"(never rises; target ≤ "
            f"{1 + FLAT_WITHIN:.2f}: {'met' if flat else 'not met'}).",
            "",
        ]
        md += _scale_remarks(res["scale"])
    md += [
        "## How it is measured",
        "",
        "- **Load**: `bench/loadharness/loadgen.py` processes (150 calls each) send, per "
        "call, one Wavix `both` connection: `connected`, `start`, every 20 ms the inbound "
        "and the outbound 20 ms L16/24000 frame, `stop`, normal close — the messages of "
        "`callrec simulate --layout both`, through websockets' sans-I/O protocol (~12 µs "
        "per message instead of ~38 µs for the asyncio client, which would take 1.5 of "
        "the 2 cores at 400 calls). Call *n* carries tests/data/stereo_diarization.wav "
        "looped and shifted by 7919 * *n* samples, so no two calls are alike.",
        "- **Verification** (`bench/loadharness/verify.py`): for each call, the manifests "
        "under `recordings/<call_id>-*/`: exactly one (part 0); a call that was sent to the "
        "end must be `complete` with both WAV channels byte-identical to the audio sent; a "
        "call cut by a fault must be incomplete with its reason and its channels "
        "byte-identical to the beginning of what was sent.",
        "- **CPU and memory**: `/proc/PID/stat` (utime + stime) and `/proc/PID/status` "
        "(VmRSS, VmHWM) of every process, sampled every 0.5 s.",
        "- **frame→Kafka**: `callrec_ingest_produce_latency_seconds` (a record handed to "
        "the publisher → its batch acknowledged with acks=all; one observation per batch), "
        "quantiles interpolated like PromQL `histogram_quantile`.",
        "- **stop→archive**: per recording, the manifest's S3 `LastModified` minus the last "
        "close time the ingest pod wrote (manifest custody `closes[].time`); it includes the "
        "recorder's grace period (`CALLREC_RECORDER_GRACE_MS`, 500 ms).",
        "- **Consumer lag**: `callrec_recorder_consumer_lag_records` summed over partitions "
        "and recorders.",
        "- **Recovery** (`bench/loadharness/run.py`): from the fault's end (process restarted,"
        " server back, or the drained process gone) to the later of (a) the first sample, "
        "at least 1 s after, where every ingest is ready and holds at most 0.5 s of audio "
        "not yet acknowledged, the senders owe at most one frame per call, every partition "
        "has a recorder whose summed lag is at most 0.5 s of records and that has read "
        "records since the previous sample, and (b) the archiving of every call that ended "
        "before the fault was lifted.",
        "- A killed recorder's partitions move to the restarted one only once the group "
        "session timeout (6 s) has expired: most of its recovery time.",
        "- Services run with their defaults, except: recorder "
        "`CALLREC_RECORDER_SESSION_TIMEOUT_MS=6000` (the broker's minimum: how soon a "
        "killed recorder's partitions move); ingest-drain: "
        "`CALLREC_INGEST_DRAIN_GRACE_S=60`; ingest-kill: "
        "`CALLREC_RECORDER_IDLE_TIMEOUT_S=5`; hostile: `CALLREC_INGEST_IDLE_TIMEOUT_S=8`; "
        "minio-past-idle: `CALLREC_RECORDER_IDLE_TIMEOUT_S=8`.",
        "",
    ]
    if res.get("errors"):
        md += ["## Runs that failed", "", *(f"- {e}" for e in res["errors"]), ""]
    if res.get("findings"):
        md += ["## Findings", "",
               "Measured by the runs above (bench/reliability.py `findings()` states each one "
               "only when the figures show it):", "", *res["findings"], ""]
    return "\n".join(md).rstrip("\n") + "\n"


def findings(matrix: list[dict[str, Any]]) -> list[str]:
    """Problems the runs measured that the loss figures do not show; only those observed."""
    out = []
    by_name = {r["name"]: r for r in matrix}
    broker, base = by_name.get("broker"), by_name.get("baseline")
    if broker and broker["faults"]:
        f = broker["faults"][0]
        during = f.get("ingest_cores_during") or 0.0
        normal = base["cpu_s"]["ingest"] / base["wall_s"] if base else math.nan
        errors = sum(v for k, v in broker.get("ingest_log_errors", {}).items()
                     if k.startswith("aiokafka"))
        seconds = f["end_t"] - f["start_t"]
        if during >= 0.5:
            out.append(
                f"- **Ingest spins a core while Kafka is away.** While the broker was down "
                f"the ingest process used {during:.2f} cores (baseline run, same load: "
                f"{fmt(normal)}) and logged {errors:,} aiokafka ERROR lines in {seconds:.0f} s "
                "(`Unable connect to node`, `Unable to update metadata`): aiokafka's sender "
                "forces a metadata update in a loop, without backoff, while a partition "
                "leader is unknown. No audio was lost, but every Kafka outage costs each "
                "ingest pod a core and floods its log.")
    long_outage = by_name.get("broker-45s")
    if long_outage and long_outage["problems"]:
        logs = long_outage.get("ingest_log_counts", {})
        codes = long_outage["close_codes_seen"]
        out.append(
            "- **A Kafka outage longer than ~30 s loses the live calls.** "
            f"With the broker away 45 s (defaults), the senders' close codes were {codes}: "
            "ingest stops "
            "reading the sockets (backpressure), so it cannot read the clients' pongs either, "
            "and websockets' keepalive (ping every 20 s, 20 s timeout) closes each stream "
            "with 1011 after 20-40 s. And aiokafka gives up the pending batches after its "
            "30 s request timeout (`LeaderNotAvailableError`); the publisher re-sends their "
            "records as new batches, which the idempotent producer numbers out of sequence, "
            "so the broker refuses them once it is back "
            f"({logs.get('OutOfOrderSequenceNumber', 0):,} `OutOfOrderSequenceNumber` "
            "re-sends) until `CALLREC_INGEST_PRODUCE_TIMEOUT_S` (120 s after their first "
            "send) gives them up — their audio is lost — and, each partition's batches going "
            "out in order, nothing queued behind them is acknowledged meanwhile, while "
            "`/readyz` answers 200. (Separately, after a 35 s outage: none of the records held "
            "during the outage was acknowledged once the broker was back; 14 batches were "
            "given up at the produce timeout; a call started after that went through.)")
    past_idle = by_name.get("minio-past-idle")
    if past_idle and past_idle["lost"]:
        lost = past_idle["lost"]
        short = [v for v in lost if v["frames_archived"] < v["frames_sent"]]
        skipped = past_idle["recorder"]["recordings"].get("already_archived", 0)
        out.append(
            f"- **An archive outage longer than the recorder's idle timeout cuts live calls "
            f"and drops their rest.** {len(lost)} of {past_idle['calls']} calls that were "
            "still streaming while MinIO was away (recorder idle timeout 8 s, outage 25 s) "
            "were archived incomplete, 'not closed (idle timeout)', with "
            f"{sum(v['frames_archived'] for v in short):,} of "
            f"{sum(v['frames_sent'] for v in short):,} frames: with its partitions paused "
            "the recorder reads nothing, its wall-clock idle rule ends the open recordings, "
            "and when it reads again the rest of each call forms a new recording of the same "
            f"first stream, which the archive takes for a replay ({skipped:.0f} recordings "
            "'already archived') and drops without a trace. With the default 60 s idle "
            "timeout the same happens to any S3 outage over a minute.")
    minio = by_name.get("minio")
    if minio and minio["faults"]:
        f = minio["faults"][0]
        lag, acked = f.get("lag_max_while_paused"), f.get("acked_while_paused") or 0
        if lag is not None and acked > 1000 and lag < 0.1 * acked:
            out.append(
                f"- **Recorder lag reads ~0 while its partitions are paused.** During the "
                f"MinIO outage the recorder kept its partitions paused for "
                f"{f['paused_s']:g} s, in which ingest appended {acked:,.0f} records it did "
                f"not read, yet `callrec_recorder_consumer_lag_records` showed at most "
                f"{lag:,.0f}: the gauge uses the high-water mark of the last fetch, which "
                "paused partitions do not refresh (`callrec_recorder_paused` = 1 does show "
                "the outage). No audio is lost; the lag figure (and the `CallrecRecorderLag` "
                "alert) is blind exactly while records pile up.")
    return out


def write_benchmarks(section: str) -> None:
    replace_section(BENCHMARKS_DOC, "## Scale curve", section)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.reliability",
                                description="Fault matrix and scale curve, end to end.")
    p.add_argument("--quick", action="store_true", help="10 calls per scenario, steps 10,50")
    p.add_argument("--write-docs", action="store_true",
                   help="write docs/reliability.md and the '## Scale curve' section of "
                   "docs/benchmarks.md")
    p.add_argument("--only", default="",
                   help="comma-separated: 'matrix', 'scale', or scenario names "
                   f"({', '.join(BY_NAME)})")
    p.add_argument("--steps", default="", help="scale steps, e.g. 10,100,400")
    p.add_argument("--calls", type=int, default=0, help="calls per fault scenario")
    p.add_argument("--recorders", type=int, default=1,
                   help="recorder processes in each scale step (default 1)")
    p.add_argument("--steady", action="store_true",
                   help="scale steps of sustained load: a step of N runs 2N calls started "
                   "evenly over twice the call length, N of them live at once")
    p.add_argument("--json", default="", help="also write every figure to this file")
    p.add_argument("--keep-tmp", action="store_true", help="keep logs and data of each run")
    p.add_argument("--render", default="", metavar="JSON",
                   help="only write the docs from a --json file of an earlier run")
    return p.parse_args(argv)


def write_docs(res: dict[str, Any]) -> None:
    RELIABILITY_DOC.write_text(render_reliability(res))
    log(f"wrote {RELIABILITY_DOC.relative_to(REPO)}")
    if res["scale"]:
        write_benchmarks(render_scale_section(res))
        log(f"updated {BENCHMARKS_DOC.relative_to(REPO)} (## Scale curve)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        saved["findings"] = findings(saved["matrix"])
        write_docs(saved)
        return 0
    plan = QUICK if args.quick else FULL
    if args.steps:
        plan.scale_steps = [int(x) for x in args.steps.split(",")]
    plan.scale_recorders = args.recorders
    plan.scale_steady = args.steady
    if args.steady and args.write_docs:
        print("--steady figures are not the scale curve's: not written to the docs",
              file=sys.stderr)
        return 2
    if args.calls:
        plan.matrix_calls = args.calls
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - {"matrix", "scale", *BY_NAME}
    if unknown:
        print(f"unknown --only: {sorted(unknown)}", file=sys.stderr)
        return 2
    scenarios = [s for s in MATRIX
                 if not only or "matrix" in only or s.name in only]
    do_scale = not only or "scale" in only
    load = os.getloadavg()
    if load[0] > 1.5:
        log(f"warning: load average {load[0]:.2f}: other work shares these cores, and every "
            "figure will show it")
    command = " ".join(["python -m bench.reliability", *(argv if argv is not None
                                                          else sys.argv[1:])])
    res: dict[str, Any] = {
        "command": ".venv/bin/" + command,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_facts(), "loadavg": " ".join(f"{x:.2f}" for x in load),
        "plan": plan.__dict__, "matrix": [], "scale": [], "errors": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="callrec-reliability-"))
    started = time.monotonic()
    try:
        # The scale curve first: it is the figure most sensitive to other work on the cores.
        if do_scale:
            for calls in plan.scale_steps:
                try:
                    res["scale"].append(run_scale_step(calls, plan, workdir, args.keep_tmp))
                except Exception as exc:
                    log(f"    ERROR: {exc!r}")
                    res["errors"].append(f"scale {calls}: {exc!r}")
        for scenario in scenarios:
            try:
                res["matrix"].append(run_scenario(scenario, plan.matrix_calls,
                                                  plan.matrix_duration_s, plan.matrix_ramp_s,
                                                  workdir, args.keep_tmp))
            except Exception as exc:  # one broken run must not hide the others' figures
                log(f"    ERROR: {exc!r}")
                res["errors"].append(f"{scenario.name}: {exc!r}")
    finally:
        if args.keep_tmp:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    log(f"done in {time.monotonic() - started:.0f} s")
    res["findings"] = findings(res["matrix"])
    if res["matrix"]:
        print("\nFault matrix\n")
        print(text_table(MATRIX_HEAD, matrix_rows(res["matrix"])))
    if res["scale"]:
        print("\nScale curve\n")
        print(text_table(SCALE_HEAD, scale_rows(res["scale"])))
        ratio, _ = flatness(res["scale"])
        print(f"\nper-call CPU rise (largest step / smallest with fewer calls): {fmt(ratio)} "
              f"(target <= {1 + FLAT_WITHIN:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    if args.write_docs:
        write_docs(res)
    for error in res["errors"]:
        print(f"run failed: {error}")
    broken = [r["name"] for r in [*res["matrix"], *res["scale"]] if r["problems"]]
    return 1 if broken or res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
