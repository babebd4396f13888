"""Running the recorder in the test's event loop against real Kafka and MinIO."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import uuid
import wave
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from callrec import wiring
from deploy.local import stack
from infra.probes import Worker
from infra.store.s3 import S3Store
from schemas.manifest import Manifest, decode_manifest
from workers.recorder.service import RecorderService
from workers.recorder.settings import RecorderSettings


def new_bucket(minio: stack.MinioServer, *, object_lock: bool = False) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_store(minio, name).create_bucket(object_lock=object_lock)
    return name


def s3_store(minio: stack.MinioServer, bucket: str, **options: Any) -> S3Store:
    return S3Store(bucket, endpoint_url=minio.endpoint, region="us-east-1",
                   access_key_id=minio.access_key, secret_access_key=minio.secret_key, **options)


def recorder_settings(kafka: stack.KafkaServer, minio: stack.MinioServer, media_topic: str,
                      bucket: str, spill_dir: str, **overrides: Any) -> RecorderSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka.bootstrap,
        "kafka_media_topic": media_topic,
        "kafka_recordings_topic": media_topic.replace("callrec.media", "callrec.recordings"),
        "archive_uri": f"s3://{bucket}",
        "s3_endpoint_url": minio.endpoint,
        "s3_access_key_id": minio.access_key,
        "s3_secret_access_key": minio.secret_key,
        "recorder_group_id": f"recorder-{uuid.uuid4().hex[:8]}",
        "recorder_spill_dir": spill_dir,
        "recorder_grace_ms": 300,
        "recorder_commit_interval_s": 0.2,
    }
    values.update(overrides)
    return RecorderSettings(**values)


@contextlib.asynccontextmanager
async def running_recorder(settings: RecorderSettings) -> AsyncIterator[RecorderService]:
    store = settings.open_store()
    await asyncio.to_thread(store.check)
    async with running(wiring.recorder_service(settings, store)) as service:
        yield service


@contextlib.asynccontextmanager
async def running(service: Worker) -> AsyncIterator[Any]:
    """Run a worker service in this event loop until the block ends; wait until ready."""
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        async with asyncio.timeout(30):
            while not service.ready:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        yield service
    finally:
        stop.set()
        await task


async def wait_for_manifests(store: S3Store, count: int, timeout: float = 60,
                             where: Callable[[str], bool] = lambda key: True) -> list[str]:
    """Keys of ``count`` manifests once that many exist; fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            keys = [k for k in await asyncio.to_thread(store.list_keys, "recordings/")
                    if k.endswith("/manifest.json") and where(k)]
            if len(keys) >= count:
                return keys
            await asyncio.sleep(0.2)


def load_manifest(store: S3Store, key: str) -> Manifest:
    return decode_manifest(store.get_bytes(key))


def wav_channels(data: bytes) -> tuple[int, list[bytes]]:
    """(sample rate, raw little-endian PCM16 bytes of each channel) of a WAV file."""
    with wave.open(io.BytesIO(data)) as w:
        assert w.getsampwidth() == 2
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels = w.getnchannels()
        rate = w.getframerate()
    return rate, [frames[i::channels].tobytes() for i in range(channels)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
