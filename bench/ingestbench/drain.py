"""The bare drain servers (``_drain`` sub-command): the baselines ingest is measured against.

``_drain`` (the throughput baseline, bench/README.md): a ``websockets.asyncio.server.serve``
server configured as ingest was when it ran on websockets, where it matters for
receiving (``compression=None``, ``max_size``, ``max_queue``, no pings), that only
counts messages. ``_drain picows``: the same on picows, ingest's WebSocket stack now
(ingest/stream.py), on the loop ingest uses (``CALLREC_EVENT_LOOP``, uvloop by default):
the floor of what receiving costs, used for the real-time steps. ``GET /stats`` answers
the count and the time of the last receive. The first stdout line is
``drain listening on port N``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

from bench.harness.procs import raise_nofile

MAX_MESSAGE_BYTES = 65536
"""CALLREC_INGEST_MAX_MESSAGE_BYTES default, used by the drain server too."""


def drain_main() -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.datastructures import Headers
    from websockets.http11 import Request, Response

    raise_nofile()
    stats = {"messages": 0, "last": 0.0}

    async def handler(ws: ServerConnection) -> None:
        count = 0
        try:
            async for _ in ws:
                count += 1
        finally:
            stats["messages"] += count
            stats["last"] = max(stats["last"], time.time())

    def route(ws: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/stats"):
            body = json.dumps(stats).encode()
            return Response(200, "OK", Headers([("Content-Length", str(len(body)))]), body)
        return None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with serve(
            handler, "127.0.0.1", 0, process_request=route,
            # As ingest (ingest/server.py) where it matters for receiving.
            max_size=MAX_MESSAGE_BYTES, max_queue=(4, 1), compression=None,
            ping_interval=None, server_header=None,
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"drain listening on port {port}", flush=True)
            await stop.wait()

    asyncio.run(main())


def drain_picows_main() -> None:
    from http import HTTPStatus

    from picows import (
        WSCloseCode,
        WSFrame,
        WSListener,
        WSMsgType,
        WSTransport,
        WSUpgradeRequest,
        WSUpgradeResponse,
        WSUpgradeResponseWithListener,
        ws_create_server,
    )

    from infra.settings import ProcessSettings

    loop_name = ProcessSettings().event_loop
    raise_nofile()
    stats = {"messages": 0, "last": 0.0}
    data_types = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)

    class Drain(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type in data_types:
                frame.get_payload_as_bytes()  # as ingest does
                if frame.fin:
                    stats["messages"] += 1
            elif frame.msg_type is WSMsgType.CLOSE:
                transport.send_close(WSCloseCode.OK)
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            stats["last"] = max(stats["last"], time.time())

    def route(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener:
        if request.path.startswith(b"/stats"):
            body = json.dumps(stats).encode()
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_ok_response(body), None)
        if request.path.startswith(b"/"):
            return Drain()
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_error_response(HTTPStatus.NOT_FOUND), None)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        server = await ws_create_server(route, "127.0.0.1", 0, max_frame_size=MAX_MESSAGE_BYTES,
                                        enable_auto_ping=False, use_aiofastnet=False)
        print(f"drain listening on port {server.sockets[0].getsockname()[1]}", flush=True)
        await stop.wait()

    if loop_name == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
