"""Ingest secure by default: no anonymous server on every interface, no token in any log
line, ids escaped in log lines, refused streams and closing sockets cost nothing after.

On the in-process bus (no broker needed: these are about the server, not Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from callrec import wiring
from infra.bus.local import LocalBus
from infra.logsafe import redact_tokens, safe
from ingest.errors import AnonymousAccessRefused
from ingest.server import IngestServer
from ingest.settings import IngestSettings
from schemas import envelope
from tests.integration import wavixclient as wx

TOKEN = "s3cr3t-stream-token-0123456789"
REPO = Path(__file__).resolve().parents[2]


def settings(**overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "ingest_host": "127.0.0.1",
        "ingest_port": 0,
        "ingest_tokens": TOKEN,
        "ingest_pod_name": "pod",
        "kafka_media_topic": "callrec.media",
    }
    values.update(overrides)
    return IngestSettings(**values)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **overrides: Any) -> AsyncIterator[IngestServer]:
    bus = LocalBus(tmp_path / "bus")
    server = wiring.ingest_server(settings(**overrides), bus)
    await server.start()
    try:
        async with asyncio.timeout(30):
            while not server.ready:
                await asyncio.sleep(0.02)
        yield server
    finally:
        await server.close()
        bus.close()


def read_records(tmp_path: Path) -> list[envelope.Record]:
    bus = LocalBus(tmp_path / "bus")
    try:
        log = bus.log("callrec.media")
        return [envelope.decode(m.value or b"") for m in log.read(0, 100_000)]
    finally:
        bus.close()


# -- 2. secure by default -------------------------------------------------------------------


async def test_without_tokens_ingest_refuses_to_serve_every_interface(tmp_path: Path) -> None:
    server = wiring.ingest_server(
        settings(ingest_tokens="", ingest_host="0.0.0.0"), LocalBus(tmp_path / "bus")
    )
    with pytest.raises(AnonymousAccessRefused, match="CALLREC_INGEST_ALLOW_ANONYMOUS"):
        await server.start()


def test_the_ingest_command_exits_with_the_reason_without_tokens() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env.update(CALLREC_INGEST_HOST="0.0.0.0", CALLREC_INGEST_PORT="0")
    done = subprocess.run(
        [sys.executable, "-m", "callrec.cli", "ingest"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "CALLREC_INGEST_TOKENS is empty" in done.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        {"ingest_allow_anonymous": True, "ingest_host": "0.0.0.0"},  # asked for explicitly
        {"ingest_host": "127.0.0.1"},  # loopback: `callrec up`'s convenience
    ],
)
async def test_anonymous_streams_only_when_asked_for_or_on_loopback(
    tmp_path: Path, overrides: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "ingest")
    async with (
        serving(tmp_path, ingest_tokens="", **overrides) as server,
        connect(f"ws://127.0.0.1:{server.port}/v1/stream") as ws,
    ):
        await ws.send(wx.start("anon-1", "s1", "inbound").decode())
        await ws.send(wx.stop("anon-1", "s1").decode())
    assert any(
        "without a token" in r.getMessage() or "from anyone" in r.getMessage()
        for r in caplog.records
    )


async def test_stream_tokens_never_reach_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # websockets logs the request line at DEBUG
    async with serving(tmp_path) as server:
        for url in (
            f"ws://127.0.0.1:{server.port}/v1/stream?token={TOKEN}",
            f"ws://127.0.0.1:{server.port}/v1/stream/{TOKEN}",
        ):
            async with connect(url) as ws:
                await ws.send(wx.start("tok-1", "s1", "inbound").decode())
                await ws.send(wx.stop("tok-1", "s1").decode())
    lines = [r.getMessage() for r in caplog.records]
    assert any("/v1/stream" in line and "<redacted>" in line for line in lines), lines
    assert not [line for line in lines if TOKEN in line]


# -- 3. log injection -----------------------------------------------------------------------


async def test_ids_with_newlines_and_escapes_cannot_forge_log_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    call_id = "evil\n2026-01-01 00:00:00 INFO ingest.server: call_id=forged closed\x1b[2K"
    stream_id = "s\r\n1"
    async with (
        serving(tmp_path) as server,
        connect(f"ws://127.0.0.1:{server.port}/v1/stream?token={TOKEN}") as ws,
    ):
        await ws.send(wx.start(call_id, stream_id, "inbound").decode())
        await ws.send(wx.stop(call_id, stream_id).decode())
    closed = [r.getMessage() for r in caplog.records if "closed:" in r.getMessage()]
    assert closed, [r.getMessage() for r in caplog.records]
    for line in closed:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert safe(call_id) in closed[0] and safe(stream_id) in closed[0]
    starts = [r for r in read_records(tmp_path) if isinstance(r, envelope.StreamStarted)]
    assert [s.call_id for s in starts] == [call_id], "the id itself is kept as sent"


def test_safe_escapes_control_characters_and_cuts_long_values() -> None:
    assert safe("a\nb\tc\x00\x7f\u2028\\") == "a\\x0ab\\x09c\\x00\\x7f\\u2028\\\\"
    assert safe("x" * 300) == "x" * 128 + "…(+172)"
    assert safe("call-1.ok_ID") == "call-1.ok_ID"
    assert redact_tokens("GET /v1/stream?a=1&token=abc&b=2") == (
        "GET /v1/stream?a=1&token=<redacted>&b=2"
    )


# -- 6. refused streams and closing sockets ---------------------------------------------------


async def test_refused_twoway_streams_leave_no_state_behind(tmp_path: Path) -> None:
    async with serving(tmp_path, ingest_max_twoway_streams_per_call=0) as server:
        for n in range(20):
            async with connect(f"ws://127.0.0.1:{server.port}/v1/stream?token={TOKEN}") as ws:
                await ws.send(wx.start(f"tw-{n}", "s1", "both", "twoway").decode())
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(10):
                        await ws.recv()
            assert ws.close_code == 1008
        async with asyncio.timeout(10):
            while server.closing:
                await asyncio.sleep(0.02)
        assert server._streams_per_call == {}, "one empty dict per refused call"


class _SlowClose:
    """A connection whose closing handshake takes until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.closed_with: tuple[int, str] | None = None
        self.protocol = type("P", (), {"close_sent": None})()

    async def close(self, code: int, reason: str) -> None:
        await self.release.wait()
        self.closed_with = (code, reason)


async def test_a_closing_handshake_is_held_until_it_ends(tmp_path: Path) -> None:
    import gc

    from ingest.errors import IdleTimeout
    from ingest.session import StreamSession
    from ingest.stream import OpenStream

    bus = LocalBus(tmp_path / "bus")
    server = wiring.ingest_server(settings(), bus)
    ws = _SlowClose()
    stream = OpenStream(server, ws, StreamSession(server.codec, "pod", "conn"))  # type: ignore[arg-type]
    stream.fail(IdleTimeout("quiet"))
    await asyncio.sleep(0)
    gc.collect()  # the loop holds tasks weakly: only our reference keeps this one alive
    assert len(server.closing) == 1
    ws.release.set()
    async with asyncio.timeout(5):
        while server.closing:
            await asyncio.sleep(0.01)
    assert ws.closed_with == (1008, "idle_timeout")
    bus.close()
