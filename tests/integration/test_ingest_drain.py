"""SIGTERM on a real ``callrec ingest`` process: not ready, no new streams, live streams
go on for the grace period, then close 1001; the process exits cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from deploy.local import stack
from tests.integration import wavixclient as wx
from tests.integration.ingestutil import TOKEN, http_get
from tests.integration.kafkautil import chunks, closes, read_until

GRACE_S = 3.0


def start_ingest(kafka: stack.KafkaServer, topic: str) -> tuple[subprocess.Popen[str], int]:
    env = {
        **os.environ,
        "CALLREC_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "CALLREC_KAFKA_MEDIA_TOPIC": topic,
        "CALLREC_INGEST_HOST": "127.0.0.1",
        "CALLREC_INGEST_PORT": "0",
        "CALLREC_INGEST_TOKENS": TOKEN,
        "CALLREC_INGEST_DRAIN_GRACE_S": str(GRACE_S),
    }
    proc = subprocess.Popen([sys.executable, "-m", "callrec.cli", "ingest"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on port (\d+)", line)
    assert match, f"unexpected first line {line!r}"
    return proc, int(match.group(1))


async def wait_status(port: int, path: str, status: int, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while (await asyncio.to_thread(http_get, port, path))[0] != status:
            await asyncio.sleep(0.05)


async def pace(ws: ClientConnection, call_id: str, sent: list[int], stop_after: int | None) -> None:
    """Send real-time chunks until the server closes (or ``stop_after`` chunks, then stop)."""
    t0 = time.monotonic()
    i = 0
    try:
        while stop_after is None or i < stop_after:
            i += 1
            await asyncio.sleep(max(0.0, t0 + i * 0.02 - time.monotonic()))
            await ws.send(wx.media(call_id, "s1", i, wx.frame(i)).decode())
            sent.append(i)
        await ws.send(wx.stop(call_id, "s1").decode())
        await ws.close()
    except ConnectionClosed:
        pass


async def test_sigterm_drains_live_streams_then_closes_1001(
    kafka: stack.KafkaServer, media_topic: str
) -> None:
    proc, port = start_ingest(kafka, media_topic)
    try:
        await wait_status(port, "/readyz", 200)
        url = f"ws://127.0.0.1:{port}/v1/stream?token={TOKEN}"
        live = await connect(url)
        short = await connect(url)
        await live.send(wx.start("call-live", "s1", "inbound").decode())
        await short.send(wx.start("call-short", "s1", "inbound").decode())
        live_sent: list[int] = []
        short_sent: list[int] = []
        live_task = asyncio.create_task(pace(live, "call-live", live_sent, None))
        short_task = asyncio.create_task(pace(short, "call-short", short_sent, 100))
        await asyncio.sleep(1.0)

        sigterm_ns = time.time_ns()
        proc.send_signal(signal.SIGTERM)
        await wait_status(port, "/readyz", 503, timeout=2)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 503

        await short_task  # finishes normally during the drain (2 s of audio)
        await asyncio.wait_for(live_task, GRACE_S + 5)
        assert live.close_code == 1001
        returncode = await asyncio.to_thread(proc.wait, 20)
        assert returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    records = await read_until(kafka.bootstrap, media_topic, lambda r: len(closes(r)) == 2)
    by_call = {c.call_id: c for c in closes(records)}
    assert by_call["call-short"].reason == "stop"
    assert [c.chunk for c in chunks(records, "call-short")] == short_sent
    assert by_call["call-live"].reason == "disconnect"
    assert "shutdown" in by_call["call-live"].detail
    live_chunks = chunks(records, "call-live")
    got = [c.chunk for c in live_chunks]
    assert got == list(range(1, len(got) + 1)) and len(got) >= len(live_sent) - 5
    after_sigterm = [c for c in live_chunks if c.received_ns > sigterm_ns]
    assert len(after_sigterm) >= int(GRACE_S * 50 * 0.8), "the live stream went on while draining"
