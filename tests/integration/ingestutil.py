"""Running ``IngestServer`` in the test's event loop, on port 0."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

from callrec import wiring
from ingest.server import IngestServer
from ingest.settings import IngestSettings

TOKEN = "test-token"


def ingest_settings(bootstrap: str, topic: str, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "kafka_media_topic": topic,
        "ingest_host": "127.0.0.1",
        "ingest_port": 0,
        "ingest_tokens": TOKEN,
        "ingest_pod_name": "ingest-test",
    }
    values.update(overrides)
    return IngestSettings(**values)


@contextlib.asynccontextmanager
async def running_ingest(settings: IngestSettings) -> AsyncIterator[IngestServer]:
    server = wiring.ingest_server(settings)
    await server.start()
    try:
        async with asyncio.timeout(30):
            while not server.ready:
                await asyncio.sleep(0.05)
        yield server
    finally:
        await server.close()


def stream_url(server: IngestServer, token: str | None = TOKEN) -> str:
    query = f"?token={token}" if token is not None else ""
    return f"ws://127.0.0.1:{server.port}/v1/stream{query}"


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET a probe path; returns (status, body) also for 4xx/5xx answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
