"""Ingest benchmark: ``callrec ingest`` against a bare websockets server.

One command::

    .venv/bin/python -m bench.ingest_bench [--quick] [--write-docs]

It installs/starts a real single-node Kafka (deploy/local/stack.py, temp dir, free
ports) and runs four stages, every server and the load generator in its own process:

1. **Throughput.** The same load (C connections x M media messages, as fast as
   TCP takes them) against (a) a bare ``websockets`` drain server that only
   counts messages and (b) ``callrec ingest`` publishing to Kafka (``acks=all``).
   (a) msg/s = messages the server counted / (last receive - first send);
   (b) msg/s = records Kafka acknowledged / (last ack - first send), the last ack
   being the broker's ``LogAppendTime`` of the newest record (the topic is made
   with ``message.timestamp.type=LogAppendTime``). Target: (b)/(a) >= 0.6.
   One (b) flood before the counted runs warms the fresh broker up.
2. **Latency at half load.** (b) at 50 % of its measured msg/s, paced, for a
   while; p99 of ``callrec_ingest_produce_latency_seconds`` interpolated like
   PromQL ``histogram_quantile``. Target <= 25 ms. Cross-check: per-record
   ``LogAppendTime - received_ns`` read back from Kafka.
3. **RSS per open stream.** VmRSS of a fresh ingest with 0 streams, then with
   K/2 and K streams open (each sent ``connected`` + ``start`` and one media a
   second). Target (RSS_K - RSS_0) / K <= 64 KiB.
4. **Real-time two-track calls.** N calls, one ``both`` connection each sending
   an inbound and an outbound 20 ms frame every 20 ms (100 msg/s per call), on a
   real-time schedule; N ramps up. A step passes when every chunk sent is in
   Kafka (read back and checked per call/track/chunk), every stream was closed
   with ``stop``, the sender never fell more than 200 ms behind its schedule,
   ingest read every frame within 200 ms of its due time and the produce p99 is
   <= 25 ms. Target: the largest passing N >= 400.

The load generator writes pre-framed WebSocket messages on raw asyncio
transports (the JSON of each message is a template with the base64 payload
computed once; client frames use an all-zero mask key, which a server unmasks
like any other), so it costs as little CPU as possible: it shares the machine's
cores with the server under test and Kafka.

Hidden sub-commands run the other processes: ``_drain`` (the bare server) and
``_loadgen`` (the load generator, config as JSON in argv, result as JSON on the
last stdout line).

Its parts are in bench/ingestbench/ (frames, load generator, drain server, servers
under test, stages, report), on the shared harness of bench/harness/; its figures
go to docs/benchmarks.md ("## Ingest").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness.procs import Children, log, raise_nofile
from bench.harness.report import git_version, text_table
from bench.ingestbench import servers
from bench.ingestbench.drain import drain_main, drain_picows_main
from bench.ingestbench.loadgen import loadgen_main
from bench.ingestbench.plan import FULL, QUICK
from bench.ingestbench.report import (
    TABLE_HEAD,
    render_details,
    render_markdown,
    summarize,
    write_docs,
)
from bench.ingestbench.stages import (
    stage_drain,
    stage_half_load,
    stage_ingest_flood,
    stage_realtime_ramp,
    stage_rss,
)

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"



def run(args: argparse.Namespace) -> int:
    from deploy.local import stack

    # Our own handler (not asyncio.run's, which only cancels its task, and a library
    # may swallow that): Ctrl-C or SIGTERM always ends the run, children stopped.
    signal.signal(signal.SIGINT, servers.on_signal)
    signal.signal(signal.SIGTERM, servers.on_signal)

    servers.ingest_cmd = args.ingest_cmd
    plan = QUICK if args.quick else FULL
    if args.repeat:
        plan.repeat = args.repeat
    if args.calls:
        plan.rt_steps = [int(x) for x in args.calls.split(",")]
    raise_nofile()
    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="callrec-ingest-bench-"))
    kafka = None
    res: dict[str, Any] = {"quick": args.quick, "plan": plan.__dict__,
                           "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                           "version": git_version()}
    try:
        stack.install(kafka=True, minio=False)
        kafka = stack.KafkaServer(tmp / "kafka")
        log("starting Kafka")
        kafka.start()
        res["drain"], res["ingest"] = [], []
        # A fresh broker (C1-compiled, its log segments new) takes the first flood slower:
        # the three (b) runs of one bench measured 82.0k, 91.7k and 99.7k msg/s in that
        # order against a steady (a). One uncounted flood first measures ingest, not
        # Kafka's first seconds.
        log("warm-up: one (b) flood into the fresh broker, not counted")
        warm = stage_ingest_flood(children, kafka, tmp, plan, plan.repeat)
        res["warmup_msg_s"] = warm["msg_s"]
        log(f"  warm-up {warm['msg_s']:,.0f} msg/s")
        for i in range(plan.repeat):
            log(f"throughput run {i + 1}/{plan.repeat}: (a) bare websockets drain server")
            res["drain"].append(stage_drain(children, tmp, plan, i))
            log(f"  (a) {res['drain'][-1]['msg_s']:,.0f} msg/s")
            log(f"throughput run {i + 1}/{plan.repeat}: (b) callrec ingest -> Kafka")
            res["ingest"].append(stage_ingest_flood(children, kafka, tmp, plan, i))
            log(f"  (b) {res['ingest'][-1]['msg_s']:,.0f} msg/s")
        rate = statistics.median(r["msg_s"] for r in res["ingest"])
        res["half_runs"] = []
        for i in range(plan.repeat):
            log(f"half load run {i + 1}/{plan.repeat}: {rate / 2:,.0f} msg/s for "
                f"{plan.half_load_s:g}s")
            res["half_runs"].append(stage_half_load(children, kafka, tmp, plan, rate / 2))
            log(f"  p99 {res['half_runs'][-1]['p99_ms']:.2f} ms")
        by_p99 = sorted(res["half_runs"], key=lambda h: float(h["p99_ms"]))
        res["half"] = by_p99[len(by_p99) // 2]  # the median run
        log(f"RSS with 0, {plan.rss_streams // 2}, {plan.rss_streams} open streams")
        res["rss"] = stage_rss(children, kafka, tmp, plan)
        log(f"  {res['rss']['per_stream_kib']:.1f} KiB per stream")
        res["realtime"] = stage_realtime_ramp(children, kafka, tmp, plan)
    finally:
        children.stop_all()
        if kafka is not None:
            kafka.stop()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = summarize(res)
    print()
    print(text_table(TABLE_HEAD, rows))
    print()
    print(render_details(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    if args.write_docs:
        docs = Path(args.docs) if args.docs else DOCS
        write_docs(render_markdown(res, rows), docs)
        log(f"updated {docs}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest_bench",
        description="callrec ingest vs a bare websockets server; real Kafka "
        "(targets: bench/README.md).",
    )
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds per stage (smoke test)")
    parser.add_argument("--write-docs", action="store_true",
                        help="replace the '## Ingest' section of docs/benchmarks.md")
    parser.add_argument("--docs", default="", help=argparse.SUPPRESS)  # another file (tests)
    parser.add_argument("--repeat", type=int, default=0,
                        help="throughput runs (median reported); default 3, 1 with --quick")
    parser.add_argument("--calls", default="",
                        help="comma-separated real-time call counts to ramp through")
    parser.add_argument("--json", default="", help="also write every figure to this file")
    parser.add_argument("--ingest-cmd", default="",
                        help="command run as (b) instead of `.venv/bin/callrec ingest` "
                        "(same CALLREC_* environment; must print the port line)")
    parser.add_argument("--keep-tmp", action="store_true",
                        help="keep the temp dir (Kafka data, ingest logs)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_drain"]:
        drain_picows_main() if argv[1:] == ["picows"] else drain_main()
        return 0
    if argv[:1] == ["_loadgen"]:
        loadgen_main(json.loads(argv[1]))
        return 0
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        log("interrupted; every process it started is stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
