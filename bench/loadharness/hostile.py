"""Hostile-client process: every kind of bad input of docs/formats.md, beside the load.

``python -m bench.loadharness.hostile CONFIG.json``: runs ``waves`` waves of the
cases below against one ingest, all cases of a wave at once, and writes one
result per client to ``config["result"]`` (JSON): the case, whether the
documented outcome happened, what happened. Call ids start with ``hostile-`` so
the verifier can tell these recordings from the load's.

=====================  ==========================================================
case                   documented outcome (docs/formats.md, "What happens to bad input")
=====================  ==========================================================
bad_token              HTTP 401 before the upgrade
no_token               HTTP 401 before the upgrade
not_websocket          a plain HTTP GET of the stream path: 4xx, no upgrade
stalled_handshake      TCP connection that never sends the upgrade: closed by the
                       server (websockets' 10 s opening timeout)
oversize               a message over CALLREC_INGEST_MAX_MESSAGE_BYTES: close 1009
invalid_flood          a start, then non-JSON, bad base64, unknown events, wrong
                       types and binary garbage: skipped, then close 1008 past
                       CALLREC_INGEST_MAX_INVALID_MESSAGES
flood_before_start     the same without a start: close 1008
unknown_stream         media of another stream id on a started stream: skipped
                       and counted, the stream goes on (stop → normal close 1000)
idle                   a start, then silence: close 1008 after the idle timeout
slow                   one frame every idle_timeout/2 s, then stop: normal close 1000
sixth_oneway           five oneway streams of one call, then a sixth: the sixth
                       is closed 1008, the five finish normally (1000)
=====================  ==========================================================
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from bench.loadharness import calls as callaudio
from schemas import wavix

EVENT_TIME = "2026-01-01T00:00:00.000Z"
Result = dict[str, Any]


def _start(call_id: str, stream_id: str, channel: wavix.Channel = "both") -> str:
    return wavix.encode(wavix.Start(call_id=call_id, stream_id=stream_id, channel=channel,
                                    stream_type="oneway", sequence_number=1,
                                    event_time=EVENT_TIME)).decode()


def _media(call_id: str, stream_id: str, chunk: int, track: wavix.Track = "inbound") -> str:
    return wavix.encode(wavix.Media(
        call_id=call_id, stream_id=stream_id, sequence_number=chunk + 1, event_time=EVENT_TIME,
        media=wavix.MediaBody(payload=callaudio.frame(0, track, chunk), chunk=chunk,
                              timestamp=(chunk - 1) * 20, track=track),
    )).decode()


def _stop(call_id: str, stream_id: str) -> str:
    return wavix.encode(wavix.Stop(call_id=call_id, stream_id=stream_id,
                                   event_time=EVENT_TIME)).decode()


def _garbage(i: int, call_id: str, stream_id: str) -> str | bytes:
    """Invalid message number ``i``: each kind of bad input in turn."""
    ids = {"call_id": call_id, "stream_id": stream_id}
    kinds: list[str | bytes] = [
        '{"event": "media", "media": {"payload": "AAAA',  # cut off: not JSON
        json.dumps({"event": "media", **ids, "media": {"payload": "*** not base64 ***",
                                                       "chunk": 1, "timestamp": 0,
                                                       "track": "inbound"}}),
        json.dumps({"event": "dance", **ids}),  # unknown event
        json.dumps({"event": "media", **ids, "media": {"payload": "AAAA", "chunk": "x",
                                                       "timestamp": -1}}),  # wrong types
        bytes((i * 37 + k) % 256 for k in range(64)),  # binary garbage
        json.dumps([1, 2, 3]),
        json.dumps({"event": "media", **ids, "media": {
            "payload": base64.b64encode(b"\x00\x01\x02").decode(),  # not whole samples
            "chunk": 1, "timestamp": 0, "track": "inbound"}}),
    ]
    return kinds[i % len(kinds)]


class Battery:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.port = int(cfg["port"])
        self.token = str(cfg["token"])
        self.idle_timeout = float(cfg["idle_timeout_s"])
        self.max_bytes = int(cfg["max_message_bytes"])
        self.max_invalid = int(cfg["max_invalid"])
        self.results: list[Result] = []

    def url(self, token: str | None = None) -> str:
        query = "" if token is None else f"?token={token}"
        return f"ws://127.0.0.1:{self.port}/v1/stream{query}"

    async def _ws(self, token: str | None = None) -> ClientConnection:
        return await connect(self.url(self.token if token is None else token),
                             compression=None, ping_interval=None, open_timeout=30,
                             close_timeout=30, max_size=None)

    # -- cases ---------------------------------------------------------------------------

    async def bad_token(self, n: str) -> Result:
        return await self._expect_status(self.url("not-the-token"), 401)

    async def no_token(self, n: str) -> Result:
        return await self._expect_status(self.url(None), 401)

    async def _expect_status(self, url: str, status: int) -> Result:
        try:
            async with connect(url, open_timeout=30):
                return {"ok": False, "got": "upgraded"}
        except InvalidStatus as exc:
            got = exc.response.status_code
            return {"ok": got == status, "got": f"HTTP {got}"}

    async def not_websocket(self, n: str) -> Result:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET /v1/stream?token={self.token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        writer.close()
        parts = line.split()
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return {"ok": 400 <= status < 500, "got": line.decode(errors="replace").strip()}

    async def stalled_handshake(self, n: str) -> Result:
        began = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            data = await asyncio.wait_for(reader.read(), 30)
        except (TimeoutError, ConnectionError) as exc:
            return {"ok": isinstance(exc, ConnectionError), "got": type(exc).__name__}
        finally:
            writer.close()
        took = time.monotonic() - began
        return {"ok": took < 20, "got": f"closed by the server after {took:.1f}s "
                                        f"({len(data)} bytes)"}

    async def oversize(self, n: str) -> Result:
        ws = await self._ws()
        call = f"hostile-big-{n}"
        await ws.send(_start(call, "s1"))
        await ws.send(_media(call, "s1", 1))
        try:
            await ws.send("x" * (self.max_bytes + 1))
            await asyncio.wait_for(ws.recv(), 30)
        except ConnectionClosed:
            pass
        return self._closed_with(ws, 1009)

    async def invalid_flood(self, n: str, start: bool = True) -> Result:
        ws = await self._ws()
        call = f"hostile-flood-{n}"
        try:
            if start:
                await ws.send(_start(call, "s1"))
            for i in range(self.max_invalid + 200):
                await ws.send(_garbage(i, call, "s1"))
            await asyncio.wait_for(ws.recv(), 30)
        except ConnectionClosed:
            pass
        return self._closed_with(ws, 1008)

    async def flood_before_start(self, n: str) -> Result:
        return await self.invalid_flood(n, start=False)

    async def unknown_stream(self, n: str) -> Result:
        ws = await self._ws()
        call = f"hostile-other-{n}"
        await ws.send(_start(call, "s1", "inbound"))
        for chunk in range(1, 11):
            await ws.send(_media(call, "s2", chunk))
        await ws.send(_stop(call, "s1"))
        await ws.close()
        return self._closed_with(ws, 1000)

    async def idle(self, n: str) -> Result:
        began = time.monotonic()
        ws = await self._ws()
        await ws.send(_start(f"hostile-idle-{n}", "s1", "inbound"))
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await asyncio.wait_for(ws.recv(), self.idle_timeout + 15)
        took = time.monotonic() - began
        result = self._closed_with(ws, 1008)
        result["got"] += f" after {took:.1f}s"
        result["ok"] = result["ok"] and took >= self.idle_timeout - 1
        return result

    async def slow(self, n: str) -> Result:
        ws = await self._ws()
        call = f"hostile-slow-{n}"
        await ws.send(_start(call, "s1", "inbound"))
        for chunk in range(1, 5):
            await asyncio.sleep(self.idle_timeout / 2)
            await ws.send(_media(call, "s1", chunk))
        await ws.send(_stop(call, "s1"))
        await ws.close()
        return self._closed_with(ws, 1000)

    async def sixth_oneway(self, n: str) -> Result:
        call = f"hostile-six-{n}"
        five = [await self._ws() for _ in range(5)]
        for i, ws in enumerate(five):
            await ws.send(_start(call, f"s{i}", "inbound"))
        await asyncio.sleep(0.5)  # the five starts are admitted first
        sixth = await self._ws()
        await sixth.send(_start(call, "s5", "inbound"))
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(sixth.recv(), 30)
        refused = self._closed_with(sixth, 1008)
        for chunk in range(1, 11):
            for i, ws in enumerate(five):
                await ws.send(_media(call, f"s{i}", chunk))
        for i, ws in enumerate(five):
            await ws.send(_stop(call, f"s{i}"))
            await ws.close()
        codes = [ws.close_code for ws in five]
        ok = refused["ok"] and codes == [1000] * 5
        return {"ok": ok, "got": f"sixth: {refused['got']}; the five: {codes}"}

    @staticmethod
    def _closed_with(ws: ClientConnection, code: int) -> Result:
        got = ws.close_code
        return {"ok": got == code, "got": f"close {got}"}

    # -- driving -------------------------------------------------------------------------

    CASES: dict[str, int] = {
        "bad_token": 10, "no_token": 5, "not_websocket": 2, "stalled_handshake": 3,
        "oversize": 3, "invalid_flood": 5, "flood_before_start": 2, "unknown_stream": 2,
        "idle": 2, "slow": 2, "sixth_oneway": 1,
    }

    async def run(self) -> list[Result]:
        waves, interval = int(self.cfg["waves"]), float(self.cfg["wave_interval_s"])
        loop = asyncio.get_running_loop()
        base = loop.time() + (float(self.cfg["start_at"]) - time.time())
        tasks = []
        for wave in range(waves):
            for case, count in self.CASES.items():
                for k in range(count):
                    tasks.append(loop.create_task(
                        self._one(case, f"w{wave}-{k}-{uuid.uuid4().hex[:6]}",
                                  base + wave * interval)))
        await asyncio.wait(tasks, timeout=float(self.cfg["deadline_s"]))
        for task in tasks:
            task.cancel()
        return self.results

    async def _one(self, case: str, n: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
        began = time.time()
        method: Callable[[str], Awaitable[Result]] = getattr(self, case)
        try:
            result = await asyncio.wait_for(method(n), 120)
        except (OSError, TimeoutError, WebSocketException) as exc:
            result = {"ok": False, "got": f"{type(exc).__name__}: {exc}"}
        result.update(case=case, client=n, began=began, ended=time.time())
        self.results.append(result)


def main(argv: list[str]) -> int:
    cfg = json.loads(Path(argv[0]).read_text())
    results = asyncio.run(Battery(cfg).run())
    Path(cfg["result"]).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
