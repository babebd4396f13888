"""The recorder's CPU per recording, step by step: what one call costs to take in and archive.

    python -m bench.archive_cpu_bench [--calls N] [--seconds S] [--store minio|local]

Builds ``N`` two-track calls of ``S`` seconds (one ``both`` stream, records as ingest
writes them with the default 100 ms coalescing window: a ``MediaBatch`` of 10 frames),
feeds their encoded records through ``envelope.decode`` and the recorder's
``RecordingTracker`` (the consumer loop's work, without Kafka), then archives each with
``archive_recording`` into a real MinIO (deploy/local/stack.py) or a local directory,
timing the CPU of each step in this thread. Baseline, measured in the same run: the
same WAV bytes uploaded with one ``put_bytes`` per recording (what storing the audio
costs at the least). Prints CPU per recording by step, the ratio of the whole to the
baseline, and the per-call CPU it implies (% of a core while the call lasts); with
MinIO, also the CPU the server process spent on the archive steps and on the baseline.

It isolates the recorder's own Python from Kafka, the event loop and the other
processes that ``bench/reliability.py``'s scale steps share the machine with; docs/
benchmarks.md ("Cost per call") puts both side by side.
"""

from __future__ import annotations

import argparse
import collections
import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import workers.recorder.archive as archive_module
from bench.harness.procfs import proc_cpu_s
from bench.harness.report import machine
from infra.store import ObjectStore
from infra.store.local import LocalStore
from schemas import envelope
from schemas.layout import WAV_NAME, recording_prefix
from workers.recorder.reassembly import RecordingAssembler
from workers.recorder.tracker import RecordingTracker

MS = 1_000_000
T0_NS = 1_763_712_000_000 * MS
FRAME_BYTES = 960  # 20 ms of L16/24000
BATCH_FRAMES = 10  # 100 ms of a both stream: 5 frames per track


def call_records(call_id: str, seconds: int, audio: bytes) -> list[bytes]:
    """The encoded Kafka records of one call, in log order."""
    stream = f"{call_id}-s"
    common: dict[str, Any] = {"call_id": call_id, "stream_id": stream, "ingest_pod": "bench",
                              "connection_id": "c"}
    records: list[envelope.Record] = [envelope.StreamStarted(
        stream_type="oneway", channel="both", codec="L16/24000", received_ns=T0_NS, **common)]
    frames: list[envelope.MediaFrame] = []
    for i in range(seconds * 50):
        payload = audio[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]
        for track in ("inbound", "outbound"):
            frames.append(envelope.MediaFrame(track=track, chunk=i + 1, timestamp_ms=i * 20,
                                              payload=payload, received_ns=T0_NS + i * 20 * MS))
        if len(frames) == BATCH_FRAMES:
            records.append(envelope.MediaBatch(call_id=call_id, stream_id=stream,
                                               codec="L16/24000", frames=frames))
            frames = []
    records.append(envelope.StreamClosed(reason="stop", detail="", chunks=seconds * 100,
                                         invalid=0, received_ns=T0_NS + seconds * 10**9,
                                         **common))
    return [envelope.encode(r) for r in records]


class StepClock:
    """Thread CPU time per named step, by wrapping the functions that do them."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = collections.defaultdict(float)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[name] += time.thread_time() - began

        return timed


def instrument(store: ObjectStore, clock: StepClock) -> None:
    """Time the archive's steps (this process only: a benchmark, not the recorder)."""
    for name in ("put_file", "put_bytes", "put_new", "exists", "get_bytes"):
        setattr(store, name, clock.wrap(f"store.{name}", getattr(store, name)))
    for name in ("write_wav", "rows_to_parquet", "build_manifest"):
        setattr(archive_module, name, clock.wrap(name, getattr(archive_module, name)))
    RecordingAssembler.finalize = clock.wrap(  # type: ignore[method-assign]
        "finalize (assemble tracks)", RecordingAssembler.finalize)


def stores(kind: str, work: Path) -> Iterator[tuple[ObjectStore, int | None]]:
    """The store, and the pid of its server process when it has one (MinIO)."""
    if kind == "local":
        yield LocalStore(work / "archive"), None
        return
    from deploy.local import stack
    from infra.store.s3 import S3Store

    stack.install(kafka=False, minio=True)
    server = stack.MinioServer(work / "minio")
    server.start()
    try:
        store = S3Store("bench", endpoint_url=server.endpoint, region="us-east-1",
                        access_key_id=server.access_key, secret_access_key=server.secret_key)
        store.create_bucket(object_lock=False)
        yield store, server.pid
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--store", choices=("minio", "local"), default="minio")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="archive-cpu-"))
    audio = (np.random.default_rng(1).standard_normal(24000 * args.seconds) * 2000
             ).astype("<i2").tobytes()
    data = {f"call-{n}": call_records(f"call-{n}", args.seconds, audio)
            for n in range(args.calls)}
    try:
        for store, server_pid in stores(args.store, work):
            tracker = RecordingTracker(
                lambda call_id: RecordingAssembler(call_id, work / "spool" / call_id),
                grace_ms=0, idle_timeout_s=3600)
            began = time.thread_time()
            offset = 0
            for records in data.values():
                for value in records:
                    tracker.add(0, offset, envelope.decode(value), 0.0)
                    offset += 1
            feed_s = time.thread_time() - began
            clock = StepClock()
            instrument(store, clock)
            ready = tracker.ready(1.0)
            server_began = server_cpu(server_pid)
            began = time.thread_time()
            for rec in ready:
                archive_module.archive_recording(store, rec, work)
            archive_s = time.thread_time() - began
            server_s = server_cpu(server_pid) - server_began
            steps = dict(clock.cpu)  # before the baseline's uploads add to it
            # Baseline: the WAVs' bytes stored once each, nothing else.
            wavs = [store.get_bytes(recording_prefix(f"{call_id}-0") + WAV_NAME)
                    for call_id in data]
            server_began = server_cpu(server_pid)
            began = time.thread_time()
            for n, wav in enumerate(wavs):
                store.put_bytes(f"baseline/{n}.wav", wav, "audio/wav")
            baseline_s = time.thread_time() - began
            server_baseline_s = server_cpu(server_pid) - server_began
            report(args, feed_s, archive_s, baseline_s, steps)
            if server_pid is not None:
                n = args.calls
                print(f"  S3 server (MinIO) CPU per recording: {1000 * server_s / n:7.2f} ms "
                      f"(baseline {1000 * server_baseline_s / n:.2f} ms)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def server_cpu(pid: int | None) -> float:
    """CPU seconds of the store's server process so far (0 without one); it has answered
    every request counted before this is read, the uploads being synchronous."""
    if pid is None:
        return 0.0
    return proc_cpu_s(pid) or 0.0


def report(args: argparse.Namespace, feed_s: float, archive_s: float, baseline_s: float,
           steps: dict[str, float]) -> None:
    n = args.calls
    per = {name: 1000 * s / n for name, s in steps.items()}
    print(f"{n} two-track calls of {args.seconds} s, store {args.store}; {machine()}")
    print(f"  take in (decode + tracker + spool):  {1000 * feed_s / n:7.2f} ms CPU per recording")
    print(f"  archive (all steps):                 {1000 * archive_s / n:7.2f} ms")
    for name, ms in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"    {name:32s} {ms:7.2f} ms")
    print(f"  baseline (put_bytes of the WAV):     {1000 * baseline_s / n:7.2f} ms")
    print(f"  archive / baseline:                  {archive_s / baseline_s:7.2f}x")
    total = (feed_s + archive_s) / n
    print(f"  per-call CPU while the call lasts:   {100 * total / args.seconds:7.3f} % of a core")


if __name__ == "__main__":
    main()
