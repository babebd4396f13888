"""The fast subset of the fault matrix (bench/reliability.py runs the whole of it).

20 real-time two-track calls through real ``callrec ingest`` and ``callrec
recorder`` processes, Kafka and MinIO, while the recorder is killed with
``kill -9`` and restarted and then the Kafka broker is stopped for 10 s: every
call must be archived exactly once, complete and sample-identical to the audio
sent, and the pipeline must catch up after each fault.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from websockets.asyncio.client import connect

from bench.loadharness.run import Run, RunConfig
from bench.loadharness.scenarios import broker_outage
from deploy.local import stack
from tests.integration import wavixclient as wx
from tests.integration.conftest import create_topics
from tests.integration.ingestutil import ingest_settings, running_ingest, stream_url
from tests.integration.kafkautil import chunks, closes, read_until

CALLS = 20


def test_recorder_kill_and_broker_outage_under_load_lose_nothing(
    minio: stack.MinioServer, tmp_path: Path
) -> None:
    # A broker of its own: this test stops and restarts it (from this thread).
    kafka = stack.KafkaServer(tmp_path / "kafka")
    kafka.start()
    try:
        cfg = RunConfig("fast", calls=CALLS, duration_s=24, ramp_s=3, idle_baseline_s=1,
                        settle_timeout_s=60, load_slack_s=60)
        with Run(cfg, tmp_path, kafka=kafka, minio=minio) as run:
            run.start_load()
            run.at(3.0)
            start = run.begin_fault()
            run.kill_recorder(0)
            run.at(4.0)
            restarted = run.start_recorder(wait=False)
            run.fault("recorder kill -9", start, restarted.started_at)
            # The killed member leaves the group after the 6 s session timeout; then the
            # restarted one replays. The broker goes away once that is over.
            broker_outage(run, seconds=10.0, at=11.0)
            result = run.finish()
    finally:
        kafka.stop()

    assert result["outcomes"] == {"completed": CALLS}, result["outcomes"]
    assert result["lost"] == [], result["lost"][:5]
    assert result["verified_ok"] == CALLS
    assert result["cut"] == [] and result["other_recordings"] == 0
    kill, outage = result["faults"]
    assert kill["recovered"], kill
    assert outage["recovered"], outage
    # The restarted recorder replayed from the committed offsets: more records read
    # than the ingests acknowledged, yet no recording twice.
    assert result["recorder"]["records"] > result["ingest"]["records"]
    assert result["recorder"]["recordings"].get("complete", 0) >= 1
    assert result["lag_end"] == 0


async def test_backpressure_during_a_broker_outage_is_not_idleness(
    own_kafka: stack.KafkaServer,
) -> None:
    """A stream ingest stops reading (Kafka away, in-flight budget full) is not idle:
    the idle timeout (3 s here) must not close it during a 6 s outage."""
    broker = own_kafka
    topic = "callrec.media.backpressure-idle"
    await create_topics(broker.bootstrap, topic)
    settings = ingest_settings(broker.bootstrap, topic, ingest_max_inflight_bytes=65536,
                               ingest_idle_timeout_s=3.0)
    async with running_ingest(settings) as server:
        n = 600  # 12 s of audio at real-time pace
        sent = 0

        async def sender() -> None:
            nonlocal sent
            async with connect(stream_url(server)) as ws:
                await ws.send(wx.start("call-bp", "s1", "inbound").decode())
                t0 = time.monotonic()
                for i in range(1, n + 1):
                    await asyncio.sleep(max(0.0, t0 + i * 0.02 - time.monotonic()))
                    await ws.send(wx.media("call-bp", "s1", i, wx.frame(i)).decode())
                    sent = i
                await ws.send(wx.stop("call-bp", "s1").decode())

        async def outage() -> None:
            while sent < 100:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(6)
            await asyncio.to_thread(broker.start)

        await asyncio.gather(sender(), outage())
        records = await read_until(broker.bootstrap, topic, lambda r: bool(closes(r)),
                                   timeout=120)
    [closed] = closes(records)
    assert (closed.reason, closed.detail) == ("stop", "stop received")
    assert sorted({c.chunk for c in chunks(records, "call-bp")}) == list(range(1, n + 1))
