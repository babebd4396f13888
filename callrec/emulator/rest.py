"""The emulator's Wavix REST API (Starlette), with failure injection.

Routes (``/v1/calls/...`` and the older ``/v1/call/...``), API key as ``Authorization:
Bearer`` or ``?appid=``:

- ``POST {base}/{id}/streams`` ``{stream_url, stream_type, stream_channel}`` →
  ``{"success": true, "stream_id": ...}``; the gateway opens the stream;
- ``DELETE {base}/{id}/streams/{stream_id}`` → ``{"success": true}``; the stream stops;
- ``GET {base}/{id}`` → ``{"success": true, "call": {...}}``.

Errors answer ``{"success": false, "message": ...}``: 401 bad key, 404 unknown call or
stream, 400 ended call or bad body, 422 over the 5 oneway + 1 twoway stream limit.
:meth:`WavixRest.inject` queues outcomes for the next stream start requests: an HTTP
status (``500``, ``401``...) or ``"timeout"`` (the answer never comes in time).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callrec.emulator.gateway import LiveCall, MediaStream

ONEWAY_LIMIT = 5
TWOWAY_LIMIT = 1


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status_code=status)


class WavixRest:
    """The REST API over the emulator's live calls."""

    def __init__(
        self,
        api_key: str,
        calls: dict[str, LiveCall],
        *,
        timeout_s: float = 30.0,
        open_streams: bool = True,
    ) -> None:
        self.api_key = api_key.encode()
        self.open_streams = open_streams
        """False: answer stream starts without opening a media stream (benchmarks)."""
        self.calls = calls
        self.timeout_s = timeout_s
        """How long an injected ``timeout`` holds the answer."""
        self.faults: collections.deque[str] = collections.deque()
        self.start_requests: list[tuple[str, int]] = []
        """(call id, Unix ns) of every stream start request received, in order."""
        self.starts: collections.Counter[str] = collections.Counter()
        """Streams actually started per call (after auth, faults and limits)."""
        self.on_start: Callable[[str], None] | None = None
        routes = []
        for base in ("/v1/calls", "/v1/call"):
            routes += [
                Route(base + "/{call_id}/streams", self.start_stream, methods=["POST"]),
                Route(
                    base + "/{call_id}/streams/{stream_id}", self.stop_stream, methods=["DELETE"]
                ),
                Route(base + "/{call_id}", self.get_call, methods=["GET"]),
            ]
        self.app = Starlette(routes=routes)

    def inject(self, *outcomes: str | int) -> None:
        """Answer the next stream start requests with these outcomes, in order."""
        self.faults.extend(str(o) for o in outcomes)

    def _authorized(self, request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        given = key if scheme.lower() == "bearer" else request.query_params.get("appid", "")
        return bool(given) and hmac.compare_digest(given.encode(), self.api_key)

    async def start_stream(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        self.start_requests.append((call_id, time.time_ns()))
        if self.faults:
            outcome = self.faults.popleft()
            if outcome == "timeout":
                await asyncio.sleep(self.timeout_s)
                return _error(504, "Gateway Timeout")
            status = int(outcome)
            if status == 401:
                return _error(401, "Unauthorized")
            return _error(status, "Internal Server Error" if status >= 500 else "Error")
        if not self._authorized(request):
            return _error(401, "Unauthorized")
        live = self.calls.get(call_id)
        if live is None:
            return _error(404, "Call not found")
        if live.ended.is_set() or not live.call.answered:
            return _error(400, "Call is not in progress")
        try:
            body: Any = await request.json()
        except ValueError:
            return _error(400, "Invalid JSON")
        url = body.get("stream_url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            return _error(400, "stream_url must be a ws:// or wss:// URL")
        stream_type = body.get("stream_type", "oneway")
        channel = body.get("stream_channel", "inbound")
        if stream_type not in ("oneway", "twoway") or channel not in (
            "inbound",
            "outbound",
            "both",
        ):
            return _error(400, "Invalid stream_type or stream_channel")
        open_of_type = sum(
            1
            for s in live.streams.values()
            if s.stream_type == stream_type and s.task and not s.task.done()
        )
        if open_of_type >= (ONEWAY_LIMIT if stream_type == "oneway" else TWOWAY_LIMIT):
            return _error(422, f"Too many {stream_type} streams")
        stream_id = str(uuid.uuid4())
        stream = MediaStream(live, stream_id, url, channel, stream_type)
        live.streams[stream_id] = stream
        self.starts[call_id] += 1
        if self.open_streams:
            stream.start()
        if self.on_start is not None:
            self.on_start(call_id)
        return JSONResponse({"success": True, "stream_id": stream_id})

    async def stop_stream(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "Unauthorized")
        live = self.calls.get(request.path_params["call_id"])
        stream = live.streams.get(request.path_params["stream_id"]) if live else None
        if stream is None:
            return _error(404, "Stream not found")
        stream.stop()
        return JSONResponse({"success": True})

    async def get_call(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "Unauthorized")
        live = self.calls.get(request.path_params["call_id"])
        if live is None:
            return _error(404, "Call not found")
        call = live.call
        return JSONResponse(
            {
                "success": True,
                "call": {
                    "id": call.call_id,
                    "uuid": call.call_id,
                    "from": call.from_number,
                    "to": call.to_number,
                    "direction": call.direction,
                    "tag": call.tag,
                    "status": "completed" if live.ended.is_set() else "in_progress",
                },
            }
        )
