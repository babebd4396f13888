"""Serving an ASGI app (Starlette) with uvicorn inside a running event loop.

The services own their signals (``callrec.cli.run_until_signalled`` drains on SIGTERM),
so uvicorn's own signal capture is turned off; port 0 picks a free port, read back
from :attr:`WebServer.port`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the caller handles SIGTERM/SIGINT


class WebServer:
    """One uvicorn server for ``app`` on ``host:port``, run as a task of this loop."""

    def __init__(self, app: Any, host: str, port: int, *, backlog: int = 2048) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            backlog=backlog,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
                raise RuntimeError("web server exited before it started")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        servers = self._server.servers
        port: int = servers[0].sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._task = None
