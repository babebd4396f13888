"""``callrec up``: the pipeline in one process, crash recovery, and parity with the
distributed deployment (Kafka + MinIO) for the same input."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from callrec import simulator
from callrec.configdoc import IGNORED
from callrec.up import EmbeddedPipeline, UpSettings
from deploy.local import stack
from infra.parquet import read_parquet
from infra.store.local import LocalStore
from schemas.manifest import decode_manifest
from schemas.tables import TABLES
from tests.integration.ingestutil import TOKEN, ingest_settings, running_ingest, stream_url
from tests.integration.recorderutil import (
    load_manifest,
    new_bucket,
    recorder_settings,
    running_recorder,
    s3_store,
    wait_for_manifests,
    wav_channels,
)
from tests.integration.test_analyzer import (
    analyzer_settings,
    running_analyzer,
    wait_for_transcripts,
)
from workers.analyzer.transcribe import TranscriberConfig, WhisperTranscriber

POD = "ingest-test"


class ReadTrackingSettings(UpSettings):
    """UpSettings that note every field the running process reads."""

    fields_read: ClassVar[set[str]] = set()

    def __getattribute__(self, name: str) -> Any:
        if name in type(self).model_fields:
            type(self).fields_read.add(name)
        return super().__getattribute__(name)


def up_settings(data_dir: Path, settings_class: type[UpSettings] = UpSettings,
                **overrides: Any) -> UpSettings:
    values: dict[str, Any] = {
        "up_data_dir": str(data_dir),
        "ingest_host": "127.0.0.1",
        "ingest_port": 0,
        "console_host": "127.0.0.1",
        "console_port": 0,
        "ingest_tokens": TOKEN,
        "ingest_pod_name": POD,
        "recorder_grace_ms": 300,
        "recorder_commit_interval_s": 0.2,
    }
    values.update(overrides)
    return settings_class(**values)


@contextlib.asynccontextmanager
async def running_up(settings: UpSettings) -> AsyncIterator[EmbeddedPipeline]:
    embedded = EmbeddedPipeline(settings)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(embedded.run(stop, ready))
    try:
        async with asyncio.timeout(60):
            await asyncio.wait([task, asyncio.create_task(ready.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        yield embedded
    finally:
        stop.set()
        await task


async def local_manifests(store: LocalStore, count: int, timeout: float = 60) -> list[str]:
    async with asyncio.timeout(timeout):
        while True:
            keys = [k for k in store.list_keys("recordings/") if k.endswith("/manifest.json")]
            if len(keys) >= count:
                return keys
            await asyncio.sleep(0.1)


def without_jitter(tables: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    return [[{k: v for k, v in row.items() if k != "jitter_ms"} for row in rows]
            for rows in tables]


async def local_transcripts(store: LocalStore, count: int, timeout: float = 120) -> list[str]:
    async with asyncio.timeout(timeout):
        while True:
            keys = [k for k in store.list_keys("recordings/") if k.endswith("/transcript.json")]
            if len(keys) >= count:
                return keys
            await asyncio.sleep(0.2)


async def test_up_records_a_stereo_call_sample_identical(data_dir: Path, tmp_path: Path) -> None:
    [call] = simulator.build_calls(data_dir / "stereo_diarization.wav", layout="oneway",
                                   call_id_prefix="up")
    ReadTrackingSettings.fields_read.clear()
    async with running_up(up_settings(tmp_path / "data", ReadTrackingSettings)) as up:
        url = f"ws://127.0.0.1:{up.ingest.port}/v1/stream"
        report = await simulator.stream_call(url, call, realtime=False, token=TOKEN)
        assert report.completed
        store = LocalStore(tmp_path / "data" / "archive")
        [key] = await local_manifests(store, 1)
    manifest = decode_manifest(store.get_bytes(key))
    assert manifest.complete
    _, channels = wav_channels(store.get_bytes(key.replace("manifest.json", "audio.wav")))
    assert channels == [call.tracks["inbound"], call.tracks["outbound"]]
    # docs/configuration.md says up ignores these variables: it never reads them.
    read = ReadTrackingSettings.fields_read
    assert {"ingest_port", "recorder_grace_ms", "analyzer_model", "up_data_dir"} <= read
    assert not read & set(IGNORED["up"]), "read by up: remove from IGNORED['up']"


def start_up(data: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "CALLREC_UP_DATA_DIR": str(data), "CALLREC_INGEST_PORT": "0",
           "CALLREC_INGEST_HOST": "127.0.0.1", "CALLREC_INGEST_TOKENS": TOKEN,
           "CALLREC_RECORDER_GRACE_MS": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "callrec.cli", "up"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if match := re.search(r"ws://<host>:(\d+)/", line):
            return proc, int(match.group(1))
    raise AssertionError(f"callrec up exited with {proc.wait()}")


def media_taken(port: int) -> int:
    """Media frames ``callrec up`` has published, from its ``/metrics``: each is counted as
    ingest hands it to the local log, in the same step as the append. Frames still in a
    coalescing window (CALLREC_INGEST_COALESCE_MS) were read but not published: never
    acknowledged, so a kill may lose them (docs/reliability.md)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r"^callrec_ingest_published_frames_total (\S+)$", text, re.MULTILINE)
    assert match, text
    return int(float(match.group(1)))


def kept_frames(recorded: bytes, source: bytes, frame: int = 960) -> int:
    """How many 20 ms frames from the start of ``recorded`` are the source's, exactly."""
    n = 0
    while recorded[n * frame:(n + 1) * frame] == source[n * frame:(n + 1) * frame] != b"":
        n += 1
    return n


async def test_kill_9_mid_call_then_restart_archives_the_audio_received_as_incomplete(
    data_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    [call] = simulator.build_calls(data_dir / "stereo_diarization.wav", layout="both",
                                   call_id_prefix="cut")
    proc, port = await asyncio.to_thread(start_up, data)
    try:
        url = f"ws://127.0.0.1:{port}/v1/stream"
        streaming = asyncio.create_task(
            simulator.stream_call(url, call, realtime=True, token=TOKEN))
        # Kill once 2 s of the 5 s call are in, right after reading how much ingest took:
        # everything counted then was appended to the local log before the kill.
        async with asyncio.timeout(30):
            while (taken := await asyncio.to_thread(media_taken, port)) < 2 * 100:
                await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        report = await streaming
        assert not report.completed
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stdout is not None
        proc.stdout.close()
        proc.wait()

    proc, _ = await asyncio.to_thread(start_up, data)
    try:
        store = LocalStore(data / "archive")
        [key] = await local_manifests(store, 1, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
        assert proc.stdout is not None
        proc.stdout.close()
    manifest = decode_manifest(store.get_bytes(key))
    assert not manifest.complete
    assert "callrec restarted before the stream ended" in manifest.reason
    _, channels = wav_channels(store.get_bytes(key.replace("manifest.json", "audio.wav")))
    [stream] = report.streams
    # One connection carries both tracks, inbound then outbound in each 20 ms tick, so
    # of the media frames ingest had published, half (rounded up) were inbound.
    taken_per_track = {"inbound": (taken + 1) // 2, "outbound": taken // 2}
    for track, recorded in zip(simulator.TRACKS, channels, strict=True):
        kept = kept_frames(recorded, call.tracks[track])
        assert kept >= taken_per_track[track], (
            f"{track}: {kept} frames kept, {taken_per_track[track]} taken before the kill")
        assert kept <= len(stream.sent_chunks[track]), "no more than was sent"
        # After the kept frames only the silence that pads a track to the other one's
        # length: one frame, when the kill fell between a tick's inbound and outbound.
        padding = recorded[kept * 960:]
        assert padding == bytes(len(padding)) and len(padding) <= 960, track
        assert manifest.counts[track].gaps == 0, "nothing missing inside what was kept"


@pytest.fixture(scope="module")
def whisper() -> WhisperTranscriber:
    return WhisperTranscriber(TranscriberConfig(cpu_threads=2))


FAULTS = simulator.Faults(drop=0.03, duplicate=0.03, reorder=0.03, seed=11)
"""Lost, repeated and swapped chunks, the same ones on both runs (drawn from the seed and
the call id): the reorder, dedupe and gap-fill paths are compared too."""


class SeededStreamIds:
    """Stands in for the simulator's ``uuid`` module: stream ids (random UUIDs, as Wavix's)
    drawn from a seed, restarted for each run. Stream ids are input like the audio: a
    reason such as ``stream <id>: gaps, 7 chunks missing`` is part of the ``calls`` row."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._draws = random.Random("parity stream ids")

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._draws.getrandbits(128), version=4)


@pytest.mark.parametrize("faults", [simulator.Faults(), FAULTS], ids=["clean", "faults"])
async def test_both_backends_write_the_same_bytes_checksums_and_rows(
    kafka: stack.KafkaServer, minio: stack.MinioServer, media_topic: str, data_dir: Path,
    tmp_path: Path, whisper: WhisperTranscriber, faults: simulator.Faults,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = simulator.build_calls(data_dir / "stereo_diarization.wav", calls=2, layout="oneway",
                                  call_id_prefix="parity")
    wavix_time = time.time() - 3600  # the same Wavix event times on both runs
    stream_ids = SeededStreamIds()
    monkeypatch.setattr(simulator.plan, "uuid", stream_ids)
    sent: list[list[object]] = []

    async def send(url: str) -> None:
        stream_ids.restart()
        run: list[object] = []
        for call in calls:
            report = await simulator.stream_call(url, call, realtime=False, token=TOKEN,
                                                 faults=faults, started_at=wavix_time)
            assert report.completed
            run += [(s.stream_id, s.sent_chunks, s.dropped) for s in report.streams]
        sent.append(run)

    async with running_up(up_settings(tmp_path / "data")) as up:
        await send(f"ws://127.0.0.1:{up.ingest.port}/v1/stream")
        local = LocalStore(tmp_path / "data" / "archive")
        local_keys = await local_manifests(local, len(calls))
        await local_transcripts(local, len(calls))

    bucket = new_bucket(minio)
    remote = s3_store(minio, bucket)
    settings = recorder_settings(kafka, minio, media_topic, bucket, str(tmp_path / "spill"))
    analysis = analyzer_settings(kafka, minio, settings.kafka_recordings_topic, bucket)
    async with (running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest,
                running_recorder(settings), running_analyzer(analysis, whisper)):
        await send(stream_url(ingest, None))
        remote_keys = await wait_for_manifests(remote, len(calls))
        transcripts = await wait_for_transcripts(remote, len(calls))

    assert sent[0] == sent[1], "both backends got the very same chunks, faults included"
    assert sorted(local_keys) == sorted(remote_keys)
    for key in transcripts:
        assert local.get_bytes(key) == remote.get_bytes(key), key
    for key in local_keys:
        here, there = decode_manifest(local.get_bytes(key)), load_manifest(remote, key)
        assert here.objects == there.objects, "same keys, sizes and sha256 for every object"
        for obj in here.objects:
            assert local.get_bytes(obj.key) == remote.get_bytes(obj.key)
    local_rows = [read_parquet(local.get_bytes(k)).to_pylist()
                  for k in local.list_keys("tables/")]
    remote_rows = [read_parquet(remote.get_bytes(k)).to_pylist()
                   for k in remote.list_keys("tables/")]
    assert len(local_rows) == len(TABLES) * len(calls), "a file per table and recording"
    # jitter_ms measures when ingest received each chunk: a property of the network on
    # that run, not of the input, so it differs between any two runs. Present on both.
    assert all("jitter_ms" in row for rows in local_rows + remote_rows for row in rows
               if "talk_ms" in row)
    assert without_jitter(local_rows) == without_jitter(remote_rows)
    assert any(row.get("text") for rows in local_rows for row in rows), "speech transcribed"
    calls_rows = [row for rows in local_rows for row in rows if "wav_sha256" in row]
    assert len(calls_rows) == len(calls)
    repaired = ("gaps", "duplicates", "out_of_order")
    if faults == FAULTS:
        assert all(row[k] > 0 for row in calls_rows for k in repaired), calls_rows
        assert not any(row["complete"] for row in calls_rows), "chunks are missing"
    else:
        assert all(row[k] == 0 for row in calls_rows for k in repaired), calls_rows
