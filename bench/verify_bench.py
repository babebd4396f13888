"""``callrec verify`` throughput against ``sha256sum`` of the same files, in the same run.

Builds an archive of ``--size`` bytes (default 2 GiB) of recordings (random WAV-sized
objects, each listed with its sha256 by a manifest cloned from one the recorder's
code wrote), then measures:

- ``sha256sum`` over the WAV files of the local archive (one process, the baseline);
- ``verify_archive`` over the local archive (threads, ``--workers``);
- ``verify_archive`` over the same recordings in MinIO (``--minio``; started through
  deploy/local/stack.py), beside it.

Prints bytes/s and the ratio verify/sha256sum (target >= 0.8 locally) and, with
``--write``, replaces its section of docs/benchmarks.md. Run:
``python -m bench.verify_bench [--size 256MiB] [--minio] [--write]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

import msgspec

from bench.harness.report import machine, replace_section
from compliance.verify import verify_archive
from infra.store import ObjectStore
from infra.store.local import LocalStore
from schemas.layout import manifest_key, wav_key
from schemas.manifest import ObjectEntry, decode_manifest, manifest_bytes

OBJECT_BYTES = 32 * 1024 * 1024
"""One recording's WAV: about 11 minutes of 24 kHz stereo PCM16."""


def _size(text: str) -> int:
    units = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def build(stores: list[ObjectStore], work: Path, total: int) -> list[Path]:
    """Recordings of OBJECT_BYTES each until ``total``, in every store; the local WAV paths."""
    from tests.analyzerutil import archive_call, noise, pcm

    template_store = LocalStore(work / "template")
    event = archive_call(template_store, "bench", {"inbound": pcm(noise(200, 24000, -20, 1))}, work)
    template = decode_manifest(template_store.get_bytes(manifest_key(event.recording_id)))
    paths = []
    for n in range(max(1, total // OBJECT_BYTES)):
        rec_id = f"bench{n:05d}-0"
        data = os.urandom(OBJECT_BYTES)
        path = work / f"{rec_id}.wav"
        path.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        manifest = msgspec.structs.replace(
            template,
            call_id=f"bench{n:05d}",
            recording_id=rec_id,
            objects=[
                ObjectEntry(
                    key=wav_key(rec_id), sha256=sha, size=len(data), content_type="audio/wav"
                )
            ],
        )
        for store in stores:
            store.put_file(wav_key(rec_id), path, sha, "audio/wav")
            store.put_bytes(manifest_key(rec_id), manifest_bytes(manifest), "application/json")
        paths.append(path)
    return paths


def measure(store: ObjectStore, workers: int) -> tuple[float, int]:
    began = time.perf_counter()
    report = verify_archive(store, workers=workers)
    seconds = time.perf_counter() - began
    assert report.ok, report.problems[:5]
    return seconds, report.bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_size, default=2 * 2**30, help="archive size (2GiB)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--minio", action="store_true", help="also verify the same in MinIO")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as tmp:
        work = Path(tmp)
        local = LocalStore(work / "archive")
        stores: list[ObjectStore] = [local]
        minio_server = None
        if args.minio:
            from deploy.local import stack
            from infra.store.s3 import S3Store

            stack.install(kafka=False, minio=True)
            minio_server = stack.MinioServer(work / "minio")
            minio_server.start()
            s3 = S3Store(
                "verify-bench",
                endpoint_url=minio_server.endpoint,
                region="us-east-1",
                access_key_id=minio_server.access_key,
                secret_access_key=minio_server.secret_key,
            )
            s3.create_bucket()
            stores.append(s3)
        try:
            build(stores, work, args.size)
            wavs = sorted(str(p) for p in (work / "archive" / "recordings").rglob("audio.wav"))
            total = sum(os.path.getsize(p) for p in wavs)
            began = time.perf_counter()
            subprocess.run(["sha256sum", *wavs], check=True, stdout=subprocess.DEVNULL)
            base = time.perf_counter() - began
            rows = [("sha256sum (1 process)", base, total)]
            seconds, hashed = measure(local, args.workers)
            rows.append((f"callrec verify, local ({args.workers} threads)", seconds, hashed))
            if minio_server is not None:
                seconds, hashed = measure(stores[1], args.workers)
                rows.append((f"callrec verify, MinIO ({args.workers} threads)", seconds, hashed))
        finally:
            if minio_server is not None:
                minio_server.stop()
    base_rate = total / base
    lines = [
        "## callrec verify",
        "",
        f"`python -m bench.verify_bench --size {args.size // 2**20}MiB"
        f"{' --minio' if args.minio else ''} --write` on {machine()}, "
        f"{dt.date.today().isoformat()}; the files are in the page cache for both, so this "
        "compares hashing, not disks. Absolute figures move with the machine; the ratio "
        "(both measured in the same run, over the same files) is what to compare.",
        "",
        "| What | Seconds | MB/s | vs sha256sum |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, secs, nbytes in rows:
        rate = nbytes / secs
        lines.append(f"| {name} | {secs:.2f} | {rate / 1e6:.0f} | {rate / base_rate:.2f}x |")
    lines += [
        "",
        "sha256sum (coreutils) hashes with gnulib's portable SHA-256 unless built "
        "against OpenSSL; hashlib uses OpenSSL's accelerated code, so the ratio also "
        "measures that, beside verify's threads. Default size: 2 GiB; "
        "`--size` for a quicker run.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        replace_section(
            Path(__file__).parents[1] / "docs" / "benchmarks.md", "## callrec verify", text
        )


if __name__ == "__main__":
    main()
