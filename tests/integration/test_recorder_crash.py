"""Exactly once under ``kill -9``: a recorder killed at random moments archives every
recording byte-identical to an undisturbed recorder, with no duplicate and none missing."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import pyarrow as pa

from callrec import simulator
from deploy.local import stack
from infra.parquet import read_parquet
from tests.integration.ingestutil import TOKEN, ingest_settings, running_ingest, stream_url
from tests.integration.recorderutil import (
    recorder_settings,
    running_recorder,
    s3_store,
    wait_for_manifests,
)

CALLS = 20
BUCKET = "callrec"


def recorder_process(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "callrec.cli", "recorder"],
        env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
    )


def settings_env(settings: object) -> dict[str, str]:
    """The CALLREC_* environment that reproduces ``settings`` in a subprocess."""
    from pydantic import SecretStr

    env = {}
    for name, value in settings.model_dump().items():  # type: ignore[attr-defined]
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env["CALLREC_" + name.upper()] = str(value)
    return env


async def test_kill_9_at_random_moments_changes_no_byte(
    kafka: stack.KafkaServer, minio: stack.MinioServer, media_topic: str, data_dir: Path,
    tmp_path: Path,
) -> None:
    rng = random.Random(20251121)
    # Two archives with the same bucket name, so even the s3:// URIs in rows match.
    other = stack.MinioServer(tmp_path / "minio-undisturbed")
    other.start()
    try:
        for server in (minio, other):
            s3_store(server, BUCKET).create_bucket()
        calm = recorder_settings(kafka, other, media_topic, BUCKET, str(tmp_path / "calm"))
        crashy = recorder_settings(kafka, minio, media_topic, BUCKET, str(tmp_path / "crashy"),
                                   recorder_session_timeout_ms=6000,
                                   recorder_port=0, log_level="INFO")
        env = settings_env(crashy)
        log = (tmp_path / "recorder.log").open("ab")
        calls = simulator.build_calls(data_dir / "stereo_diarization.wav", calls=CALLS,
                                      layout="oneway", call_id_prefix="crash")

        async with (running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest,
                    running_recorder(calm)):
            proc = recorder_process(env, log)

            async def one_call(call: simulator.SimulatedCall) -> None:
                await asyncio.sleep(rng.uniform(0, 8))
                report = await simulator.stream_call(stream_url(ingest, None), call,
                                                     realtime=True, token=TOKEN)
                assert report.completed

            async def chaos() -> None:
                nonlocal proc
                for _ in range(3):
                    await asyncio.sleep(rng.uniform(1.5, 4.5))
                    proc.send_signal(signal.SIGKILL)
                    await asyncio.to_thread(proc.wait)
                    await asyncio.sleep(rng.uniform(0.0, 1.0))
                    proc = recorder_process(env, log)

            try:
                await asyncio.gather(chaos(), *(one_call(c) for c in calls))
                calm_keys = await wait_for_manifests(s3_store(other, BUCKET), CALLS, 120)
                crashy_keys = await wait_for_manifests(s3_store(minio, BUCKET), CALLS, 180)
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 30)

        assert len(calm_keys) == CALLS, "one recording per call, no extra part"
        assert sorted(crashy_keys) == sorted(calm_keys)
        calm_store, crashy_store = s3_store(other, BUCKET), s3_store(minio, BUCKET)
        calm_all = calm_store.list_keys("")
        assert crashy_store.list_keys("") == calm_all
        for key in calm_all:
            assert crashy_store.get_bytes(key) == calm_store.get_bytes(key), key
        rows = pa.concat_tables(
            read_parquet(crashy_store.get_bytes(k)) for k in calm_all if k.startswith("tables/")
        ).to_pylist()
        assert len(rows) == CALLS
        assert sorted(r["call_id"] for r in rows) == sorted(c.call_id for c in calls)
        assert all(r["complete"] for r in rows)
        log.close()
    finally:
        other.stop()
