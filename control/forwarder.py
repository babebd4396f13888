"""Forwarding Wavix's call events to the user's own URL, never delaying recording.

A Wavix number has one status callback URL; users who already consume those events
point it at callrec and name their URL in ``CALLREC_CONTROL_FORWARD_URL``. Bodies are
forwarded verbatim after the webhook answered, from a bounded queue by a few
background tasks, each retried with doubling back-off; a full queue or the last failed
try drops the event (``callrec_control_forwards_total{result="dropped"|"failed"}``).
Forwarding is best effort by design: the events are durable in ``callrec.calls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from control import metrics

log = logging.getLogger(__name__)


class Forwarder:
    def __init__(
        self,
        url: str,
        *,
        attempts: int = 5,
        queue: int = 10_000,
        workers: int = 4,
        timeout_s: float = 5.0,
        backoff_s: float = 0.5,
    ) -> None:
        self.url = url
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue)
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    def submit(self, body: bytes) -> None:
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            metrics.FORWARDS.labels("dropped").inc()

    async def _work(self) -> None:
        while True:
            body = await self._queue.get()
            await self._send(body)

    async def _send(self, body: bytes) -> None:
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                resp = await self._client.post(
                    self.url, content=body, headers={"Content-Type": "application/json"}
                )
                if resp.status_code < 500 and resp.status_code != 429:
                    metrics.FORWARDS.labels("sent" if resp.is_success else "failed").inc()
                    return
            except httpx.HTTPError:
                pass
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        metrics.FORWARDS.labels("failed").inc()
        log.warning("event not forwarded after %d tries", self.attempts)
