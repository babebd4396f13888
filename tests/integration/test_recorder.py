"""``callrec recorder`` end to end: simulate -> ingest -> Kafka -> recorder -> MinIO."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import prometheus_client
import pytest
from botocore.exceptions import ClientError

from callrec import simulator
from deploy.local import stack
from infra.audio import encode_pcm, load_audio
from infra.parquet import read_parquet
from infra.store.s3 import S3Store
from schemas import envelope
from schemas.codecs import L16_24K
from tests.integration.ingestutil import TOKEN, ingest_settings, running_ingest, stream_url
from tests.integration.kafkautil import read_until
from tests.integration.recorderutil import (
    load_manifest,
    new_bucket,
    recorder_settings,
    running_recorder,
    s3_store,
    sha256,
    wait_for_manifests,
    wav_channels,
)


@pytest.mark.parametrize("layout", ["both", "oneway"])
async def test_stereo_call_is_archived_sample_identical_with_checksums_and_a_calls_row(
    kafka: stack.KafkaServer, minio: stack.MinioServer, media_topic: str, data_dir: Path,
    tmp_path: Path, layout: simulator.Layout,
) -> None:
    source = load_audio(data_dir / "stereo_diarization.wav", L16_24K.sample_rate)
    expected = [encode_pcm(source[0], L16_24K), encode_pcm(source[1], L16_24K)]
    [call] = simulator.build_calls(data_dir / "stereo_diarization.wav", layout=layout,
                                   call_id_prefix=f"rec-{layout}")
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    settings = recorder_settings(kafka, minio, media_topic, bucket, str(tmp_path / "spill"))

    async with (running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest,
                running_recorder(settings)):
        report = await simulator.stream_call(stream_url(ingest, None), call, realtime=False,
                                             token=TOKEN)
        assert report.completed
        [manifest_key] = await wait_for_manifests(store, 1)

    manifest = load_manifest(store, manifest_key)
    assert manifest.call_id == call.call_id and manifest.part == 0
    assert manifest.complete and manifest.reason == ""
    assert manifest.tracks == ["inbound", "outbound"]
    assert {s.stream_id for s in manifest.streams} == {s.stream_id for s in report.streams}

    # Every object's bytes match the manifest's checksum and size.
    assert len(manifest.objects) == 3  # WAV, waveform peaks, calls row
    assert f"recordings/{manifest.recording_id}/peaks.json" in {o.key for o in manifest.objects}
    blobs = {o.key: store.get_bytes(o.key) for o in manifest.objects}
    for obj in manifest.objects:
        assert sha256(blobs[obj.key]) == obj.sha256 and len(blobs[obj.key]) == obj.size

    wav_key = manifest_key.replace("manifest.json", "audio.wav")
    rate, channels = wav_channels(blobs[wav_key])
    assert rate == 24000
    assert channels == expected, "both channels sample-identical to the source"

    [table_key] = [k for k in blobs if k.startswith("tables/calls/date=")]
    rows = read_parquet(blobs[table_key]).to_pylist()
    assert len(rows) == 1
    row = rows[0]
    assert (row["call_id"], row["complete"], row["tracks"], row["gaps"]) == (
        call.call_id, True, ["inbound", "outbound"], 0
    )
    assert row["duration_ms"] == len(expected[0]) * 1000 // (2 * 24000)
    assert row["wav_sha256"] == sha256(blobs[wav_key])
    assert row["recording_key"] == wav_key

    events = await read_until(kafka.bootstrap, settings.kafka_recordings_topic,
                              lambda r: len(r) >= 1)
    event = events[0].record
    assert isinstance(event, envelope.RecordingFinished)
    assert (event.call_id, event.wav_sha256, event.complete) == (
        call.call_id, row["wav_sha256"], True
    )


async def stream_calls(ingest_url: str, calls: list[simulator.SimulatedCall],
                       starts: list[float], realtime: bool = True) -> None:
    async def one(call: simulator.SimulatedCall, delay: float) -> None:
        await asyncio.sleep(delay)
        report = await simulator.stream_call(ingest_url, call, realtime=realtime, token=TOKEN)
        assert report.completed

    await asyncio.gather(*(one(c, d) for c, d in zip(calls, starts, strict=True)))


def assert_sample_identical(store: S3Store, manifest_keys: list[str],
                            calls: list[simulator.SimulatedCall]) -> None:
    by_call = {c.call_id: c for c in calls}
    assert sorted(load_manifest(store, k).call_id for k in manifest_keys) == sorted(by_call)
    for key in manifest_keys:
        manifest = load_manifest(store, key)
        assert manifest.complete, manifest.reason
        _, channels = wav_channels(store.get_bytes(key.replace("manifest.json", "audio.wav")))
        call = by_call[manifest.call_id]
        assert channels == [call.tracks["inbound"], call.tracks["outbound"]]


async def test_two_recorders_share_partitions_and_survive_rebalances_mid_call(
    kafka: stack.KafkaServer, minio: stack.MinioServer, media_topic: str, data_dir: Path,
    tmp_path: Path,
) -> None:
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    first = recorder_settings(kafka, minio, media_topic, bucket, str(tmp_path / "a"),
                              recorder_group_id="shared-group")
    second = first.model_copy(update={"recorder_spill_dir": str(tmp_path / "b")})
    calls = simulator.build_calls(data_dir / "stereo_diarization.wav", calls=8,
                                  layout="oneway", call_id_prefix="rebalance")
    starts = [i * 0.8 for i in range(len(calls))]  # calls run from 0 s to ~11 s

    async with running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest:
        url = stream_url(ingest, None)
        traffic = asyncio.create_task(stream_calls(url, calls, starts))
        async with running_recorder(first) as a:
            await asyncio.sleep(2)
            async with running_recorder(second) as b:
                # The group split the partitions between the two (a rebalance mid-call).
                async with asyncio.timeout(30):
                    while not (a.consumer.assignment() and b.consumer.assignment()):
                        await asyncio.sleep(0.1)
                shared = ({tp.partition for tp in a.consumer.assignment()},
                          {tp.partition for tp in b.consumer.assignment()})
                assert not shared[0] & shared[1] and len(shared[0] | shared[1]) == 4
                await asyncio.sleep(4)
            # ``b`` left mid-call: ``a`` takes its partitions back and replays them.
            await traffic
            keys = await wait_for_manifests(store, len(calls), 90)
    assert len(keys) == len(calls)
    assert_sample_identical(store, keys, calls)


async def test_object_lock_retention_and_legal_hold_on_every_object(
    kafka: stack.KafkaServer, minio: stack.MinioServer, media_topic: str, data_dir: Path,
    tmp_path: Path,
) -> None:
    bucket = new_bucket(minio, object_lock=True)
    store = s3_store(minio, bucket)
    settings = recorder_settings(kafka, minio, media_topic, bucket, str(tmp_path / "spill"),
                                 s3_object_lock_mode="GOVERNANCE", s3_object_lock_days=1,
                                 s3_legal_hold=True)
    [call] = simulator.build_calls(data_dir / "stereo_diarization.wav", call_id_prefix="worm")
    async with (running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest,
                running_recorder(settings)):
        await stream_calls(stream_url(ingest, None), [call], [0], realtime=False)
        [manifest_key] = await wait_for_manifests(store, 1)
    keys = [manifest_key, *(o.key for o in load_manifest(store, manifest_key).objects)]
    assert len(keys) == 4  # manifest, WAV, peaks, calls row: every one under WORM
    for key in keys:
        head = store.client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockLegalHoldStatus"] == "ON"
        assert head["ObjectLockRetainUntilDate"] > dt.datetime.now(dt.UTC)
        with pytest.raises(ClientError) as refused:
            store.client.delete_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])
        # AWS answers AccessDenied; MinIO InvalidRequest "Object is WORM protected".
        assert refused.value.response["Error"]["Code"] in ("AccessDenied", "InvalidRequest")
        still = store.client.head_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])
        assert still["ETag"] == head["ETag"]


async def test_a_replay_finds_every_manifest_and_rewrites_nothing(
    kafka: stack.KafkaServer, minio: stack.MinioServer, media_topic: str, data_dir: Path,
    tmp_path: Path,
) -> None:
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    settings = recorder_settings(kafka, minio, media_topic, bucket, str(tmp_path / "one"))
    calls = simulator.build_calls(data_dir / "stereo_diarization.wav", calls=3,
                                  call_id_prefix="replay")
    async with (running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest,
                running_recorder(settings)):
        await stream_calls(stream_url(ingest, None), calls, [0, 0, 0], realtime=False)
        await wait_for_manifests(store, 3)
    before = {o["Key"]: (o["ETag"], o["LastModified"])
              for o in store.client.list_objects_v2(Bucket=bucket)["Contents"]}
    replayed = metric("callrec_recorder_recordings_total", outcome="already_archived")
    # A new group starts from the earliest offset: a recorder that crashed before any commit.
    again = settings.model_copy(update={"recorder_group_id": "replay-" + settings.recorder_group_id,
                                        "recorder_spill_dir": str(tmp_path / "two")})
    async with running_recorder(again):
        async with asyncio.timeout(60):
            while metric("callrec_recorder_recordings_total",
                         outcome="already_archived") < replayed + 3:
                await asyncio.sleep(0.1)
    after = {o["Key"]: (o["ETag"], o["LastModified"])
             for o in store.client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert after == before
    events = await read_until(kafka.bootstrap, settings.kafka_recordings_topic,
                              lambda r: len(r) >= 6)
    assert len({e.record.call_id for e in events}) == 3, "events re-sent, ids unchanged"


def metric(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0
