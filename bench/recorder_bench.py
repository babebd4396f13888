"""Recorder benchmark: throughput, stop -> archive latency, memory vs call length.

    python -m bench.recorder_bench [--quick] [--coalesce-ms MS] [--write-docs]
    python -m bench.recorder_bench --only throughput [--calls N] [--seconds S] [--runs R]
    python -m bench.recorder_bench --only realtime [--calls N] [--seconds S]

Starts its own Kafka and MinIO (deploy/local/stack.py) and measures, each
against a baseline run in the same process on the same data:

1. throughput: records/s of ``RecorderService`` (reassembly, spill, WAV +
   manifest + Parquet to MinIO, commits) vs a bare aiokafka consume-and-discard
   loop on the same topic (target >= 0.7x);
2. stop -> WAV + manifest durable: for real-time calls through ``callrec ingest``,
   from the stream's close record to the manifest's upload, p50/p99 (target
   p99 <= 1.5 s; the recorder's grace period, 500 ms, is part of it);
3. memory: peak RSS of a ``callrec recorder`` process archiving one 1-minute vs
   one 60-minute two-track call fed faster than real time (target: flat).

Stage 1 also reports CPU per record (this process's CPU time over the timed span,
all threads: the recorder's archive threads count, and so does the benchmark's own
polling of the archive, ~1 ms per 50 ms) for both, which is what costs the recorder
a share of a core per call at real time. ``--only throughput`` runs just that stage.

Records as ingest writes them with ``CALLREC_INGEST_COALESCE_MS`` = ``--coalesce-ms``
(default 100: a ``MediaBatch`` of 5 frames per track; 0: a ``MediaChunk`` per frame).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.harness.procfs import proc_cpu_s, proc_mem_kib
from bench.harness.procs import log as harness_log
from bench.harness.report import machine, replace_section
from bench.harness.topics import create_topics
from callrec import simulator, wiring
from deploy.local import stack
from infra.store.s3 import S3Store
from ingest.settings import IngestSettings
from schemas import envelope
from schemas.custody import parse_iso_ns
from schemas.manifest import decode_manifest
from schemas.wavix import Track
from workers.recorder.settings import RecorderSettings

REPO = Path(__file__).resolve().parents[1]
FRAME = 960  # 20 ms of L16/24000
MS = 1_000_000


def log(msg: str) -> None:
    harness_log(msg, prefix="recorder-bench")


# -- data ------------------------------------------------------------------------------


def call_records(call_id: str, seconds: float, t0_ns: int,
                 coalesce_ms: float = 100) -> list[envelope.Record]:
    """One two-track call as two oneway streams, stamped as if received in real time;
    frames coalesced per ``coalesce_ms`` of each stream as ingest does (0: one per frame)."""
    chunks = int(seconds * 50)
    per_record = max(1, int(coalesce_ms // 20))
    out: list[envelope.Record] = []
    tracks: tuple[Track, Track] = ("inbound", "outbound")
    for track in tracks:
        out.append(envelope.StreamStarted(
            call_id=call_id, stream_id=f"{call_id}-{track}", stream_type="oneway",
            channel=track, codec="L16/24000", ingest_pod="bench", connection_id=track,
            received_ns=t0_ns, event_time=None))
    payload = {t: bytes([i % 251 for i in range(FRAME)]) if t == "inbound" else bytes(FRAME)
               for t in ("inbound", "outbound")}
    for first in range(1, chunks + 1, per_record):
        for track in tracks:
            numbers = range(first, min(first + per_record, chunks + 1))
            if not coalesce_ms:
                out += [envelope.MediaChunk(
                    call_id=call_id, stream_id=f"{call_id}-{track}", track=track, chunk=n,
                    timestamp_ms=(n - 1) * 20, codec="L16/24000", payload=payload[track],
                    received_ns=t0_ns + n * 20 * MS) for n in numbers]
                continue
            out.append(envelope.MediaBatch(
                call_id=call_id, stream_id=f"{call_id}-{track}", codec="L16/24000",
                frames=[envelope.MediaFrame(track=track, chunk=n, timestamp_ms=(n - 1) * 20,
                                            payload=payload[track],
                                            received_ns=t0_ns + n * 20 * MS)
                        for n in numbers]))
    for track in tracks:
        out.append(envelope.StreamClosed(
            call_id=call_id, stream_id=f"{call_id}-{track}", reason="stop", detail="",
            ingest_pod="bench", connection_id=track, received_ns=t0_ns + (chunks + 1) * 20 * MS,
            chunks=chunks, invalid=0))
    return out


async def produce(bootstrap: str, topic: str, calls: list[list[envelope.Record]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=1024 * 1024, max_request_size=2 * 1024 * 1024)
    await producer.start()
    count = 0
    try:
        pending = []
        for records in calls:
            for record in records:
                pending.append(await producer.send(topic, envelope.encode(record),
                                                   key=record.call_id.encode()))
                count += 1
                if len(pending) >= 20000:
                    await asyncio.gather(*pending)
                    pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


async def create_topic(bootstrap: str, name: str, partitions: int = 4) -> None:
    await create_topics(bootstrap, {name: partitions})


# -- services ----------------------------------------------------------------------------


def recorder_settings(kafka: stack.KafkaServer, minio: stack.MinioServer, topic: str,
                      bucket: str, spill: Path, **extra: Any) -> RecorderSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka.bootstrap, "kafka_media_topic": topic,
        "kafka_recordings_topic": topic + ".recordings", "archive_uri": f"s3://{bucket}",
        "s3_endpoint_url": minio.endpoint, "s3_access_key_id": minio.access_key,
        "s3_secret_access_key": minio.secret_key,
        "recorder_group_id": f"bench-{uuid.uuid4().hex[:8]}",
        "recorder_spill_dir": str(spill),
    }
    values.update(extra)
    return RecorderSettings(**values)


def store_for(minio: stack.MinioServer, bucket: str) -> S3Store:
    return S3Store(bucket, endpoint_url=minio.endpoint, access_key_id=minio.access_key,
                   secret_access_key=minio.secret_key, region="us-east-1")


def fresh_archive(kafka: stack.KafkaServer, minio: stack.MinioServer, topic: str,
                  prefix: str, spill: Path) -> tuple[S3Store, RecorderSettings]:
    """A new bucket for one stage, and recorder settings that archive into it."""
    bucket = f"{prefix}-{uuid.uuid4().hex[:8]}"
    store = store_for(minio, bucket)
    store.create_bucket()
    return store, recorder_settings(kafka, minio, topic, bucket, spill)


async def wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling a plain attribute of a service
            await asyncio.sleep(0.05)


async def manifests(store: S3Store, count: int, timeout_s: float) -> float:
    """Seconds until ``count`` manifests exist (polling the archive)."""
    began = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        while True:
            keys = await asyncio.to_thread(store.list_keys, "recordings/")
            if sum(k.endswith("/manifest.json") for k in keys) >= count:
                return time.perf_counter() - began
            await asyncio.sleep(0.05)


# -- stage 1: throughput -----------------------------------------------------------------


async def bare_consume(bootstrap: str, topic: str, total: int) -> tuple[float, float]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                group_id=f"bare-{uuid.uuid4().hex[:8]}",
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    seen = 0
    began: float | None = None
    cpu_began = 0.0
    try:
        while seen < total:
            # From the fetch that returned the first records, that fetch included: a topic
            # of coalesced records can come whole in one fetch, which would time nothing.
            asked, asked_cpu = time.perf_counter(), time.process_time()
            batches = await consumer.getmany(timeout_ms=100, max_records=4000)
            for messages in batches.values():
                if began is None and messages:
                    began, cpu_began = asked, asked_cpu
                seen += len(messages)
        assert began is not None
        return (total / (time.perf_counter() - began),
                1e6 * (time.process_time() - cpu_began) / total)
    finally:
        await consumer.stop()


async def recorder_consume(kafka: stack.KafkaServer, minio: stack.MinioServer, topic: str,
                           calls: int, total: int, tmp: Path) -> tuple[float, float]:
    store, settings = fresh_archive(kafka, minio, topic, "tp", tmp / uuid.uuid4().hex)
    written = count_manifests(store)
    service = wiring.recorder_service(settings, store)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        # Timed like the baseline: from the first record read (group join excluded).
        await wait_until(lambda: any(service.tracker.next_offset(p) for p in range(4)), 60)
        began, cpu_began = time.perf_counter(), time.process_time()
        # Counted as the service uploads them: listing the archive every 50 ms would add
        # its own CPU (XML of a growing listing) to the recorder's.
        await wait_until(lambda: len(written) >= calls, 600)
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
    finally:
        stop.set()
        await task
    await manifests(store, calls, timeout_s=60)  # in the archive, as the service said
    return total / elapsed, 1e6 * cpu / total


def count_manifests(store: S3Store) -> list[str]:
    """The manifest keys ``store`` uploads from now on, appended as each upload returns."""
    written: list[str] = []

    def counting(put: Callable[[str, bytes, str], Any]) -> Callable[[str, bytes, str], Any]:
        def put_counted(key: str, data: bytes, content_type: str) -> Any:
            stored = put(key, data, content_type)
            if key.endswith("/manifest.json"):
                written.append(key)
            return stored

        return put_counted

    store.put_bytes = counting(store.put_bytes)  # type: ignore[method-assign,assignment]
    store.put_new = counting(store.put_new)  # type: ignore[method-assign,assignment]
    return written


async def stage_throughput(kafka: stack.KafkaServer, minio: stack.MinioServer, tmp: Path,
                           calls: int, seconds: float, runs: int,
                           coalesce_ms: float) -> dict[str, Any]:
    topic = f"tp-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic)
    t0 = time.time_ns()
    data = [call_records(f"tp-{i:04d}", seconds, t0, coalesce_ms) for i in range(calls)]
    total = await produce(kafka.bootstrap, topic, data)
    frames = calls * 2 * int(seconds * 50)
    log(f"throughput: {total} records ({frames} frames) of {calls} calls x {seconds:.0f} s "
        f"in {topic}")
    bare, recorder, bare_cpu, recorder_cpu = [], [], [], []
    for run in range(runs):  # alternate, so both see the same machine load
        rate, cpu = await bare_consume(kafka.bootstrap, topic, total)
        bare.append(rate)
        bare_cpu.append(cpu)
        rate, cpu = await recorder_consume(kafka, minio, topic, calls, total, tmp)
        recorder.append(rate)
        recorder_cpu.append(cpu)
        log(f"run {run + 1}: bare {bare[-1]:,.0f} rec/s ({bare_cpu[-1]:.1f} us CPU/rec), "
            f"recorder {recorder[-1]:,.0f} rec/s ({recorder_cpu[-1]:.1f} us CPU/rec)")
    b, r = statistics.median(bare), statistics.median(recorder)
    bc, rc = statistics.median(bare_cpu), statistics.median(recorder_cpu)
    return {"records": total, "frames": frames, "coalesce_ms": coalesce_ms, "calls": calls,
            "seconds": seconds, "runs": runs, "bare": b, "recorder": r, "ratio": r / b,
            "bare_cpu_us": bc, "recorder_cpu_us": rc,
            "recorder_cpu_ms_per_call": rc * total / calls / 1000}


# -- stage 2: stop -> durable ------------------------------------------------------------


async def stage_latency(kafka: stack.KafkaServer, minio: stack.MinioServer, tmp: Path,
                        calls: int, coalesce_ms: float) -> dict[str, Any]:
    topic = f"lat-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic)
    store, settings = fresh_archive(kafka, minio, topic, "lat", tmp / "lat-spill")
    ingest = wiring.ingest_server(IngestSettings(
        kafka_bootstrap=kafka.bootstrap, kafka_media_topic=topic, ingest_host="127.0.0.1",
        ingest_port=0, ingest_tokens="t", ingest_pod_name="bench",  # type: ignore[arg-type]
        ingest_coalesce_ms=coalesce_ms))
    service = wiring.recorder_service(settings, store)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await ingest.start()
        await wait_until(lambda: ingest.ready and service.ready, timeout_s=30)
        clip = REPO / "tests" / "data" / "stereo_diarization.wav"
        todo = simulator.build_calls(clip, calls=calls, layout="oneway", call_id_prefix="lat")
        url = f"ws://127.0.0.1:{ingest.port}/v1/stream"

        async def one(call: simulator.SimulatedCall, delay: float) -> None:
            await asyncio.sleep(delay)
            await simulator.stream_call(url, call, realtime=True, token="t")

        # Starts spread over 10 s, so calls end (and are archived) at different moments.
        await asyncio.gather(*(one(c, i * 10 / calls) for i, c in enumerate(todo)))
        await manifests(store, calls, timeout_s=120)
    finally:
        stop.set()
        await task
        await ingest.close()
    samples = sorted(await asyncio.to_thread(stop_to_durable, store))
    return {"calls": calls, "p50": quantile(samples, 0.5), "p99": quantile(samples, 0.99),
            "max": samples[-1], "n": len(samples)}


def stop_to_durable(store: S3Store) -> list[float]:
    """Per recording: from its last close record (manifest custody, written by ingest after
    the stream's last chunk was acknowledged) to the manifest's upload (MinIO's time)."""
    latencies = []
    listing = store.client.list_objects_v2(Bucket=store.bucket, Prefix="recordings/")
    for obj in listing.get("Contents", []):
        if not obj["Key"].endswith("/manifest.json"):
            continue
        manifest = decode_manifest(store.get_bytes(obj["Key"]))
        closed = max(parse_iso_ns(c.time) or 0 for s in manifest.streams for c in s.closes)
        latencies.append(obj["LastModified"].timestamp() - closed / 1e9)
    return latencies


def quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


# -- real time: CPU per call ---------------------------------------------------------------


def recorder_env(settings: RecorderSettings) -> dict[str, str]:
    """The environment that makes ``callrec recorder`` use ``settings``."""
    env = {**os.environ, "CALLREC_RECORDER_PORT": "0", "CALLREC_LOG_LEVEL": "WARNING"}
    for name, value in settings.model_dump().items():
        if value is not None:
            secret = getattr(value, "get_secret_value", None)
            env["CALLREC_" + name.upper()] = str(secret() if secret else value)
    return env


async def paced_produce(bootstrap: str, topic: str, calls: list[list[envelope.Record]],
                        tick_s: float) -> None:
    """Each call's records in order, one per track each ``tick_s`` (as ingest writes a
    coalesced batch per stream), all calls at once: real-time traffic."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        per_tick = 2  # one record per track of a two-track call
        ticks = max(len(records) for records in calls) // per_tick + 1
        began = time.perf_counter()
        for tick in range(ticks):
            sends = [producer.send(topic, envelope.encode(r), key=r.call_id.encode())
                     for records in calls
                     for r in records[tick * per_tick:(tick + 1) * per_tick]]
            await asyncio.gather(*await asyncio.gather(*sends))
            await asyncio.sleep(max(0.0, began + (tick + 1) * tick_s - time.perf_counter()))
    finally:
        await producer.stop()


async def bare_consume_forever(bootstrap: str, topic: str) -> None:
    """The baseline process of the real-time stage: read everything, keep nothing."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                group_id=f"bare-{uuid.uuid4().hex[:8]}",
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024,
                                fetch_min_bytes=256 * 1024, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        while True:
            await consumer.getmany(timeout_ms=100, max_records=4000)
    finally:
        await consumer.stop()


async def stage_realtime(kafka: stack.KafkaServer, minio: stack.MinioServer, tmp: Path,
                         calls: int, seconds: float, coalesce_ms: float) -> dict[str, Any]:
    """CPU of a ``callrec recorder`` process per real-time call, against a bare consumer
    process reading the same records at the same time (both from ``/proc``)."""
    topic = f"rt-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic)
    store, settings = fresh_archive(kafka, minio, topic, "rt", tmp / "rt-spill")
    recorder = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrec.cli", "recorder", env=recorder_env(settings))
    bare = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.recorder_bench", "--bare-consume", kafka.bootstrap, topic)
    try:
        # A first call through both, so that both joined their groups and are warm.
        await paced_produce(kafka.bootstrap, topic,
                            [call_records("rt-warm", 1, time.time_ns(), coalesce_ms)], 0)
        await manifests(store, 1, timeout_s=120)
        cpu = {p.pid: proc_cpu_s(p.pid) or 0.0 for p in (recorder, bare)}
        began = time.perf_counter()
        t0 = time.time_ns()
        data = [call_records(f"rt-{i:04d}", seconds, t0, coalesce_ms) for i in range(calls)]
        await paced_produce(kafka.bootstrap, topic, data, max(coalesce_ms, 20) / 1000)
        await manifests(store, calls + 1, timeout_s=300)
        elapsed = time.perf_counter() - began
        used = {pid: (proc_cpu_s(pid) or 0.0) - before for pid, before in cpu.items()}
    finally:
        for proc in (recorder, bare):
            proc.terminate()
            await proc.wait()
    core_s = calls * seconds
    return {"calls": calls, "seconds": seconds, "elapsed": elapsed,
            "recorder_pct": 100 * used[recorder.pid] / core_s,
            "bare_pct": 100 * used[bare.pid] / core_s}


# -- stage 3: memory ---------------------------------------------------------------------


def peak_rss_kib(pid: int) -> int:
    """VmHWM of ``pid`` in KiB, 0 when it is gone."""
    mem = proc_mem_kib(pid)
    return mem[1] if mem is not None else 0


async def stage_memory(kafka: stack.KafkaServer, minio: stack.MinioServer, tmp: Path,
                       minutes: int, coalesce_ms: float) -> dict[str, Any]:
    topic = f"mem-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic)
    call_id = f"mem-{minutes}min"
    count = await produce(kafka.bootstrap, topic,
                          [call_records(call_id, minutes * 60, time.time_ns(), coalesce_ms)])
    store, settings = fresh_archive(kafka, minio, topic, "mem", tmp / f"mem-{minutes}")
    env = recorder_env(settings)
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "callrec.cli", "recorder",
                                                env=env)
    try:
        await manifests(store, 1, timeout_s=1800)
        elapsed = time.perf_counter() - began
        peak = peak_rss_kib(proc.pid)
    finally:
        proc.terminate()
        await proc.wait()
    return {"minutes": minutes, "records": count, "peak_rss_mib": peak / 1024,
            "seconds": elapsed, "audio_mib": minutes * 60 * 2 * 48000 / 2**20}


# -- report ------------------------------------------------------------------------------


def markdown(results: dict[str, Any], command: str) -> str:
    tp, lat, mem = results["throughput"], results["latency"], results["memory"]
    # Flat = RAM does not grow with call length once the consumer's bounded buffers are
    # full: compare the longest call with the second one (the first is too short to fill
    # them), and state the growth per hour of audio.
    ref = mem[1] if len(mem) > 2 else mem[0]
    flat = mem[-1]["peak_rss_mib"] / ref["peak_rss_mib"]
    per_hour = ((mem[-1]["peak_rss_mib"] - ref["peak_rss_mib"])
                / max(1e-9, (mem[-1]["minutes"] - ref["minutes"]) / 60))
    lines = [
        "## Recorder",
        "",
        f"`{command}` ({time.strftime('%Y-%m-%d')}; {machine()}). Real Kafka 4.1 (one "
        "broker, 4 partitions) and MinIO on loopback, started by the benchmark.",
        "",
        "| Figure | Measured | Baseline | Ratio | Target |",
        "| --- | --- | --- | --- | --- |",
        f"| Throughput, {tp['calls']} two-track calls x {tp['seconds']:.0f} s "
        f"({tp['records']:,} records, {tp['frames']:,} frames, coalesced "
        f"{tp['coalesce_ms']:.0f} ms), median of {tp['runs']} | {tp['recorder']:,.0f} rec/s "
        f"| bare aiokafka consume-and-discard {tp['bare']:,.0f} rec/s | **{tp['ratio']:.2f}x** "
        f"| >= 0.7x {'met' if tp['ratio'] >= 0.7 else 'NOT met'} |",
        f"| Stop -> WAV + manifest durable, {lat['calls']} real-time calls through ingest | "
        f"p50 {lat['p50']:.2f} s, p99 **{lat['p99']:.2f} s**, max {lat['max']:.2f} s | | | "
        f"p99 <= 1.5 s {'met' if lat['p99'] <= 1.5 else 'NOT met'} |",
    ]
    for m in mem:
        lines.append(
            f"| Peak RSS of `callrec recorder`, one {m['minutes']}-minute two-track call "
            f"({m['audio_mib']:.0f} MiB of audio, archived in {m['seconds']:.0f} s) | "
            f"{m['peak_rss_mib']:.0f} MiB | | | |")
    lines += [
        f"| RSS {mem[-1]['minutes']} min / {ref['minutes']} min ({per_hour:+.1f} MiB per "
        f"hour of audio) | | | **{flat:.2f}x** | flat: "
        f"{'met' if flat <= 1.10 else 'NOT met'} (within 10 %) |",
        "",
        "Throughput counts every record of the topic from the first fetch to the last "
        "manifest in MinIO (the WAV, Parquet row and manifest of every call, the last "
        "call's grace period included); the baseline reads the same records and drops "
        "them. Stop -> durable is measured from the close record ingest writes after the "
        "stream's last chunk is acknowledged to the manifest's upload, so it contains the "
        "500 ms grace period (`CALLREC_RECORDER_GRACE_MS`). Memory is the process's peak "
        "(VmHWM): audio is spilled to disk and only a reorder window per track stays in RAM. "
        "A call fed faster than real time also fills the consumer's fetch buffers (4 MiB "
        "per partition), which a 1-minute call (5 MiB in all) never does: that bounded "
        "part is why flatness is judged between the two longer calls.",
        "",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="recorder-bench-") as tmpdir:
        tmp = Path(tmpdir)
        stack.install(kafka=True, minio=True)
        kafka = stack.KafkaServer(tmp / "kafka")
        minio = stack.MinioServer(tmp / "minio")
        kafka.start()
        minio.start()
        try:
            quick = args.quick
            results: dict[str, Any] = {}
            if args.only == "realtime":
                results["realtime"] = await stage_realtime(
                    kafka, minio, tmp, calls=args.calls or 100, seconds=args.seconds or 30,
                    coalesce_ms=args.coalesce_ms)
                return results
            results["throughput"] = await stage_throughput(
                kafka, minio, tmp, calls=args.calls or (10 if quick else 40),
                seconds=args.seconds or (10 if quick else 60),
                runs=args.runs or (1 if quick else 3), coalesce_ms=args.coalesce_ms)
            if args.only == "throughput":
                return results
            results["latency"] = await stage_latency(kafka, minio, tmp,
                                                     calls=8 if quick else 40,
                                                     coalesce_ms=args.coalesce_ms)
            results["memory"] = [await stage_memory(kafka, minio, tmp, minutes, args.coalesce_ms)
                                 for minutes in ((1, 3, 5) if quick else (1, 10, 60))]
            return results
        finally:
            kafka.stop()
            minio.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument("--coalesce-ms", type=float, default=100.0,
                        help="CALLREC_INGEST_COALESCE_MS of the records (0: one per frame)")
    parser.add_argument("--write-docs", action="store_true",
                        help="write the results into docs/benchmarks.md (## Recorder)")
    parser.add_argument("--only", choices=("throughput", "realtime"),
                        help="run one stage and print its figures (no docs)")
    parser.add_argument("--calls", type=int, help="throughput stage: calls (default 40)")
    parser.add_argument("--seconds", type=float, help="throughput stage: call length")
    parser.add_argument("--runs", type=int, help="throughput stage: alternating runs")
    parser.add_argument("--bare-consume", nargs=2, metavar=("BOOTSTRAP", "TOPIC"),
                        help=argparse.SUPPRESS)  # the real-time stage's baseline process
    args = parser.parse_args()
    if args.bare_consume:
        asyncio.run(bare_consume_forever(*args.bare_consume))
        return
    results = asyncio.run(main_async(args))
    if args.only == "realtime":
        rt = results["realtime"]
        print(f"real time, {rt['calls']} two-track calls x {rt['seconds']:.0f} s at once "
              f"(done in {rt['elapsed']:.0f} s); {machine()}")
        print(f"  callrec recorder: {rt['recorder_pct']:.3f} % of a core per call")
        print(f"  bare consumer:    {rt['bare_pct']:.3f} % of a core per call")
        print(f"  ratio {rt['recorder_pct'] / rt['bare_pct']:.2f}x")
        return
    if args.only:
        tp = results["throughput"]
        print(f"throughput, {tp['calls']} calls x {tp['seconds']:.0f} s, {tp['records']:,} "
              f"records, median of {tp['runs']}; {machine()}")
        print(f"  recorder {tp['recorder']:,.0f} rec/s, {tp['recorder_cpu_us']:.1f} us CPU "
              f"per record ({tp['recorder_cpu_ms_per_call']:.1f} ms per call)")
        print(f"  bare     {tp['bare']:,.0f} rec/s, {tp['bare_cpu_us']:.1f} us CPU per record")
        print(f"  ratio {tp['ratio']:.2f}x throughput, "
              f"{tp['recorder_cpu_us'] / tp['bare_cpu_us']:.2f}x CPU per record")
        return
    command = ("python -m bench.recorder_bench" + (" --quick" if args.quick else "")
               + f" --coalesce-ms {args.coalesce_ms:g}")
    text = markdown(results, command)
    print(text)
    if args.write_docs:
        replace_section(REPO / "docs" / "benchmarks.md", "## Recorder", text)


if __name__ == "__main__":
    main()
