"""Control plane benchmark: event -> stream start latency, and webhook events/s per pod.

    python -m bench.control_bench [--quick] [--write-docs]

Starts its own Kafka (deploy/local/stack.py) and runs ``callrec control`` as its own
process; the Wavix emulator's REST API and the load generator run in this process.
Each figure is set against a baseline measured in the same run:

1. latency: calls arrive at ``--rate`` per second; for each, the ``answered`` webhook is
   posted at t0 and the emulator notes when the stream start request arrives (t1), so
   Wavix's own answer time is excluded. p50/p99 of t1 - t0 (target p99 <= 300 ms),
   against a bare Kafka round trip (one record produced with acks=all and consumed by
   a group member, at the same rate): the floor of any design that makes the event
   durable in Kafka before acting on it.
2. throughput: webhook events/s one control process (``CALLREC_CONTROL_ROLE=api``)
   accepts with 200 (each durable in Kafka), against the same Starlette/uvicorn stack
   answering 200 without parsing or Kafka, under the same load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.harness.procs import log as harness_log
from bench.harness.report import machine, markdown_table, replace_section
from bench.harness.topics import create_topics
from callrec.emulator.calls import EmulatedCall
from callrec.emulator.gateway import LiveCall
from callrec.emulator.webhook import WavixEmulator
from deploy.local import stack
from schemas import callevents
from schemas.callevents import CallEvent

REPO = Path(__file__).resolve().parents[1]
SECRET = "b" * 40
API_KEY = "bench-key"
BARE_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def ok(request):
    await request.body()
    return PlainTextResponse("ok\\n")

app = Starlette(routes=[Route("/v1/wavix/events/{secret}", ok, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, server_header=False)
"""


def log(msg: str) -> None:
    harness_log(msg, prefix="control-bench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_http(url: str, within_s: float = 60) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(within_s):
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)


async def start_control(
    kafka: stack.KafkaServer,
    tmp: Path,
    topics: dict[str, str],
    port: int,
    wavix_url: str,
    role: str,
) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env.update(
        {
            "CALLREC_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "CALLREC_KAFKA_MEDIA_TOPIC": topics["media"],
            "CALLREC_KAFKA_CALLS_TOPIC": topics["calls"],
            "CALLREC_KAFKA_CONTROL_TOPIC": topics["control"],
            "CALLREC_ARCHIVE_URI": str(tmp / "archive"),
            "CALLREC_CONTROL_HOST": "127.0.0.1",
            "CALLREC_CONTROL_PORT": str(port),
            "CALLREC_CONTROL_ROLE": role,
            "CALLREC_CONTROL_WEBHOOK_SECRET": SECRET,
            "CALLREC_CONTROL_GROUP_ID": f"bench-{uuid.uuid4().hex[:6]}",
            "CALLREC_STREAM_TOKEN_KEYS": "k1:0123456789abcdef0123456789abcdef",
            "CALLREC_WAVIX_API_URL": wavix_url,
            "CALLREC_WAVIX_API_KEY": API_KEY,
            "CALLREC_LOG_LEVEL": "WARNING",
        }
    )
    (tmp / "archive").mkdir(exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callrec.cli",
        "control",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await wait_http(f"http://127.0.0.1:{port}/readyz")
    return proc


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        await proc.wait()


async def new_topics(kafka: stack.KafkaServer) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    topics = {n: f"bench.{n}.{suffix}" for n in ("media", "calls", "control")}
    await create_topics(kafka.bootstrap, dict.fromkeys(topics.values(), 12))
    return topics


# -- 1. latency ------------------------------------------------------------------------


async def stage_latency(
    kafka: stack.KafkaServer, tmp: Path, rate: float, seconds: float
) -> dict[str, Any]:
    topics = await new_topics(kafka)
    port = free_port()
    webhook = f"http://127.0.0.1:{port}/v1/wavix/events/{SECRET}"
    emulator = WavixEmulator(api_key=API_KEY, webhook_url=webhook)
    emulator.rest.open_streams = False
    await emulator.start()
    proc = await start_control(kafka, tmp, topics, port, emulator.api_url, "all")
    sent: dict[str, int] = {}
    count = int(rate * seconds)
    warmup = min(50, count // 5)
    try:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as client:
            tasks = []
            began = time.perf_counter()
            for i in range(count):
                delay = began + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                call = EmulatedCall(
                    call_id=f"bench-{i:06d}", from_number="+4420", to_number="+1555"
                )
                emulator.calls[call.call_id] = LiveCall(call)
                body = callevents.encode(
                    CallEvent(
                        call_id=call.call_id,
                        event_type="answered",
                        from_number="+4420",
                        to_number="+1555",
                    )
                )
                sent[call.call_id] = time.time_ns()
                tasks.append(asyncio.create_task(client.post(webhook, content=body)))
            statuses = [r.status_code for r in await asyncio.gather(*tasks)]
        async with asyncio.timeout(120):
            while len(emulator.rest.start_requests) < count:  # noqa: ASYNC110 (a list)
                await asyncio.sleep(0.1)
    finally:
        await stop(proc)
        await emulator.close()
    latencies = [
        (t1 - sent[c]) / 1e6
        for c, t1 in emulator.rest.start_requests
        if int(c.split("-")[1]) >= warmup
    ]
    baseline = await kafka_round_trip(kafka, rate, seconds)
    return {
        "calls": count,
        "rate": rate,
        "non_200": sum(1 for s in statuses if s != 200),
        "p50_ms": statistics.median(latencies),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": max(latencies),
        "kafka_p50_ms": statistics.median(baseline),
        "kafka_p99_ms": pct(baseline, 0.99),
    }


async def kafka_round_trip(kafka: stack.KafkaServer, rate: float, seconds: float) -> list[float]:
    """Latency of one record produced (acks=all) and consumed by a group member."""
    topic = f"bench.rtt.{uuid.uuid4().hex[:8]}"
    await create_topics(kafka.bootstrap, {topic: 12})
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=f"rtt-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    count = int(rate * seconds)
    latencies: list[float] = []
    try:
        await consumer.getmany(timeout_ms=1000)  # joined, assigned

        async def consume() -> None:
            while len(latencies) < count:
                for messages in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.time_ns()
                    latencies.extend((now - int(m.value)) / 1e6 for m in messages)

        reader = asyncio.create_task(consume())
        began = time.perf_counter()
        sends = []
        for i in range(count):
            delay = began + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sends.append(
                asyncio.create_task(
                    producer.send_and_wait(
                        topic, str(time.time_ns()).encode(), key=f"c{i}".encode()
                    )
                )
            )
        await asyncio.gather(*sends)
        async with asyncio.timeout(60):
            await reader
    finally:
        await consumer.stop()
        await producer.stop()
    return latencies[min(50, count // 5) :]


# -- 2. throughput ---------------------------------------------------------------------


async def blast(url: str, seconds: float, concurrency: int) -> tuple[float, int]:
    """Events/s answered 200 by ``url`` under ``concurrency`` clients for ``seconds``."""
    ok = bad = 0
    deadline = time.perf_counter() + seconds

    async def worker(n: int, client: httpx.AsyncClient) -> None:
        nonlocal ok, bad
        i = 0
        while time.perf_counter() < deadline:
            body = callevents.encode(
                CallEvent(
                    call_id=f"t{n}-{i}",
                    event_type="ringing",
                    from_number="+4420",
                    to_number="+1555",
                )
            )
            resp = await client.post(url, content=body)
            if resp.status_code == 200:
                ok += 1
            else:
                bad += 1
            i += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(n, client) for n in range(concurrency)))
        return ok / (time.perf_counter() - began), bad


async def stage_throughput(
    kafka: stack.KafkaServer, tmp: Path, seconds: float, concurrency: int
) -> dict[str, Any]:
    topics = await new_topics(kafka)
    port = free_port()
    proc = await start_control(kafka, tmp, topics, port, "http://127.0.0.1:9", "api")
    try:
        url = f"http://127.0.0.1:{port}/v1/wavix/events/{SECRET}"
        await blast(url, 2, concurrency)  # warm-up
        control_rate, errors = await blast(url, seconds, concurrency)
    finally:
        await stop(proc)
    bare_port = free_port()
    bare = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BARE_APP,
        str(bare_port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{bare_port}/v1/wavix/events/{SECRET}"
        async with asyncio.timeout(30):
            while True:
                try:
                    await blast(url, 0.2, 1)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)
        await blast(url, 2, concurrency)
        bare_rate, _ = await blast(url, seconds, concurrency)
    finally:
        await stop(bare)
    return {
        "control_eps": control_rate,
        "bare_eps": bare_rate,
        "errors": errors,
        "concurrency": concurrency,
    }


# -- main ------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="control-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        stack.install(kafka=True, minio=False)
        kafka = stack.KafkaServer(tmp / "kafka")
        kafka.start()
        try:
            seconds = 5 if args.quick else args.seconds
            log(f"latency: {args.rate} calls/s for {seconds}s")
            latency = await stage_latency(kafka, tmp, args.rate, seconds)
            log(f"latency: {latency}")
            log("throughput")
            throughput = await stage_throughput(
                kafka, tmp, 3 if args.quick else 10, args.concurrency
            )
            log(f"throughput: {throughput}")
        finally:
            kafka.stop()
    return {"latency": latency, "throughput": throughput}


def report(results: dict[str, Any]) -> str:
    lat, thr = results["latency"], results["throughput"]
    rows = [
        [
            "event -> stream start request p50 (ms)",
            f"{lat['p50_ms']:.1f}",
            f"{lat['kafka_p50_ms']:.1f}",
            f"{lat['p50_ms'] / lat['kafka_p50_ms']:.2f}x",
        ],
        [
            "event -> stream start request p99 (ms)",
            f"{lat['p99_ms']:.1f}",
            f"{lat['kafka_p99_ms']:.1f}",
            f"{lat['p99_ms'] / lat['kafka_p99_ms']:.2f}x",
        ],
        [
            "webhook events/s, one control process",
            f"{thr['control_eps']:.0f}",
            f"{thr['bare_eps']:.0f}",
            f"{thr['control_eps'] / thr['bare_eps']:.2f}x",
        ],
    ]
    return (
        "## Control plane\n\n"
        f"`python -m bench.control_bench` on {machine()}; Kafka, `callrec control` (one "
        "process), the Wavix emulator and the load generator all on this box, which other "
        "engineers' tests shared at the time: the figures are indicative.\n\n"
        f"Latency: {lat['calls']} calls at {lat['rate']:.0f} calls/s (first ones excluded as "
        "warm-up), each an `answered` webhook; measured from posting the webhook to the "
        "emulator receiving `POST /v1/calls/{id}/streams` (Wavix's own answer time "
        f"excluded); max {lat['max_ms']:.0f} ms, {lat['non_200']} webhooks not answered 200. "
        "Baseline: one record produced with acks=all and consumed by a group member, at "
        "the same rate (the controller's path has two such hops plus the state write).\n\n"
        f"Throughput: `ringing` events from {thr['concurrency']} concurrent clients, each "
        "answered 200 only once durable in Kafka, against a bare Starlette/uvicorn app "
        "answering 200 without parsing or Kafka under the same load generator "
        f"({thr['errors']} errors). The load generator (httpx, one Python process on the "
        "same 2 cores) limits both sides: the events/s are a lower bound of what one "
        "control process accepts, and the ratio is the figure to compare.\n\n"
        + markdown_table(["figure", "control", "baseline", "ratio"], rows)
        + "\nTarget: p99 <= 300 ms at 50 calls/s.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per stage")
    parser.add_argument("--rate", type=float, default=50.0, help="calls per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="latency stage length")
    parser.add_argument("--concurrency", type=int, default=32, help="throughput clients")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write the results into docs/benchmarks.md (## Control plane)",
    )
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    text = report(results)
    print(text)
    if args.write_docs:
        replace_section(REPO / "docs" / "benchmarks.md", "## Control plane", text)


if __name__ == "__main__":
    main()
