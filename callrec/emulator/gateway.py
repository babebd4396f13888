"""The emulator's media gateway: one WebSocket per stream, audio from the call clock.

A call's audio plays from its answer: frame ``f`` (20 ms) at answer + ``f`` * 20 ms.
A stream opened later starts at the next frame boundary ``f0``; its ``start`` carries
``event_time`` = answer + ``f0`` * 20 ms (ms precision, ``Z``) and its chunks number
from 0 with ``timestamp`` = chunk * 20 ms, so a recorder aligning streams on
``event_time`` places every stream of the call on one timeline, sample-exact. The
stream sends ``stop`` and closes when it is deleted or the call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from callrec.emulator.calls import FRAME_MS, EmulatedCall
from schemas import wavix
from schemas.custody import iso_time
from schemas.wavix import Track

log = logging.getLogger(__name__)


@dataclass
class LiveCall:
    """A call in progress: when it was answered, its streams, whether it ended."""

    call: EmulatedCall
    answered_at: float = 0.0
    """Event-loop time of the answer (frame 0)."""
    answered_ms: int = 0
    """Wall-clock ms of the answer (the Wavix clock of ``event_time``)."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    streams: dict[str, MediaStream] = field(default_factory=dict)


class MediaStream:
    """One Wavix stream of a call, sending to ``url`` until stopped or the call ends."""

    def __init__(
        self, live: LiveCall, stream_id: str, url: str, channel: str, stream_type: str = "oneway"
    ) -> None:
        self.live = live
        self.stream_id = stream_id
        self.url = url
        self.channel = channel
        self.stream_type = stream_type
        self.first_frame: int | None = None
        """Call frame of chunk 0."""
        self.frames_sent = 0
        self.close_code: int | None = None
        """The close code ingest sent (1000 normal, 1008 refused...); None if none came."""
        self.refused_status: int | None = None
        """HTTP status when the upgrade itself was refused (401...)."""
        self._stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def tracks(self) -> tuple[Track, ...]:
        if self.stream_type == "twoway" or self.channel == "inbound":
            return ("inbound",)
        if self.channel == "outbound":
            return ("outbound",)
        return ("inbound", "outbound")

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """Stop on DELETE or call end: ``stop`` is sent and the socket closed."""
        self._stop.set()

    async def _run(self) -> None:
        call = self.live.call
        try:
            async with connect(self.url, compression=None, open_timeout=10, close_timeout=10) as ws:
                await self._send_all(ws)
                await ws.close()
            self.close_code = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
        except InvalidStatus as exc:
            self.refused_status = exc.response.status_code
            log.info(
                "call_id=%s stream %s refused: HTTP %d",
                call.call_id,
                self.stream_id,
                self.refused_status,
            )
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else None
            log.info(
                "call_id=%s stream %s closed by the server: %s", call.call_id, self.stream_id, exc
            )
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            log.warning(
                "call_id=%s stream %s: cannot connect: %r", call.call_id, self.stream_id, exc
            )

    async def _send_all(self, ws: ClientConnection) -> None:
        live, call = self.live, self.live.call
        loop = asyncio.get_running_loop()
        frame_s = FRAME_MS / 1000
        f0 = max(0, math.ceil((loop.time() - live.answered_at) / frame_s - 1e-6))
        self.first_frame = f0
        seq = 0
        await ws.send(
            wavix.encode(
                wavix.Connected(event_time=iso_time((live.answered_ms + f0 * FRAME_MS) * 1_000_000))
            ),
            text=True,
        )
        seq += 1
        await ws.send(
            wavix.encode(
                wavix.Start(
                    call_id=call.call_id,
                    stream_id=self.stream_id,
                    stream_type="twoway" if self.stream_type == "twoway" else "oneway",
                    channel="inbound"
                    if self.channel == "inbound"
                    else ("outbound" if self.channel == "outbound" else "both"),
                    sequence_number=seq,
                    event_time=iso_time((live.answered_ms + f0 * FRAME_MS) * 1_000_000),
                )
            ),
            text=True,
        )
        frame = f0
        while not self._stop.is_set() and not live.ended.is_set() and frame < call.frames:
            delay = live.answered_at + frame * frame_s - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                if self._stop.is_set():
                    break
            chunk = frame - f0
            for track in self.tracks:
                payload = call.frame(track, frame)
                if payload is None:
                    continue
                seq += 1
                await ws.send(
                    wavix.encode(
                        wavix.Media(
                            call_id=call.call_id,
                            stream_id=self.stream_id,
                            sequence_number=seq,
                            media=wavix.MediaBody(
                                payload=payload,
                                chunk=chunk,
                                timestamp=chunk * FRAME_MS,
                                track=None if len(self.tracks) == 1 else track,
                            ),
                        )
                    ),
                    text=True,
                )
            frame += 1
            self.frames_sent += 1
        seq += 1
        await ws.send(
            wavix.encode(
                wavix.Stop(call_id=call.call_id, stream_id=self.stream_id, sequence_number=seq)
            ),
            text=True,
        )
