"""The bare drain server (``_drain`` sub-command): the baseline ingest is measured against.

A ``websockets.asyncio.server.serve`` server configured as ingest is where it matters
for receiving (``compression=None``, ``max_size``, ``max_queue``, no pings) that only
counts messages; ``GET /stats`` answers the count and the time of the last receive.
Its first stdout line is ``drain listening on port N``.
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
