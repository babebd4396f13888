"""The ingest benchmark's figures: the summary table, the details, its docs section.

:func:`render_markdown` writes the "## Ingest" section of docs/benchmarks.md; the
other sections belong to other benchmarks and are kept (bench/harness/report.py).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness.report import cpu_model, fmt, git_version, replace_section
from bench.ingestbench.plan import (
    MAX_E2E_P99_MS,
    MAX_LATE_MS,
    RERUN_OTHER_PCT,
    TARGET_CALLS,
    TARGET_P99_MS,
    TARGET_RATIO,
    TARGET_RSS_KIB,
)

TABLE_HEAD = ("figure", "value", "target", "met")


def summarize(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, met) rows."""
    a = statistics.median(r["msg_s"] for r in res["drain"])
    b = statistics.median(r["msg_s"] for r in res["ingest"])
    ratio = b / a
    half, rss, rt = res["half"], res["rss"], res["realtime"]
    passed = [s["calls"] for s in rt if s["passed"]]
    best = max(passed, default=0)
    return [
        ("(a) bare websockets drain, msg/s", fmt(a, 0), "", ""),
        ("(b) callrec ingest -> Kafka acks=all, msg/s", fmt(b, 0), "", ""),
        ("ratio (b)/(a)", fmt(ratio, 3), f">= {TARGET_RATIO}",
         "yes" if ratio >= TARGET_RATIO else "NO"),
        (f"p99 frame->ack at half load ({fmt(half['rate_sent'], 0)} msg/s), ms",
         fmt(half["p99_ms"], 2), f"<= {TARGET_P99_MS:g}",
         "yes" if half["p99_ms"] <= TARGET_P99_MS else "NO"),
        ("RSS per open stream, KiB", fmt(rss["per_stream_kib"], 1), f"<= {TARGET_RSS_KIB:g}",
         "yes" if rss["per_stream_kib"] <= TARGET_RSS_KIB else "NO"),
        ("real-time two-track calls, zero loss", f"{best}" + (
            f" (tried up to {max(s['calls'] for s in rt)})" if rt else ""),
         f">= {TARGET_CALLS}", "yes" if best >= TARGET_CALLS else "NO"),
    ]


def render_details(res: dict[str, Any]) -> str:
    out = []
    out.append("Throughput runs (C x M = "
               f"{res['plan']['conns']} x {res['plan']['media']} media per run):")
    for i, (a, b) in enumerate(zip(res["drain"], res["ingest"], strict=True)):
        out.append(
            f"  run {i + 1}: (a) {a['msg_s']:,.0f} msg/s ({a['messages']}/{a['expected']} msgs, "
            f"{a['seconds']:.2f}s, server CPU {a['server_cpu_s']:.2f}s = "
            f"{1e6 * a['server_cpu_s'] / a['messages']:.1f} us/msg, loadgen CPU "
            f"{a['loadgen_cpu_s']:.2f}s, other processes {a['other_pct']:.0f}%)\n"
            f"         (b) {b['msg_s']:,.0f} msg/s "
            f"({b['records']:.0f}/{b['expected']} acked, {b['in_topic']} in topic, "
            f"{b['seconds']:.2f}s, ingest CPU {b['ingest_cpu_s']:.2f}s = "
            f"{1e6 * b['ingest_cpu_s'] / b['expected']:.1f} us/msg, Kafka CPU "
            f"{b['kafka_cpu_s']:.2f}s, loadgen CPU {b['loadgen_cpu_s']:.2f}s, "
            f"{b['records_per_batch']:.0f} records/batch, produce p99 {b['p99_ms']:.0f} ms "
            f"(saturated: backpressure), other processes {b['other_pct']:.0f}%)")
    h = res["half"]
    if len(res.get("half_runs", [])) > 1:
        out.append("Half load, p99 of each run (ms): " + ", ".join(
            f"{r['p99_ms']:.2f} (other processes {r['other_pct']:.0f}%)"
            for r in res["half_runs"]) + "; the median run:")
    out.append(
        f"Half load: {h['rate_sent']:,.0f} msg/s for {h['seconds']:.1f}s; produce latency "
        f"(per batch, histogram) p50 {h['p50_ms']:.2f} ms, p99 {h['p99_ms']:.2f} ms over "
        f"{h['batches']:.0f} batches (mean {h['mean_batch_ms']:.2f} ms); per record "
        f"LogAppendTime - received_ns p50 {h['record_p50_ms']:.1f} ms, p99 "
        f"{h['record_p99_ms']:.1f} ms (1 ms resolution); CPU ingest "
        f"{h['ingest_cpu_pct']:.0f}%, Kafka {h['kafka_cpu_pct']:.0f}%, loadgen "
        f"{h['loadgen_cpu_pct']:.0f}%, other processes {h['other_pct']:.0f}%; "
        f"{h['records_per_batch']:.1f} records/batch; sender max lateness "
        f"{h['sender_late_max_ms']:.1f} ms; {h['records']:.0f}/{h['expected']:.0f} records acked")
    r = res["rss"]
    out.append(
        f"RSS: {', '.join(f'{n} streams {v / 1024:.1f} MiB' for n, v in r['rss_kib'].items())}"
        f"; per stream {r['per_stream_kib']:.1f} KiB (0 -> {r['streams']}), slope "
        f"{r['slope_kib']:.1f} KiB ({r['streams'] // 2} -> {r['streams']})")
    out.append("Real-time two-track calls (one `both` connection per call, 100 msg/s each):")
    for s in res["realtime"]:
        out.append(
            f"  {s['calls']:4d} calls: {'PASS' if s['passed'] else 'FAIL'}"
            f"{' (re-run)' if s.get('attempt', 1) == 2 else ''} - "
            f"{s['msg_s']:,.0f} msg/s for {s['seconds']:.1f}s, missing {s['missing']}, "
            f"short sends {s['short_sends']}, dups {s['duplicates']}, closes {s['closes']}, "
            f"sender late max {s['sender_late_max_ms']:.0f} ms (p99 "
            f"{s['sender_late_p99_ms']:.0f}), ingest read lag max {s['read_lag_max_ms']:.0f} ms "
            f"(p99 {s['read_lag_p99_ms']:.0f}), schedule->Kafka p99 {s['e2e_p99_ms']:.0f} ms, "
            f"produce p99 {s['produce_p99_ms']:.1f} ms, {s['records_per_batch']:.1f} "
            f"records/batch, CPU ingest {s['ingest_cpu_pct']:.0f}% "
            f"({s['ingest_us_per_msg']:.0f} us/msg; bare picows server {s['bare_cpu_pct']:.0f}%, "
            f"{s['bare_us_per_msg']:.0f} us/msg) Kafka {s['kafka_cpu_pct']:.0f}% loadgen "
            f"{s['loadgen_cpu_pct']:.0f}% other processes {s['other_pct']:.0f}%")
    return "\n".join(out)




def render_markdown(res: dict[str, Any], rows: Sequence[tuple[str, str, str, str]]) -> str:
    date = datetime.date.today().isoformat()
    cmd = ".venv/bin/python -m bench.ingest_bench" + (" --quick" if res["quick"] else "")
    drain_us = statistics.median(1e6 * a["server_cpu_s"] / a["messages"] for a in res["drain"])
    ingest_us = statistics.median(1e6 * b["ingest_cpu_s"] / b["expected"] for b in res["ingest"])
    kafka_us = statistics.median(1e6 * b["kafka_cpu_s"] / b["expected"] for b in res["ingest"])
    passing = [st for st in res["realtime"] if st["passed"]]
    best = max(passing, key=lambda st: int(st["calls"])) if passing else None
    others = [a["other_pct"] for a in res["drain"]] + [b["other_pct"] for b in res["ingest"]]
    others += [h["other_pct"] for h in res.get("half_runs", [res["half"]])]
    others += [st["other_pct"] for st in res["realtime"]]
    md = [
        "## Ingest",
        "",
        f"Measured {date} with `{cmd} --write-docs` (bench/ingest_bench.py, explained in "
        f"bench/README.md) at {res.get('version') or git_version()}, on "
        f"{os.cpu_count()} cores ({cpu_model()}), "
        f"Python {platform.python_version()}; load average before the run {res['loadavg']}.",
        "",
        "Kafka is the local single-node broker of deploy/local/stack.py; ingest is "
        "`callrec ingest` with its default settings. **The load generator, ingest and Kafka "
        f"share the same {os.cpu_count()} cores** (and this machine is shared with other "
        "work: other processes used between "
        f"{min(others):.0f}% and {max(others):.0f}% of a core during the stages), so every "
        "figure is lower than ingest would reach with cores of its own; (a) and (b) run "
        "under the same load generator.",
        "",
        "| figure | value | target | met |",
        "|---|---|---|---|",
    ]
    md += [f"| {f} | {v} | {t} | {m} |" for f, v, t, m in rows]
    md += [
        "",
        f"CPU per message in the throughput runs (median): bare server {drain_us:.1f} us, "
        f"ingest {ingest_us:.1f} us ({ingest_us / drain_us:.1f}x), plus Kafka broker "
        f"{kafka_us:.1f} us. Ingest runs on one core (one asyncio loop), so its msg/s is "
        "about 1 / its CPU per message.",
    ]
    if best is not None:
        md += [
            "",
            f"At {best['calls']} real-time calls ({best['msg_s']:,.0f} msg/s) ingest used "
            f"{best['ingest_cpu_pct']:.0f}% of a core, {best['ingest_us_per_msg']:.0f} us per "
            "message (each connection wakes ingest for 2 messages every 20 ms, and Kafka "
            f"batches held {best['records_per_batch']:.1f} records on average), Kafka "
            f"{best['kafka_cpu_pct']:.0f}% and the load generator "
            f"{best['loadgen_cpu_pct']:.0f}%.",
        ]
    lossless = [st for st in res["realtime"] if st["zero_loss"]]
    failed = [st for st in res["realtime"] if not st["passed"]]
    if failed and len(lossless) == len(res["realtime"]):
        md += [
            "",
            "No real-time step lost a chunk (every one up to "
            f"{max(int(st['calls']) for st in lossless)} calls had every chunk in Kafka and "
            "closed with `stop`): the failing steps failed on lag (ingest reading late, "
            "produce latency over the target), since ingest applies backpressure rather "
            "than dropping.",
        ]
    md += ["", "Details:", "", "```", render_details(res), "```", ""]
    md += [
        "How each figure is taken:",
        "",
        "- msg/s: (a) messages the bare server counted / (its last receive - first send); "
        "(b) messages Kafka acknowledged (start, media and close; media counted per frame by "
        "`callrec_ingest_published_frames_total`, as a record may carry a window of them) / "
        "(broker LogAppendTime of the newest record - first send). "
        f"{res['plan']['conns']} connections x {res['plan']['media']} media messages, "
        "median of the runs, after one (b) run into the fresh broker that is not counted "
        "(its first seconds are slower)"
        + (f": {res['warmup_msg_s']:,.0f} msg/s in this one." if "warmup_msg_s" in res
           else "."),
        "- p99 frame->ack: `callrec_ingest_produce_latency_seconds` (from a record handed to "
        "the publisher to its batch's acks=all acknowledgement; one observation per batch) "
        "interpolated like PromQL `histogram_quantile`, at 50 % of (b)'s msg/s paced over "
        f"{res['plan']['conns']} connections for {res['plan']['half_load_s']:g} s; median "
        "of the runs. The per-record cross-check is Kafka's LogAppendTime minus the "
        "record's `received_ns` (1 ms resolution).",
        "- RSS per stream: (VmRSS with K streams - VmRSS with none) / K, after a warm-up; "
        "each stream sent `connected`, `start` and one media message a second.",
        "- Real-time calls: one `both` connection per call, an inbound and an outbound "
        f"20 ms frame every 20 ms, for {res['plan']['rt_seconds']:g} s. A step passes when "
        "every chunk the sender wrote is in Kafka (read back, per call/track/chunk), all "
        f"streams closed with `stop`, the sender was never more than {MAX_LATE_MS:g} ms "
        f"behind schedule, ingest read every frame within {MAX_LATE_MS:g} ms of its due "
        f"time (`received_ns`), and the p99 frame was in Kafka (LogAppendTime) within "
        f"{MAX_E2E_P99_MS:g} ms of its due time: nothing lost, and ingest keeps up with real "
        "time. The produce latency of each step is reported; its target is the half-load "
        "figure above. The same load then runs against a bare drain server on ingest's "
        "WebSocket stack (picows; `_drain picows`): its CPU per message is what receiving "
        "alone costs at that load. The ramp stops at "
        "the first failing step, then bisects between the last passing and the first "
        "failing count; a step that failed while other processes used more than "
        f"{RERUN_OTHER_PCT:g}% of a core is run once more (both attempts listed).",
        "- other processes: CPU the whole machine used (/proc/stat) minus that of the "
        "benchmark's own processes, during the stage.",
        "",
    ]
    return "\n".join(md)


def write_docs(section: str, docs: Path) -> None:
    """Replace (or add) the ``## Ingest`` section of ``docs``; other sections are kept."""
    replace_section(docs, "## Ingest", section)
