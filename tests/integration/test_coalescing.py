"""Coalescing (``CALLREC_INGEST_COALESCE_MS``): the records change, the recording does not.

The same call, faults included, streamed in real time through ingest with one record per
frame and with a 100 ms window, each into its own topic, recorder and bucket: the Kafka
records differ (``MediaChunk`` per frame vs ``MediaBatch`` per window) and the archived WAV
is byte-identical, sample-exact to what was sent.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import msgspec
import pytest
from websockets.asyncio.client import connect

from callrec import simulator
from deploy.local import stack
from schemas import envelope, wavix
from tests.integration import wavixclient as wx
from tests.integration.conftest import create_topics
from tests.integration.ingestutil import TOKEN, ingest_settings, running_ingest, stream_url
from tests.integration.kafkautil import Consumed, chunks, closes, read_until
from tests.integration.recorderutil import (
    load_manifest,
    new_bucket,
    recorder_settings,
    running_recorder,
    s3_store,
    wait_for_manifests,
    wav_channels,
)

FAULTS = simulator.Faults(drop=0.03, duplicate=0.03, reorder=0.03, seed=5)


@pytest.mark.parametrize("faults", [simulator.Faults(), FAULTS], ids=["clean", "faults"])
async def test_coalesced_and_per_frame_records_archive_the_same_wav(
    kafka: stack.KafkaServer,
    minio: stack.MinioServer,
    media_topic: str,
    data_dir: Path,
    tmp_path: Path,
    faults: simulator.Faults,
) -> None:
    [call] = simulator.build_calls(
        data_dir / "stereo_diarization.wav", layout="both", call_id_prefix="coalesce"
    )
    wavix_time = time.time() - 3600
    batched_topic = f"callrec.media.test-{uuid.uuid4().hex[:10]}"
    await create_topics(kafka.bootstrap, batched_topic)
    runs: dict[float, tuple[list[Consumed], bytes, object, object]] = {}
    for coalesce_ms, topic in ((0.0, media_topic), (100.0, batched_topic)):
        bucket = new_bucket(minio)
        store = s3_store(minio, bucket)
        settings = recorder_settings(
            kafka, minio, topic, bucket, str(tmp_path / f"spill-{coalesce_ms:.0f}")
        )
        async with (
            running_ingest(
                ingest_settings(kafka.bootstrap, topic, ingest_coalesce_ms=coalesce_ms)
            ) as ingest,
            running_recorder(settings),
        ):
            report = await simulator.stream_call(
                stream_url(ingest, None),
                call,
                realtime=True,
                token=TOKEN,
                faults=faults,
                started_at=wavix_time,
            )
            assert report.completed
            [key] = await wait_for_manifests(store, 1)
        records = await read_until(kafka.bootstrap, topic, lambda r: len(closes(r)) == 1)
        manifest = load_manifest(store, key)
        wav = store.get_bytes(key.replace("manifest.json", "audio.wav"))
        # jitter_ms measures when ingest read each frame: the network's, on that run.
        counts = {t: msgspec.structs.replace(c, jitter_ms=0.0) for t, c in manifest.counts.items()}
        sent = [(s.sent_chunks, s.dropped) for s in report.streams]
        runs[coalesce_ms] = (records, wav, (manifest.complete, counts), sent)

    (per_frame, wav_0, outcome_0, sent_0), (batched, wav_100, outcome_100, sent_100) = (
        runs[0.0],
        runs[100.0],
    )
    assert sent_0 == sent_100, "the very same frames were sent, faults included"
    media_0 = [
        c.record
        for c in per_frame
        if isinstance(c.record, envelope.MediaChunk | envelope.MediaBatch)
    ]
    media_100 = [
        c.record for c in batched if isinstance(c.record, envelope.MediaChunk | envelope.MediaBatch)
    ]
    assert all(isinstance(r, envelope.MediaChunk) for r in media_0)
    assert all(isinstance(r, envelope.MediaBatch) for r in media_100)
    frames = chunks(batched, call.call_id)

    def sent_as(chunk: envelope.MediaChunk) -> tuple[object, ...]:
        return chunk.track, chunk.chunk, chunk.timestamp_ms, chunk.payload, chunk.seq

    assert [sent_as(c) for c in frames] == [sent_as(c) for c in chunks(per_frame, call.call_id)]
    assert len(media_100) * 5 <= len(frames), "about a record per 100 ms instead of per frame"
    [close] = closes(batched)
    assert close.chunks == len(frames), "the close record counts frames"
    assert batched[-1].record == close, "and follows every one of them"

    assert wav_100 == wav_0, "byte-identical recordings"
    assert outcome_100 == outcome_0, "same completeness and counts (gaps, duplicates...)"
    _, channels = wav_channels(wav_100)
    if faults == simulator.Faults():
        assert channels == [call.tracks["inbound"], call.tracks["outbound"]]


async def test_a_mark_and_the_close_follow_the_frames_read_before_them(
    kafka: stack.KafkaServer, media_topic: str
) -> None:
    # A window far longer than the call: only the mark, stop and the stream's end flush.
    settings = ingest_settings(kafka.bootstrap, media_topic, ingest_coalesce_ms=1000)
    async with running_ingest(settings) as ingest:
        async with connect(stream_url(ingest)) as ws:
            await ws.send(wx.start("call-mark", "s1", "inbound", stream_type="twoway").decode())
            for i in (1, 2, 3):
                await ws.send(wx.media("call-mark", "s1", i, wx.frame(i)).decode())
            await ws.send(
                wavix.encode(
                    wavix.Mark(call_id="call-mark", stream_id="s1", mark=wavix.MarkBody(name="m1"))
                ).decode()
            )
            for i in (4, 5, 6):
                await ws.send(wx.media("call-mark", "s1", i, wx.frame(i)).decode())
            await ws.send(wx.stop("call-mark", "s1").decode())
        records = await read_until(kafka.bootstrap, media_topic, lambda r: bool(closes(r)))

    log: list[object] = []
    for c in sorted(records, key=lambda c: c.offset):
        match c.record:
            case envelope.MediaBatch(frames=frames):
                log += [f.chunk for f in frames]
            case envelope.MarkReceived(name=name):
                log.append(name)
            case other:
                log.append(type(other).__name__)
    assert log == ["StreamStarted", 1, 2, 3, "m1", 4, 5, 6, "StreamClosed"]
    assert closes(records)[0].chunks == 6
