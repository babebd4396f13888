"""``/healthz``, ``/readyz`` and ``/metrics`` for the worker services.

Ingest answers these on its WebSocket port; workers have no server of their
own, so they run this minimal HTTP/1.1 responder (GET only, one request per
connection: what kubelet and Prometheus send).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import prometheus_client

log = logging.getLogger(__name__)


class ProbeServer:
    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        self.host = host
        self.port = port
        self._ready = ready
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("probes and metrics on %s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1].split(b"?", 1)[0].decode("ascii", "replace")
            status, content_type, body = self._answer(path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, IndexError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, path: str) -> tuple[str, str, bytes]:
        text = "text/plain; charset=utf-8"
        if path == "/healthz":
            return "200 OK", text, b"ok\n"
        if path == "/readyz":
            if self._ready():
                return "200 OK", text, b"ready\n"
            return "503 Service Unavailable", text, b"not ready\n"
        if path == "/metrics":
            body = prometheus_client.generate_latest()
            return "200 OK", prometheus_client.CONTENT_TYPE_LATEST, body
        return "404 Not Found", text, b"not found\n"


class Worker(Protocol):
    """A worker service: ``run`` until ``stop``; ``ready`` for ``/readyz``."""

    @property
    def ready(self) -> bool: ...

    async def run(self, stop: asyncio.Event) -> None: ...


async def run_with_probes(worker: Worker, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve the probes and metrics while ``worker`` runs (the worker CLIs' main)."""
    probes = ProbeServer(host, port, lambda: worker.ready)
    await probes.start()
    try:
        await worker.run(stop)
    finally:
        await probes.close()
