"""CPU of the Kafka client per call, with glibc's heap defaults and with the heap kept.

    python -m bench.kafka_client_bench [--calls 400] [--seconds 20] [--rounds 2]

Ingest's share of a call's cost that is the Kafka client alone: ``KafkaPublisher`` (the
aiokafka produce path ingest uses) producing ``--calls`` calls' worth of records in real
time, each call one 9.8 kB record (a ``MediaBatch`` of 100 ms of a two-track stream)
every 100 ms; and the recorder's share: an aiokafka consumer fetching those records
back (``getmany``, as the recorder's consumer is configured). Each measurement runs in
a fresh process, with ``infra.heap.keep_freed_heap`` applied (the services' default) or
not (glibc's own thresholds), in ABBA order, ``--rounds`` times, against one local Kafka.
The baseline is the same client in the same run with the heap left alone; the ratio
printed is heap kept / glibc defaults. When confluent-kafka is importable (it is not a
dependency: ``pip install confluent-kafka``), librdkafka's producer and consumer are
measured the same way, for scale.

Figures: CPU of the measuring process (user + system) per 30 s call. docs/benchmarks.md,
"Cost per call" (fifth pass), has a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.harness.report import machine

RECORD_BYTES = 9_800
"""One ``MediaBatch`` of a two-track stream: 10 frames of 960 bytes and the envelope."""
RECORD_EVERY_S = 0.1
PARTITIONS = 6
HEAP = (64 * 1024 * 1024, 16 * 1024 * 1024, 32 * 1024 * 1024)
"""The services' default ``CALLREC_HEAP_*`` (trim threshold, top pad, mmap threshold)."""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _keys(calls: int) -> list[bytes]:
    return [f"bench-call-{i:05d}-0123456789abcdef".encode() for i in range(calls)]


async def _paced(calls: int, seconds: float, send: Callable[[bytes, bytes], None],
                 tick: Callable[[], object]) -> tuple[int, float]:
    """Offer every call's record each 100 ms for ``seconds``: (records, CPU-s)."""
    keys, value = _keys(calls), os.urandom(RECORD_BYTES)
    start, cpu0, n, ticks = time.perf_counter(), _cpu_s(), 0, 0
    while time.perf_counter() - start < seconds:
        for key in keys:
            send(key, value)
        n += len(keys)
        tick()
        ticks += 1
        await asyncio.sleep(max(0.0, start + ticks * RECORD_EVERY_S - time.perf_counter()))
    return n, cpu0


async def produce_aiokafka(bootstrap: str, topic: str, calls: int,
                           seconds: float) -> dict[str, Any]:
    from infra.bus.kafka import KafkaPublisher
    from ingest.metrics import PUBLISH

    publisher = KafkaPublisher({"bootstrap_servers": bootstrap}, topic,
                               max_inflight_bytes=64 * 1024 * 1024, produce_timeout_s=60,
                               metrics=PUBLISH)
    await publisher.start()
    pending: list[asyncio.Future[None]] = []

    def send(key: bytes, value: bytes) -> None:
        pending.append(publisher.offer(publisher.partition_for(key), key, value))

    def tick() -> None:
        del pending[: max(0, len(pending) - 4 * calls)]

    n, cpu0 = await _paced(calls, seconds, send, tick)
    await asyncio.gather(*pending)
    cpu = _cpu_s() - cpu0
    await publisher.stop()
    return {"records": n, "cpu_s": cpu}


async def produce_librdkafka(bootstrap: str, topic: str, calls: int,
                             seconds: float) -> dict[str, Any]:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 10,
                         "batch.size": 256 * 1024})
    n, cpu0 = await _paced(calls, seconds, lambda k, v: producer.produce(topic, v, k),
                           lambda: producer.poll(0))
    producer.flush(60)
    return {"records": n, "cpu_s": _cpu_s() - cpu0}


async def consume_aiokafka(bootstrap: str, topic: str, records: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    from callrec.wiring import RECORDER_MAX_PARTITION_FETCH_BYTES

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                group_id=f"bench-{os.getpid()}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=RECORDER_MAX_PARTITION_FETCH_BYTES)
    await consumer.start()
    n, cpu0 = 0, None
    try:
        while n < records:
            got = await consumer.getmany(timeout_ms=1000, max_records=2000)
            if got and cpu0 is None:
                cpu0 = _cpu_s()
            for batch in got.values():
                n += sum(1 for record in batch if record.value is not None)
        cpu = _cpu_s() - (cpu0 or 0.0)
    finally:
        await consumer.stop()
    return {"records": n, "cpu_s": cpu}


async def consume_librdkafka(bootstrap: str, topic: str, records: int) -> dict[str, Any]:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{os.getpid()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    n, cpu0 = 0, None
    try:
        while n < records:
            messages = consumer.consume(2000, 1.0)
            if messages and cpu0 is None:
                cpu0 = _cpu_s()
            n += sum(1 for m in messages if not m.error() and m.value() is not None)
        cpu = _cpu_s() - (cpu0 or 0.0)
    finally:
        consumer.close()
    return {"records": n, "cpu_s": cpu}


def _child(args: argparse.Namespace) -> int:
    """One measurement in this fresh process; prints its JSON."""
    from infra.heap import keep_freed_heap

    if args.heap == "kept":
        keep_freed_heap(*HEAP)
    if args.role == "produce":
        run = produce_aiokafka if args.client == "aiokafka" else produce_librdkafka
        result = asyncio.run(run(args.bootstrap, args.topic, args.calls, args.seconds))
    else:
        take = consume_aiokafka if args.client == "aiokafka" else consume_librdkafka
        result = asyncio.run(take(args.bootstrap, args.topic, args.records))
    print(json.dumps(result), flush=True)
    return 0


def _measure(role: str, client: str, heap: str, bootstrap: str, topic: str,
             args: argparse.Namespace, records: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.kafka_client_bench", "_child", role, client, heap,
           "--bootstrap", bootstrap, "--topic", topic, "--calls", str(args.calls),
           "--seconds", str(args.seconds), "--records", str(records)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode:
        raise SystemExit(f"{role} {client} {heap} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["ms_per_call"] = 1000 * result["cpu_s"] * 30 / (args.calls * args.seconds)
    print(f"  {role:8s} {client:11s} heap {heap:8s} {result['records']:>7,} records "
          f"{result['cpu_s']:6.2f} CPU-s  {result['ms_per_call']:6.2f} ms per 30 s call",
          flush=True)
    return result


def run(args: argparse.Namespace) -> int:
    from bench.harness.topics import create_topics
    from deploy.local.stack import KafkaServer

    try:
        import confluent_kafka  # noqa: F401

        clients = ["aiokafka", "librdkafka"]
    except ImportError:
        clients = ["aiokafka"]
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="kafka-client-bench-") as tmp:
        kafka = KafkaServer(Path(tmp) / "kafka", num_partitions=PARTITIONS)
        kafka.start()
        try:
            order = ["glibc", "kept", "kept", "glibc"] * args.rounds
            for i, heap in enumerate(order):
                for client in clients:
                    if client == "librdkafka" and heap == "kept":
                        continue  # librdkafka's buffers are its own: measured once per pair
                    topic = f"bench-{i}-{client}"
                    asyncio.run(create_topics(kafka.bootstrap, {topic: PARTITIONS}))
                    made = _measure("produce", client, heap, kafka.bootstrap, topic, args)
                    taken = _measure("consume", client, heap, kafka.bootstrap, topic, args,
                                     records=made["records"])
                    for role, result in (("produce", made), ("consume", taken)):
                        figures.setdefault(f"{role} {client} {heap}", []).append(
                            result["ms_per_call"])
        finally:
            kafka.stop()
    print(f"\n{machine()}")
    print(f"{args.calls} calls, one {RECORD_BYTES:,} B record per call every "
          f"{RECORD_EVERY_S * 1000:.0f} ms, {args.seconds:.0f} s per run; "
          "median ms of CPU per 30 s call:")
    for role in ("produce", "consume"):
        base = statistics.median(figures[f"{role} aiokafka glibc"])
        kept = statistics.median(figures[f"{role} aiokafka kept"])
        line = (f"  {role:8s} aiokafka: glibc defaults {base:6.2f}, heap kept {kept:6.2f}, "
                f"ratio {kept / base:.2f}")
        if f"{role} librdkafka glibc" in figures:
            line += f"; librdkafka {statistics.median(figures[f'{role} librdkafka glibc']):.2f}"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_client_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (default 2)")
    parser.add_argument("--json", default="", help="also write every figure to this file")
    parser.add_argument("--bootstrap", default="", help=argparse.SUPPRESS)
    parser.add_argument("--topic", default="", help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_child"]:
        child = parse_args(argv[4:])
        child.role, child.client, child.heap = argv[1:4]
        return _child(child)
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
