"""Archiving one recording with 100 vs 100,000 recordings already in the archive.

DESIGN.md §7 target: archiving one recording costs the same with 100 or 100,000
recordings in the archive (within 1.2x). For each backend (a local directory, MinIO)
and each archive size, this benchmark

1. populates the archive with ``size`` recordings, written directly as *minimal
   objects*: only each recording's ``manifest.json`` (a copy of one real manifest with
   the call and recording ids replaced; ~1.5 KB), no WAV or Parquet. Those are the
   objects the archive step reads or lists, so the others would only cost disk. Local:
   plain file writes without fsync. MinIO: ``put_object`` from 32 threads. The call
   ids are ``growth-<k>-<n>`` so that every measured call ``growth-<k>`` is a prefix of
   size/20 others (the shape that made prefix listings read other calls' manifests);
2. archives ``--recordings`` new recordings (1 s of L16/24000 each, through
   ``workers.recorder.archive.archive_recording``, as the recorder does) and takes the
   median wall time per recording.

It prints the 100,000-vs-100 ratio per backend (target <= 1.2) and writes them to
docs/benchmarks.md (section "Archive growth")::

    python -m bench.archive_growth_bench [--sizes 100,100000] [--backends local,minio]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from bench.harness.report import machine, replace_section
from infra.store import ObjectStore
from infra.store.local import LocalStore
from schemas import envelope
from schemas.layout import manifest_key
from schemas.manifest import decode_manifest, manifest_bytes
from schemas.tables import recording_id
from workers.recorder.archive import archive_recording
from workers.recorder.reassembly import RecordingAssembler
from workers.recorder.tracker import Recording

MS = 1_000_000
T0 = 1_763_712_000_000 * MS
GROUPS = 20
"""Measured calls ``growth-0`` .. ``growth-19``; populated ids extend them."""
REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def recording(work: Path, call_id: str, seconds: float = 1.0) -> Recording:
    asm = RecordingAssembler(call_id, work / uuid.uuid4().hex)
    sid = f"s-{call_id}"
    asm.add_start(
        envelope.StreamStarted(
            call_id=call_id,
            stream_id=sid,
            stream_type="oneway",
            channel="inbound",
            codec="L16/24000",
            ingest_pod="bench",
            connection_id="k",
            received_ns=T0,
        )
    )
    chunks = int(seconds * 50)
    for n in range(1, chunks + 1):
        asm.add_chunk(
            envelope.MediaChunk(
                call_id=call_id,
                stream_id=sid,
                track="inbound",
                chunk=n,
                timestamp_ms=(n - 1) * 20,
                codec="L16/24000",
                payload=bytes([n % 256]) * 960,
                received_ns=T0 + n * 20 * MS,
            )
        )
    asm.add_close(
        envelope.StreamClosed(
            call_id=call_id,
            stream_id=sid,
            reason="stop",
            detail="",
            ingest_pod="bench",
            connection_id="k",
            received_ns=T0 + (chunks + 1) * 20 * MS,
            chunks=chunks,
            invalid=0,
        )
    )
    return Recording(call_id, 0, 0, asm)


def template_manifest(work: Path) -> bytes:
    store = LocalStore(work / "template")
    archived = archive_recording(store, recording(work, "template"), work)
    return store.get_bytes(manifest_key(archived.event.recording_id))


def populate(put: Callable[[str, bytes], None], template: bytes, size: int, threads: int) -> float:
    """Write ``size`` minimal recordings (manifest only); returns the seconds it took."""
    base = decode_manifest(template)

    def one(n: int) -> None:
        call_id = f"growth-{n % GROUPS}-{n}"
        rec_id = recording_id(call_id, 0)
        manifest = msgspec.structs.replace(base, call_id=call_id, recording_id=rec_id)
        put(manifest_key(rec_id), manifest_bytes(manifest))

    began = time.perf_counter()
    if threads <= 1:
        for n in range(size):
            one(n)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(size), chunksize=256))
    return time.perf_counter() - began


def measure(store: ObjectStore, work: Path, recordings: int) -> float:
    """Median seconds to archive one new recording."""
    times = []
    for i in range(recordings):
        rec = recording(work, f"growth-{i % GROUPS}")
        began = time.perf_counter()
        archive_recording(store, rec, work)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def local_backend(root: Path) -> tuple[ObjectStore, Callable[[str, bytes], None]]:
    store = LocalStore(root)
    store.check()

    def put(key: str, data: bytes) -> None:  # direct write: populating, not measuring
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return store, put


def run(
    backend: str,
    sizes: list[int],
    recordings: int,
    work: Path,
    minio: object | None,
    settle_s: float = 0.0,
) -> dict[int, tuple[float, float]]:
    template = template_manifest(work)
    results: dict[int, tuple[float, float]] = {}
    for size in sizes:
        if backend == "local":
            store, put = local_backend(work / f"archive-{size}")
            threads = 1
        else:
            from tests.integration.recorderutil import new_bucket, s3_store

            s3 = s3_store(minio, new_bucket(minio))  # type: ignore[arg-type]
            store, threads = s3, 32

            def put(key: str, data: bytes, s3: object = s3) -> None:
                s3.client.put_object(Bucket=s3.bucket, Key=key, Body=data)  # type: ignore[attr-defined]

        took = populate(put, template, size, threads)
        if settle_s:  # MinIO works in the background for a while after a bulk load
            time.sleep(settle_s)
        measure(store, work, 3)  # warm-up: connections, imports, page cache
        per = measure(store, work, recordings)
        results[size] = (per, took)
        print(
            f"{backend:5} {size:>7} recordings in the archive (populated in {took:.1f}s): "
            f"{per * 1000:.2f} ms per recording archived",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,100000")
    parser.add_argument("--backends", default="local,minio")
    parser.add_argument("--recordings", type=int, default=40)
    parser.add_argument(
        "--settle-s",
        type=float,
        default=30.0,
        help="MinIO: wait this long after populating before measuring",
    )
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = args.backends.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="callrec-growth-") as tmp:
        work = Path(tmp)
        minio = None
        if "minio" in backends:
            from deploy.local import stack

            minio = stack.MinioServer(work / "minio")
            minio.start()
        try:
            for backend in backends:
                settle = args.settle_s if backend == "minio" else 0.0
                results = run(backend, sizes, args.recordings, work, minio, settle)
                small, large = results[min(sizes)][0], results[max(sizes)][0]
                ratio = large / small
                print(
                    f"{backend}: {max(sizes)} vs {min(sizes)}: {ratio:.2f}x (target <= 1.2)",
                    flush=True,
                )
                rows.append((backend, results, ratio))
        finally:
            if minio is not None:
                minio.stop()
    if args.no_report:
        return
    lines = [
        "## Archive growth",
        "",
        f"`python -m bench.archive_growth_bench --sizes {args.sizes} --backends "
        f"{args.backends} --recordings {args.recordings}` on {machine()}; a shared machine "
        "(other engineers' tests ran meanwhile): indicative figures. Median wall time to "
        "archive one 1 s recording (WAV + calls row + manifest, after the part lookup) with "
        "the archive already holding N recordings, populated directly as minimal "
        "manifest-only objects (local: file writes; MinIO: put_object from 32 threads, "
        f"then {args.settle_s:.0f} s for MinIO's background work after the bulk load).",
        "",
        "| backend | N | ms per recording | populate s | ratio vs smallest N |",
        "|---|---:|---:|---:|---:|",
    ]
    for backend, results, _ratio in rows:
        base = results[min(sizes)][0]
        for size, (per, took) in sorted(results.items()):
            lines.append(
                f"| {backend} | {size:,} | {per * 1000:.2f} | {took:.1f} | {per / base:.2f}x |"
            )
    replace_section(REPORT, "## Archive growth", "\n".join(lines))


if __name__ == "__main__":
    main()
