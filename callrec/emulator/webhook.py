"""The emulator as a whole: places calls, posts their events, serves REST and media.

Usage (tests, ``callrec simulate --emulate-wavix``)::

    emu = WavixEmulator(api_key="k", webhook_url="http://control/v1/wavix/events/<secret>")
    await emu.start()                 # REST API on emu.api_url
    await emu.place_calls(calls)      # call_setup, ringing, answered ... completed
    await emu.replay_webhooks()       # every event posted again
    await emu.close()

A call's events: ``call_setup`` and ``ringing``; answered calls then ``answered``, audio
for the call's length (streams follow the call clock, ``gateway``), the streams stop,
``completed``; unanswered calls end with ``busy`` (or the call's ``unanswered_event``).
A webhook answered with 5xx or not at all is posted again (up to ``post_attempts``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import httpx

from callrec.emulator.calls import FRAME_MS, EmulatedCall
from callrec.emulator.gateway import LiveCall
from callrec.emulator.rest import WavixRest
from infra.webserver import WebServer
from schemas import callevents
from schemas.callevents import CallEvent
from schemas.custody import iso_time

log = logging.getLogger(__name__)


class WavixEmulator:
    def __init__(
        self,
        *,
        api_key: str,
        webhook_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        post_attempts: int = 3,
        ring_s: float = 0.05,
        rest_timeout_s: float = 30.0,
    ) -> None:
        self.webhook_url = webhook_url
        self.calls: dict[str, LiveCall] = {}
        self.rest = WavixRest(api_key, self.calls, timeout_s=rest_timeout_s)
        self._server = WebServer(self.rest.app, host, port)
        self._host = host
        self.post_attempts = post_attempts
        self.ring_s = ring_s
        self.posted: list[bytes] = []
        """Every event body posted, in order (for replays)."""
        self.webhook_statuses: list[int] = []
        self._client = httpx.AsyncClient(timeout=10)

    @property
    def api_url(self) -> str:
        return f"http://{self._host}:{self._server.port}"

    async def start(self) -> None:
        await self._server.start()

    async def close(self) -> None:
        for live in self.calls.values():
            live.ended.set()
        tasks = [
            s.task
            for live in self.calls.values()
            for s in live.streams.values()
            if s.task is not None
        ]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()
        await self._server.stop()

    async def post(self, body: bytes) -> int:
        """Post one event body to the webhook, retrying 5xx/no answer; returns the status."""
        self.posted.append(body)
        status = 0
        for attempt in range(self.post_attempts):
            try:
                resp = await self._client.post(
                    self.webhook_url, content=body, headers={"Content-Type": "application/json"}
                )
                status = resp.status_code
                if status < 500:
                    break
            except httpx.HTTPError:
                status = 0
            await asyncio.sleep(0.2 * (attempt + 1))
        self.webhook_statuses.append(status)
        return status

    async def _event(self, call: EmulatedCall, event_type: str, **extra: str) -> None:
        now = iso_time(time.time_ns())
        event = CallEvent(
            call_id=call.call_id,
            event_type=event_type,
            event_time=now,
            from_number=call.from_number,
            to_number=call.to_number,
            direction=call.direction,
            tag=call.tag,
            call_started=now,
            **extra,  # type: ignore[arg-type]
        )
        await self.post(callevents.encode(event))

    async def place_calls(self, calls: Sequence[EmulatedCall], *, spacing_s: float = 0.0) -> None:
        """Place every call (``spacing_s`` apart) and return when all have ended."""

        async def one(index: int, call: EmulatedCall) -> None:
            await asyncio.sleep(index * spacing_s)
            await self.run_call(call)

        await asyncio.gather(*(one(i, c) for i, c in enumerate(calls)))

    async def run_call(self, call: EmulatedCall) -> None:
        live = LiveCall(call)
        self.calls[call.call_id] = live
        await self._event(call, "call_setup")
        await self._event(call, "ringing")
        await asyncio.sleep(self.ring_s)
        if not call.answered:
            live.ended.set()
            await self._event(call, call.unanswered_event)
            return
        loop = asyncio.get_running_loop()
        live.answered_ms = time.time_ns() // 1_000_000
        live.answered_at = loop.time()
        answered = iso_time(live.answered_ms * 1_000_000)
        await self._event(call, "answered", call_answered=answered)
        # The call lasts as long as its audio; then every stream stops and it completes.
        end_at = live.answered_at + call.frames * FRAME_MS / 1000
        await asyncio.sleep(max(0.0, end_at - loop.time()) + 0.05)
        live.ended.set()
        tasks = [s.task for s in live.streams.values() if s.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        completed = iso_time(time.time_ns())
        await self._event(call, "completed", call_answered=answered, call_completed=completed)

    async def replay_webhooks(self, times: int = 1) -> None:
        """Post every event posted so far again, ``times`` times (at-least-once delivery)."""
        bodies = list(self.posted)
        for _ in range(times):
            for body in bodies:
                await self.post(body)
