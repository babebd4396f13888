"""Serving the console: uvicorn in the caller's event loop, started and stopped on demand.

Why Starlette + Jinja2 + uvicorn (docs/console.md): the pages are HTML rendered
on the server from DuckDB results, so a small ASGI toolkit with sessions,
static files and streaming responses is all it takes (Starlette), templates
escape by default (Jinja2), and uvicorn is the ASGI server Starlette is built
and tested with. No JavaScript build step: one static script.

The process's signals stay with the caller (``callrec console`` and ``callrec
up`` stop on their own SIGTERM handling), so uvicorn's own capture is switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the caller handles SIGTERM/SIGINT and calls ConsoleServer.stop


class ConsoleServer:
    """uvicorn serving the console app on ``host:port`` (port 0: any free port)."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            lifespan="on",
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.port = port

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the console server stopped while starting")
            await asyncio.sleep(0.02)
        sockets = self._server.servers[0].sockets
        self.port = sockets[0].getsockname()[1]
        log.info("console on port %d", self.port)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
