"""How recordings end: idle timeout, a new part after finalization, an S3 outage."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import prometheus_client
from aiokafka import AIOKafkaProducer

from callrec import simulator
from deploy.local import stack
from schemas import envelope
from tests.integration import wavixclient as wx
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


def metric(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_call_whose_ingest_pod_vanished_ends_incomplete_by_idle_timeout(
    kafka: stack.KafkaServer, minio: stack.MinioServer, media_topic: str, tmp_path: Path,
) -> None:
    """Start and 50 chunks, then nothing: no close record ever comes."""
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        now = time.time_ns()
        records: list[envelope.Record] = [envelope.StreamStarted(
            call_id="call-orphan", stream_id="s1", stream_type="oneway", channel="inbound",
            codec="L16/24000", ingest_pod="ingest-gone", connection_id="c1", received_ns=now,
            event_time="2025-11-21T08:00:00.000Z",
        )]
        records += [envelope.MediaChunk(
            call_id="call-orphan", stream_id="s1", track="inbound", chunk=i,
            timestamp_ms=(i - 1) * 20, codec="L16/24000", payload=wx.frame(i),
            received_ns=now + i * 20_000_000,
        ) for i in range(1, 51)]
        for record in records:
            await producer.send(media_topic, envelope.encode(record), key=b"call-orphan")
        await producer.flush()
    finally:
        await producer.stop()

    settings = recorder_settings(kafka, minio, media_topic, bucket, str(tmp_path / "spill"),
                                 recorder_idle_timeout_s=2.0)
    async with running_recorder(settings):
        [key] = await wait_for_manifests(store, 1, timeout=30)
    manifest = load_manifest(store, key)
    assert not manifest.complete
    assert "stream s1: not closed (idle timeout)" in manifest.reason
    _, [channel] = wav_channels(store.get_bytes(key.replace("manifest.json", "audio.wav")))
    assert channel == b"".join(wx.frame(i) for i in range(1, 51))


async def test_a_stream_after_finalization_starts_a_new_part_and_never_overwrites(
    kafka: stack.KafkaServer, minio: stack.MinioServer, media_topic: str, data_dir: Path,
    tmp_path: Path,
) -> None:
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    settings = recorder_settings(kafka, minio, media_topic, bucket, str(tmp_path / "spill"))
    [first] = simulator.build_calls(data_dir / "stereo_diarization.wav", layout="both",
                                    call_id_prefix="parts")
    # The second stream of the call carries only the outbound side (say, a re-started stream).
    later = simulator.SimulatedCall(first.call_id, {"outbound": first.tracks["outbound"]},
                                    layout="oneway")
    async with (running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest,
                running_recorder(settings)):
        url = stream_url(ingest, None)
        assert (await simulator.stream_call(url, first, realtime=False, token=TOKEN)).completed
        [part0] = await wait_for_manifests(store, 1)
        part0_bytes = {k: store.get_bytes(k) for k in store.list_keys("recordings/")}
        assert (await simulator.stream_call(url, later, realtime=False, token=TOKEN)).completed
        keys = await wait_for_manifests(store, 2)
    part1 = next(k for k in keys if k != part0)
    assert part0 == f"recordings/{first.call_id}-0/manifest.json"
    assert part1 == f"recordings/{first.call_id}-1/manifest.json"
    assert {k: store.get_bytes(k) for k in part0_bytes} == part0_bytes, "part 0 untouched"
    second = load_manifest(store, part1)
    assert (second.part, second.tracks, second.complete) == (1, ["outbound"], True)
    _, [channel] = wav_channels(store.get_bytes(part1.replace("manifest.json", "audio.wav")))
    assert channel == first.tracks["outbound"]


def lag() -> float:
    """callrec_recorder_consumer_lag_records, summed over partitions."""
    return sum(
        s.value for m in prometheus_client.REGISTRY.collect()
        if m.name == "callrec_recorder_consumer_lag_records" for s in m.samples
    )


async def test_a_30_second_s3_outage_loses_nothing(
    kafka: stack.KafkaServer, media_topic: str, data_dir: Path, tmp_path: Path,
) -> None:
    # Restarted from a worker thread below: not tied to a thread's life (stopped in finally).
    minio = stack.MinioServer(tmp_path / "minio-outage", die_with_parent=False)
    minio.start()
    try:
        bucket = new_bucket(minio)
        store = s3_store(minio, bucket)
        settings = recorder_settings(kafka, minio, media_topic, bucket, str(tmp_path / "spill"))
        calls = simulator.build_calls(data_dir / "stereo_diarization.wav", calls=4,
                                      layout="oneway", call_id_prefix="s3-outage")
        late_call = calls.pop()  # streamed while the partitions are paused
        errors_before = sum(
            s.value for m in prometheus_client.REGISTRY.collect()
            if m.name == "callrec_recorder_s3_errors" for s in m.samples
            if s.name.endswith("_total")
        )
        async with (running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest,
                    running_recorder(settings)):
            url = stream_url(ingest, None)

            async def one(call: simulator.SimulatedCall, delay: float) -> None:
                await asyncio.sleep(delay)
                report = await simulator.stream_call(url, call, realtime=True, token=TOKEN)
                assert report.completed

            traffic = asyncio.gather(*(one(c, i * 1.5) for i, c in enumerate(calls)))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(minio.stop)
            await traffic  # every call ends while S3 is away
            async with asyncio.timeout(30):
                while metric("callrec_recorder_paused") != 1:
                    await asyncio.sleep(0.1)
            # A call streamed now is not read while the partitions are paused: its records
            # show as lag (the log end asked of the broker, not that of the last fetch).
            published = metric("callrec_ingest_records_total")
            report = await simulator.stream_call(url, late_call, realtime=False, token=TOKEN)
            assert report.completed
            calls.append(late_call)
            # Every record Kafka acknowledged for it (coalesced frames, start, close).
            unread = metric("callrec_ingest_records_total") - published
            assert unread > 0
            async with asyncio.timeout(10):
                while lag() < unread:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(25)
            await asyncio.to_thread(minio.start)
            keys = await wait_for_manifests(store, len(calls), timeout=90)
            assert metric("callrec_recorder_paused") == 0
            async with asyncio.timeout(10):  # caught up again
                while lag() != 0:
                    await asyncio.sleep(0.1)
        errors_after = sum(
            s.value for m in prometheus_client.REGISTRY.collect()
            if m.name == "callrec_recorder_s3_errors" for s in m.samples
            if s.name.endswith("_total")
        )
        assert errors_after > errors_before
        by_call = {c.call_id: c for c in calls}
        for key in keys:
            manifest = load_manifest(store, key)
            assert manifest.complete
            _, channels = wav_channels(store.get_bytes(key.replace("manifest.json", "audio.wav")))
            call = by_call[manifest.call_id]
            assert channels == [call.tracks["inbound"], call.tracks["outbound"]]
    finally:
        minio.stop()
