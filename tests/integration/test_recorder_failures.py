"""A recording that cannot be archived ends failed and written down; it never stalls its
partition: the group's committed offset moves past it and the next call is archived."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import prometheus_client
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from callrec import simulator
from deploy.local import stack
from schemas import envelope
from schemas.layout import failure_key, manifest_key
from schemas.tables import recording_id
from tests.integration.conftest import create_topics
from tests.integration.ingestutil import TOKEN, ingest_settings, running_ingest, stream_url
from tests.integration.kafkautil import read_until
from tests.integration.recorderutil import (
    load_manifest,
    new_bucket,
    recorder_settings,
    running_recorder,
    s3_store,
    wait_for_manifests,
)
from workers.recorder.failures import call_key, read_failure


def metric(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return meta.offset if meta is not None else -1


async def test_a_corrupt_manifest_fails_one_recording_and_commits_move_past_it(
    kafka: stack.KafkaServer, minio: stack.MinioServer, data_dir: Path, tmp_path: Path
) -> None:
    topic = f"callrec.media.test-{uuid.uuid4().hex[:10]}"
    await create_topics(kafka.bootstrap, topic, partitions=1)  # both calls on one partition
    tp = TopicPartition(topic, 0)
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    broken, nxt = simulator.build_calls(
        data_dir / "stereo_diarization.wav", calls=2, call_id_prefix=f"fail-{uuid.uuid4().hex[:6]}"
    )
    # Someone (or a torn upload by another tool) left garbage where part 0's manifest goes.
    store.put_bytes(
        manifest_key(recording_id(broken.call_id, 0)), b"{not a manifest", "application/json"
    )
    settings = recorder_settings(kafka, minio, topic, bucket, str(tmp_path / "spill"))
    failed_before = metric("callrec_recorder_recordings_total", outcome="failed")

    async with (
        running_ingest(ingest_settings(kafka.bootstrap, topic)) as ingest,
        running_recorder(settings),
    ):
        url = stream_url(ingest, None)
        report = await simulator.stream_call(url, broken, realtime=False, token=TOKEN)
        assert report.completed
        streams = len(report.streams)
        records = await read_until(
            kafka.bootstrap,
            topic,
            lambda r: (
                streams
                == sum(
                    isinstance(c.record, envelope.StreamClosed)
                    and c.record.call_id == broken.call_id
                    for c in r
                )
            ),
        )
        last_of_broken = max(c.offset for c in records if c.record.call_id == broken.call_id)
        first_of_broken = min(c.offset for c in records if c.record.call_id == broken.call_id)

        # The failure is written down, counted, and does not hold the partition.
        note_key = failure_key(call_key(broken.call_id), 0, first_of_broken)
        async with asyncio.timeout(60):
            while not await asyncio.to_thread(store.exists, note_key):
                await asyncio.sleep(0.2)
        async with asyncio.timeout(60):
            while (
                await committed(kafka.bootstrap, settings.recorder_group_id, tp) <= last_of_broken
            ):
                await asyncio.sleep(0.2)

        # The next call on the same partition is archived as usual.
        report = await simulator.stream_call(url, nxt, realtime=False, token=TOKEN)
        assert report.completed
        [key] = await wait_for_manifests(store, 1, where=lambda k: nxt.call_id in k)
        assert load_manifest(store, key).complete
        after = await read_until(kafka.bootstrap, topic, lambda r: len(r) > last_of_broken + 1)
        end = max(c.offset for c in after) + 1
        async with asyncio.timeout(60):
            while await committed(kafka.bootstrap, settings.recorder_group_id, tp) < end:
                await asyncio.sleep(0.2)

    note = read_failure(store.get_bytes(note_key))
    assert (note.call_id, note.topic, note.partition, note.first_offset) == (
        broken.call_id,
        topic,
        0,
        first_of_broken,
    )
    assert note.error == "DecodeError" and note.streams
    assert metric("callrec_recorder_recordings_total", outcome="failed") == failed_before + 1
    assert metric("callrec_recorder_archive_failures_total", error="DecodeError") >= 1
    # The garbage was not overwritten: a failed recording writes nothing but its note.
    assert store.get_bytes(manifest_key(recording_id(broken.call_id, 0))) == b"{not a manifest"
