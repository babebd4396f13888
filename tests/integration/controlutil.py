"""The control plane end to end in the test's event loop: emulator, control, ingest,
recorder, against real Kafka and MinIO."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from callrec.commands_control import running_control
from callrec.emulator.calls import EmulatedCall
from callrec.emulator.webhook import WavixEmulator
from control.api import ControlApi
from control.controller import Controller
from control.settings import ControlSettings
from deploy.local import stack
from infra.store.s3 import S3Store
from ingest.server import IngestServer
from schemas.codecs import DEFAULT_CODEC
from tests.integration.conftest import create_topics
from tests.integration.ingestutil import ingest_settings, running_ingest
from tests.integration.recorderutil import (
    new_bucket,
    recorder_settings,
    running_recorder,
    s3_store,
)

API_KEY = "wavix-test-key"
WEBHOOK_SECRET = "s" * 40
API_TOKEN = "control-api-token"
TOKEN_KEYS = "k1:0123456789abcdef0123456789abcdef"


@dataclass
class Topics:
    media: str
    recordings: str
    calls: str
    control: str


async def new_topics(kafka: stack.KafkaServer) -> Topics:
    suffix = uuid.uuid4().hex[:10]
    topics = Topics(
        f"callrec.media.test-{suffix}",
        f"callrec.recordings.test-{suffix}",
        f"callrec.calls.test-{suffix}",
        f"callrec.control.test-{suffix}",
    )
    await create_topics(
        kafka.bootstrap, topics.media, topics.recordings, topics.calls, topics.control
    )
    return topics


def audio(seed: int, ms: int) -> bytes:
    """Deterministic noise, distinct per seed, in the default codec (PCM16 24 kHz)."""
    rng = np.random.default_rng(seed)
    samples = DEFAULT_CODEC.sample_rate * ms // 1000
    return rng.integers(-8000, 8000, samples, dtype="<i2").tobytes()


def call(
    n: int,
    *,
    from_number: str,
    to_number: str = "+15550100",
    ms: int = 1000,
    direction: str = "inbound",
    answered: bool = True,
    tag: str | None = None,
    prefix: str = "call",
) -> EmulatedCall:
    return EmulatedCall(
        call_id=f"{prefix}-{n:02d}",
        from_number=from_number,
        to_number=to_number,
        direction=direction,
        tag=tag,
        answered=answered,
        tracks={"inbound": audio(2 * n, ms), "outbound": audio(2 * n + 1, ms)},
    )


def control_settings(
    kafka: stack.KafkaServer,
    minio: stack.MinioServer,
    topics: Topics,
    bucket: str,
    ingest: IngestServer,
    wavix_url: str,
    **overrides: Any,
) -> ControlSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka.bootstrap,
        "kafka_media_topic": topics.media,
        "kafka_recordings_topic": topics.recordings,
        "kafka_calls_topic": topics.calls,
        "kafka_control_topic": topics.control,
        "archive_uri": f"s3://{bucket}",
        "s3_endpoint_url": minio.endpoint,
        "s3_access_key_id": minio.access_key,
        "s3_secret_access_key": minio.secret_key,
        "control_host": "127.0.0.1",
        "control_port": 0,
        "control_webhook_secret": WEBHOOK_SECRET,
        "control_api_token": API_TOKEN,
        "control_group_id": f"controller-{uuid.uuid4().hex[:8]}",
        "control_stream_url": f"ws://127.0.0.1:{ingest.port}/v1/stream",
        "stream_token_keys": TOKEN_KEYS,
        "wavix_api_url": wavix_url,
        "wavix_api_key": API_KEY,
        "wavix_backoff_s": 0.05,
        "wavix_timeout_s": 2.0,
    }
    values.update(overrides)
    return ControlSettings(**values)


@dataclass
class Stack:
    emulator: WavixEmulator
    api: ControlApi | None
    api_port: int | None
    controller: Controller | None
    ingest: IngestServer
    store: S3Store
    settings: ControlSettings
    topics: Topics
    bucket: str

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v1/wavix/events/{WEBHOOK_SECRET}"


@contextlib.asynccontextmanager
async def running_stack(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path, **control_overrides: Any
) -> AsyncIterator[Stack]:
    topics = await new_topics(kafka)
    bucket = new_bucket(minio)
    rec_settings = recorder_settings(
        kafka,
        minio,
        topics.media,
        bucket,
        str(tmp_path / "spill"),
        kafka_recordings_topic=topics.recordings,
    )
    ing_settings = ingest_settings(kafka.bootstrap, topics.media, stream_token_keys=TOKEN_KEYS)
    emulator = WavixEmulator(
        api_key=API_KEY, webhook_url="http://unset.invalid/", rest_timeout_s=5.0
    )
    await emulator.start()
    try:
        async with running_ingest(ing_settings) as ingest, running_recorder(rec_settings):
            settings = control_settings(
                kafka, minio, topics, bucket, ingest, emulator.api_url, **control_overrides
            )
            store = s3_store(minio, bucket)
            async with running_control(settings, store=store) as (api, port, controller):
                result = Stack(
                    emulator, api, port, controller, ingest, store, settings, topics, bucket
                )
                emulator.webhook_url = result.webhook_url
                yield result
    finally:
        await emulator.close()


async def wait_until(predicate: Any, timeout: float = 60, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.2)


def settings_env(settings: ControlSettings, **overrides: str) -> dict[str, str]:
    """The ``CALLREC_*`` environment that reproduces ``settings`` in another process."""
    import os

    from pydantic import SecretStr

    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"CALLREC_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    env.update(overrides)
    return env


async def start_controller_process(
    settings: ControlSettings, log_path: Path
) -> asyncio.subprocess.Process:
    """``callrec control`` as a controller only, in its own process; returns once running.
    Its log goes to ``log_path``."""
    import sys

    with open(log_path, "ab") as log_file:  # noqa: ASYNC230 (a local file, at once)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callrec.cli",
            "control",
            env=settings_env(settings, CALLREC_CONTROL_ROLE="controller"),
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        line = await proc.stdout.readline()
    assert b"controller running" in line, line
    return proc
