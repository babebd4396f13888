"""The reliability benchmark's results as table rows: the scale curve, the fault matrix,
the hostile clients (bench/reliability.py prints them and writes docs/reliability.md).
"""

from __future__ import annotations

import math
import re
from typing import Any

from bench.harness.report import fmt

FLAT_WITHIN = 0.20
"""Target (DESIGN: per-call CPU never rises with the number of calls): no step's per-call
CPU above 1.2x the smallest of the steps with fewer calls (20 % for the VM's noise)."""


def scale_rows(steps: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in steps:
        w = r["wall_s"]
        busy = sum(r["cpu_s"].values()) + r["loadgen_cpu_s"]
        rows.append([
            str(r["calls"]),
            f"{r['verified_ok']}/{r['calls']}" + ("" if not r["problems"] else " **LOSS**"),
            fmt(r["per_call_cpu_net_pct"], 3),
            fmt(r["per_call_cpu_pct_by_service"]["ingest"], 3),
            fmt(r["per_call_cpu_pct_by_service"]["recorder"], 3),
            fmt(r["per_call_cpu_pct"], 3),
            f"{fmt(r['frame_to_kafka_ms']['p50'], 1)} / {fmt(r['frame_to_kafka_ms']['p99'], 1)}",
            f"{fmt(r['stop_to_archive_s']['p50'])} / {fmt(r['stop_to_archive_s']['p99'])}",
            fmt(r["ingest"]["records"] / max(1.0, r["frame_to_kafka_ms"]["batches"]), 1),
            fmt(r["lag_max"], 0),
            f"{fmt(r['sender_late_ms']['p99'], 0)} / {fmt(r['sender_late_ms']['max'], 0)}",
            f"{fmt(r['hwm_mib']['ingest'], 0)} / {fmt(r['hwm_mib']['recorder'], 0)}",
            fmt(busy / w, 2),
        ])
    return rows


SCALE_HEAD = ["calls", "verified", "per-call CPU % (net)", "ingest %", "recorder %",
              "per-call CPU % (raw)", "frame→Kafka p50 / p99 ms",
              "stop→archive p50 / p99 s", "records per Kafka batch", "max lag (records)",
              "sender late p99 / max ms", "peak RSS ingest / recorder MiB",
              "avg cores busy (all processes)"]


def flatness(steps: list[dict[str, Any]]) -> tuple[float, bool]:
    """(largest rise of per-call CPU: a step's over the smallest of the steps with fewer
    calls, within the target?). Below 1: it only fell as calls were added."""
    values = [r["per_call_cpu_net_pct"]
              for r in sorted(steps, key=lambda r: r["calls"]) if r["per_call_cpu_net_pct"] > 0]
    if len(values) < 2:
        return math.nan, False
    rise = max(values[i] / min(values[:i]) for i in range(1, len(values)))
    return rise, rise <= 1 + FLAT_WITHIN


def matrix_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        faults = r["faults"]
        recovery = "; ".join(
            f"{fmt(f['recovery_s'])} s" if f.get("recovered") else "not recovered"
            for f in faults) or "—"
        calls_hit = {p.split(":")[0] for p in r["problems"] if p.startswith(r["name"] + "-")}
        others = [p for p in r["problems"] if not p.startswith(r["name"] + "-")]
        lost = f"**{len(calls_hit)}**" if calls_hit else ("0" if not others else "0*")
        rows.append([
            r["name"], r["scenario"]["title"],
            f"{r['calls']} x {r['config']['duration_s']:g} s",
            (f"{r['verified_ok']}/{r['calls']}" if r["name"] == "ingest-kill"
             else f"{r['verified_ok'] - len(r['cut'])}/{r['calls']}"),
            lost,
            recovery,
            fmt(r["stop_to_archive_s"]["p99"]),
            _notes(r),
        ])
    return rows


MATRIX_HEAD = ["scenario", "fault", "calls", "kept as promised", "loss",
               "recovery", "stop→archive p99 s", "what happened"]


def _notes(r: dict[str, Any]) -> str:
    notes = []
    ing, rec = r["ingest"], r["recorder"]
    for f in r["faults"]:
        if "drain_s" in f:
            flip = (f" {f['not_ready_after_ms']} ms after SIGTERM"
                    if "not_ready_after_ms" in f else "")
            notes.append(f"drained in {f['drain_s']} s (exit {f['exit_code']}); while "
                         f"draining /readyz {f['readyz_while_draining']}{flip}, upgrade "
                         f"{f['upgrade_while_draining']}; replacement ready in "
                         f"{f['replacement_ready_s']} s")
        if "archived_after_s" in f and f.get("ended_before"):
            notes.append(f"{f['ended_before']} calls ended before the fault was lifted, all "
                         f"archived {f['archived_after_s']} s after")
    if r["cut"]:
        lost_frames = sum(v["frames_sent"] - v["frames_archived"] for v in r["cut"])
        codes = ", ".join(f"{n} x {'no close frame' if c == 'None' else c}"
                          for c, n in r.get("close_codes_seen", {}).items()
                          if not c.startswith("1000"))
        where = "on the killed ingest" if r["name"] == "ingest-kill" else "cut by the fault"
        notes.append(f"{len(r['cut'])} calls {where} (senders saw: {codes or 'no close'}) "
                     f"archived incomplete ('{_reason(r['cut'][0]['reason'])}'), audio up to "
                     f"the cut sample-identical; {lost_frames:,} frames sent after the cut "
                     "never reached the archive")
    if rec["recordings"].get("already_archived"):
        notes.append(f"{rec['recordings']['already_archived']:.0f} recordings skipped as "
                     "already archived")
    if rec["s3_errors"]:
        notes.append(f"{rec['s3_errors']:.0f} failed archive attempts retried")
    if ing["produce_retries"] or ing["produce_failures"]:
        notes.append(f"produce retries {ing['produce_retries']:.0f}, failures "
                     f"{ing['produce_failures']:.0f}")
    if ing["backpressure_s"]:
        notes.append(f"backpressure {ing['backpressure_s']} s")
    if r["name"] == "broker":
        notes.append(f"frame→Kafka p99 {fmt(r['frame_to_kafka_ms']['p99'] / 1000, 1)} s "
                     f"(ingest held the audio), max lag {fmt(r['lag_max'], 0)}")
    if "hostile" in r:
        ok = sum(c["as_documented"] for c in r["hostile"].values())
        total = sum(c["clients"] for c in r["hostile"].values())
        notes.append(f"{ok}/{total} hostile clients got the documented outcome")
    if r["problems"]:
        notes.append("problems: " + "; ".join(_reason(p) for p in r["problems"][:3])
                     + (f" (and {len(r['problems']) - 3} more)" if len(r["problems"]) > 3
                        else ""))
    return "; ".join(notes) or "—"


def _reason(text: str) -> str:
    return re.sub(r"stream [0-9a-f-]+: ", "", text)


def hostile_rows(r: dict[str, Any]) -> list[list[str]]:
    return [[case, str(c["clients"]), str(c["as_documented"]), "; ".join(c["seen"])]
            for case, c in sorted(r["hostile"].items())]
