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
            while server._handlers:  # each stream's close record written
                await asyncio.sleep(0.02)
        assert server._streams_per_call == {}, "one empty dict per refused call"


async def _raw_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that does only what a test tells it (no automatic close answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /v1/stream?token={TOKEN} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def _client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (mask key 0: unmasking leaves the payload as it is)."""
    first = (0x80 if fin else 0) | opcode
    assert len(payload) < 65536
    if len(payload) < 126:
        head = bytes([first, 0x80 | len(payload)])
    else:
        head = bytes([first, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


async def test_a_peer_that_never_answers_our_close_is_disconnected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest import stream as stream_mod

    monkeypatch.setattr(stream_mod, "CLOSE_TIMEOUT_S", 0.5)
    async with serving(tmp_path, ingest_idle_timeout_s=1) as server:
        reader, writer = await _raw_stream(server.port)
        writer.write(_client_frame(0x1, wx.start("quiet-1", "s1", "inbound").decode().encode()))
        # Silence: the idle sweep closes with 1008; we never answer its close frame.
        async with asyncio.timeout(10):
            head = await reader.readexactly(2)
            assert head[0] == 0x88  # FIN + close
            body = await reader.readexactly(head[1] & 0x7F)
            assert int.from_bytes(body[:2], "big") == 1008
            assert await reader.read() == b""  # the server closed the socket itself
            while server._handlers:
                await asyncio.sleep(0.02)
        writer.close()


async def test_fragmented_messages_are_joined_and_limited(tmp_path: Path) -> None:
    async with serving(tmp_path, ingest_max_message_bytes=4096) as server:
        reader, writer = await _raw_stream(server.port)
        message = wx.start("frag-1", "s1", "inbound").decode().encode()
        half = len(message) // 2
        writer.write(_client_frame(0x1, message[:half], fin=False)
                     + _client_frame(0x0, message[half:]))
        # Then a message whose fragments add up to more than the limit: 1009.
        for _ in range(40):
            writer.write(_client_frame(0x1 if _ == 0 else 0x0, b"x" * 120, fin=False))
        async with asyncio.timeout(10):
            head = await reader.readexactly(2)
            body = await reader.readexactly(head[1] & 0x7F)
            assert int.from_bytes(body[:2], "big") == 1009
            writer.write(_client_frame(0x8, body[:2]))  # we answer; the server hangs up
            assert await reader.read() == b""
            while server._handlers:
                await asyncio.sleep(0.02)
        writer.close()
    start, closed = read_records(tmp_path)
    assert isinstance(start, envelope.StreamStarted) and isinstance(closed, envelope.StreamClosed)
    assert start.call_id == "frag-1"  # the start, joined from its two fragments
    assert closed.reason == "error" and "1009" in closed.detail
