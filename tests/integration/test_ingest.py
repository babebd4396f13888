"""``callrec ingest`` against a real Kafka broker: auth, limits, bad input, probes, outages."""

from __future__ import annotations

import asyncio
import time

import prometheus_client
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from deploy.local import stack
from schemas import envelope
from tests.integration import wavixclient as wx
from tests.integration.conftest import create_topics
from tests.integration.ingestutil import (
    TOKEN,
    http_get,
    ingest_settings,
    running_ingest,
    stream_url,
)
from tests.integration.kafkautil import chunks, closes, read_until


def metric(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


async def send_call(url: str, call_id: str, stream_id: str, n: int,
                    extra: dict[int, list[bytes]] | None = None) -> None:
    """A well-behaved oneway inbound stream of ``n`` chunks; ``extra[i]`` goes before chunk i."""
    async with connect(url) as ws:
        await ws.send(b'{"event":"connected"}'.decode())
        await ws.send(wx.start(call_id, stream_id, "inbound").decode())
        for i in range(1, n + 1):
            for bad in (extra or {}).get(i, []):
                await ws.send(bad.decode(errors="replace"))
            await ws.send(wx.media(call_id, stream_id, i, wx.frame(i)).decode())
        await ws.send(wx.stop(call_id, stream_id).decode())


async def test_probes_and_metrics(kafka: stack.KafkaServer, media_topic: str) -> None:
    async with running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as server:
        assert await asyncio.to_thread(http_get, server.port, "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(http_get, server.port, "/readyz") == (200, "ready\n")
        status, body = await asyncio.to_thread(http_get, server.port, "/metrics")
        assert status == 200 and "callrec_ingest_connections_open" in body
        assert (await asyncio.to_thread(http_get, server.port, "/nope"))[0] == 404


@pytest.mark.parametrize("token", ["wrong", None, ""])
async def test_bad_or_missing_token_is_refused_with_401_before_upgrade(
    kafka: stack.KafkaServer, media_topic: str, token: str | None
) -> None:
    async with running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as server:
        before = metric("callrec_ingest_connections_total", outcome="unauthorized")
        with pytest.raises(InvalidStatus) as info:
            async with connect(stream_url(server, token)):
                pass
        assert info.value.response.status_code == 401
        assert metric("callrec_ingest_connections_total", outcome="unauthorized") == before + 1


async def test_token_in_the_path_is_accepted(kafka: stack.KafkaServer, media_topic: str) -> None:
    async with running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as server:
        url = f"ws://127.0.0.1:{server.port}/v1/stream/{TOKEN}"
        await send_call(url, "call-path", "s1", 3)
        records = await read_until(kafka.bootstrap, media_topic, lambda r: bool(closes(r)))
        assert [c.chunk for c in chunks(records, "call-path")] == [1, 2, 3]


async def test_oversized_frame_closes_1009_and_records_an_error_close(
    kafka: stack.KafkaServer, media_topic: str
) -> None:
    settings = ingest_settings(kafka.bootstrap, media_topic, ingest_max_message_bytes=4096)
    async with running_ingest(settings) as server:
        before = metric("callrec_ingest_invalid_messages_total", reason="too_big")
        async with connect(stream_url(server)) as ws:
            await ws.send(wx.start("call-big", "s1", "inbound").decode())
            await ws.send(wx.media("call-big", "s1", 1, wx.frame(1)).decode())
            await ws.send(wx.media("call-big", "s1", 2, wx.frame(2) * 4).decode())
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1009
        records = await read_until(kafka.bootstrap, media_topic, lambda r: bool(closes(r)))
        [closed] = closes(records)
        assert closed.reason == "error" and "1009" in closed.detail
        assert [c.chunk for c in chunks(records, "call-big")] == [1], records
        assert metric("callrec_ingest_invalid_messages_total", reason="too_big") == before + 1


async def test_bad_messages_mid_call_are_skipped_and_counted_and_spare_other_calls(
    kafka: stack.KafkaServer, media_topic: str
) -> None:
    async with running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as server:
        before = {r: metric("callrec_ingest_invalid_messages_total", reason=r)
                  for r in ("malformed_json", "bad_base64", "unknown_event")}
        bad_base64 = (b'{"event":"media","call_id":"call-bad","stream_id":"s1",'
                      b'"media":{"payload":"@@@@","track":"inbound","timestamp":0,"chunk":5}}')
        extra = {
            3: [b"{this is not json"],
            10: [bad_base64, b'{"event":"dance"}'],
            20: [b"\x00\x01 binary junk"],
        }
        await asyncio.gather(
            send_call(stream_url(server), "call-bad", "s1", 40, extra),
            send_call(stream_url(server), "call-good", "s2", 40),
        )
        records = await read_until(kafka.bootstrap, media_topic, lambda r: len(closes(r)) == 2)
        for call_id in ("call-bad", "call-good"):
            got = chunks(records, call_id)
            assert [c.chunk for c in got] == list(range(1, 41))
            assert all(c.payload == wx.frame(c.chunk) for c in got)
        close_by_call = {c.call_id: c for c in closes(records)}
        assert close_by_call["call-bad"].invalid == 4 and close_by_call["call-bad"].reason == "stop"
        assert close_by_call["call-good"].invalid == 0
        after = {r: metric("callrec_ingest_invalid_messages_total", reason=r) for r in before}
        assert after["malformed_json"] - before["malformed_json"] == 2
        assert after["bad_base64"] - before["bad_base64"] == 1
        assert after["unknown_event"] - before["unknown_event"] == 1


async def test_too_many_invalid_messages_close_1008(
    kafka: stack.KafkaServer, media_topic: str
) -> None:
    settings = ingest_settings(kafka.bootstrap, media_topic, ingest_max_invalid_messages=3)
    async with running_ingest(settings) as server, connect(stream_url(server)) as ws:
        await ws.send(wx.start("call-junk", "s1", "inbound").decode())
        for _ in range(4):
            await ws.send("junk")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1008
    records = await read_until(kafka.bootstrap, media_topic, lambda r: bool(closes(r)))
    assert closes(records)[0].reason == "error"
    assert "too_many_invalid" in closes(records)[0].detail


async def test_a_sixth_oneway_stream_of_a_call_is_refused_with_1008(
    kafka: stack.KafkaServer, media_topic: str
) -> None:
    async with running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as server:
        sockets = [await connect(stream_url(server)) for _ in range(6)]
        try:
            for i, ws in enumerate(sockets):
                await ws.send(wx.start("call-many", f"s{i}", "inbound").decode())
            with pytest.raises(ConnectionClosed):
                await sockets[5].recv()
            assert sockets[5].close_code == 1008
            for ws in sockets[:5]:
                await ws.send(wx.media("call-many", f"s{sockets.index(ws)}", 1,
                                       wx.frame(1)).decode())
        finally:
            for ws in sockets:
                await ws.close()
        records = await read_until(kafka.bootstrap, media_topic, lambda r: len(closes(r)) == 5)
        assert sorted(c.stream_id for c in closes(records)) == [f"s{i}" for i in range(5)]
        starts = [c.record for c in records if isinstance(c.record, envelope.StreamStarted)]
        assert len(starts) == 5


async def test_reusing_one_stream_id_does_not_get_around_the_limit(
    kafka: stack.KafkaServer, media_topic: str
) -> None:
    async with running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as server:
        sockets = [await connect(stream_url(server)) for _ in range(6)]
        try:
            for ws in sockets:
                await ws.send(wx.start("call-reuse", "same-id", "inbound").decode())
            with pytest.raises(ConnectionClosed):
                await sockets[5].recv()
            assert sockets[5].close_code == 1008
        finally:
            for ws in sockets:
                await ws.close()


async def test_idle_connection_is_closed_1008(kafka: stack.KafkaServer, media_topic: str) -> None:
    settings = ingest_settings(kafka.bootstrap, media_topic, ingest_idle_timeout_s=1.0)
    async with running_ingest(settings) as server, connect(stream_url(server)) as ws:
        await ws.send(wx.start("call-idle", "s1", "inbound").decode())
        began = time.monotonic()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1008 and time.monotonic() - began >= 0.9
    records = await read_until(kafka.bootstrap, media_topic, lambda r: bool(closes(r)))
    assert "idle_timeout" in closes(records)[0].detail


async def test_broker_down_for_ten_seconds_loses_no_chunk(
    own_kafka: stack.KafkaServer, caplog: pytest.LogCaptureFixture,
) -> None:
    """Backpressure holds the socket while the broker is away; every chunk arrives after.

    Meanwhile ingest asks for metadata at a steady pace: unpaced, aiokafka's sender
    retried in a loop and logged ~12,000 errors a second (infra/bus/kafka.py).
    """
    broker = own_kafka
    topic = "callrec.media.outage"
    await create_topics(broker.bootstrap, topic)
    settings = ingest_settings(broker.bootstrap, topic, ingest_max_inflight_bytes=65536)
    waited_before = metric("callrec_ingest_backpressure_seconds_total")
    async with running_ingest(settings) as server:
        n = 700  # 14 s of audio at real-time pace
        sent_at: dict[int, float] = {}

        async def sender() -> None:
            async with connect(stream_url(server)) as ws:
                await ws.send(wx.start("call-outage", "s1", "inbound").decode())
                t0 = time.monotonic()
                for i in range(1, n + 1):
                    delay = t0 + i * 0.02 - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await ws.send(wx.media("call-outage", "s1", i, wx.frame(i)).decode())
                    sent_at[i] = time.monotonic()
                await ws.send(wx.stop("call-outage", "s1").decode())

        outage_s = 0.0

        async def outage() -> None:
            nonlocal outage_s
            while len(sent_at) < 100:  # 2 s into the call
                await asyncio.sleep(0.02)
            await asyncio.to_thread(broker.stop)
            began = time.monotonic()
            await asyncio.sleep(10)
            await asyncio.to_thread(broker.start)
            outage_s = time.monotonic() - began

        await asyncio.gather(sender(), outage())
        records = await read_until(broker.bootstrap, topic, lambda r: bool(closes(r)),
                                   timeout=120)
    got = chunks(records, "call-outage")
    assert sorted({c.chunk for c in got}) == list(range(1, n + 1))
    assert all(c.payload == wx.frame(c.chunk) for c in got)
    assert closes(records)[0].reason == "stop" and closes(records)[0].chunks == n
    assert metric("callrec_ingest_backpressure_seconds_total") - waited_before > 1.0
    failed_updates = [r for r in caplog.records
                      if r.getMessage().startswith("Unable to update metadata")]
    assert 0 < len(failed_updates) <= outage_s / 0.2 + 10  # one per 0.2 s of the outage


async def test_kafka_away_past_the_produce_timeout_closes_1013(
    own_kafka: stack.KafkaServer,
) -> None:
    """A chunk Kafka did not take within CALLREC_INGEST_PRODUCE_TIMEOUT_S ends the stream
    with 1013 (try again later), counted; the next stream works once Kafka is back."""
    broker = own_kafka
    topic = "callrec.media.away"
    await create_topics(broker.bootstrap, topic)
    settings = ingest_settings(broker.bootstrap, topic, ingest_produce_timeout_s=3.0)
    failures_before = metric("callrec_ingest_produce_failures_total")
    closed_1013_before = metric("callrec_ingest_close_codes_total", code="1013")
    async with running_ingest(settings) as server:
        async with connect(stream_url(server)) as ws:
            await ws.send(wx.start("call-away", "s1", "inbound").decode())
            await ws.send(wx.media("call-away", "s1", 1, wx.frame(1)).decode())
            await read_until(broker.bootstrap, topic, lambda r: bool(chunks(r, "call-away")))
            await asyncio.to_thread(broker.stop)
            began = time.monotonic()
            with pytest.raises(ConnectionClosed):
                for i in range(2, 3000):  # a real-time sender, until ingest closes
                    await ws.send(wx.media("call-away", "s1", i, wx.frame(i)).decode())
                    await asyncio.sleep(0.02)
            assert ws.close_code == 1013 and ws.close_reason == "kafka_unavailable"
            assert 3.0 <= time.monotonic() - began < 30
        assert metric("callrec_ingest_produce_failures_total") > failures_before
        assert metric("callrec_ingest_close_codes_total", code="1013") == (
            closed_1013_before + 1)
        await asyncio.to_thread(broker.start)
        deadline = time.monotonic() + 60
        while not server.ready:  # new streams get 503 until Kafka answers again
            assert time.monotonic() < deadline, "ingest never saw Kafka come back"
            await asyncio.sleep(0.1)
        await send_call(stream_url(server), "call-back", "s2", 5)
        records = await read_until(broker.bootstrap, topic,
                                   lambda r: len(chunks(r, "call-back")) == 5, timeout=60)
        assert [c.chunk for c in chunks(records, "call-back")] == [1, 2, 3, 4, 5]


async def test_a_fragmented_message_is_one_message(
    kafka: stack.KafkaServer, media_topic: str
) -> None:
    """RFC 6455 lets a sender split a message into frames; ingest reads it whole."""
    async with running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as server:
        async with connect(stream_url(server)) as ws:
            await ws.send(wx.start("call-frag", "s1", "inbound").decode())
            text = wx.media("call-frag", "s1", 1, wx.frame(1)).decode()
            await ws.send([text[:100], text[100:700], text[700:]])  # three frames
            await ws.send(wx.stop("call-frag", "s1").decode())
        records = await read_until(kafka.bootstrap, media_topic, lambda r: bool(closes(r)))
    (chunk,) = chunks(records, "call-frag")
    assert chunk.payload == wx.frame(1)
    assert closes(records)[0].reason == "stop" and closes(records)[0].invalid == 0
