"""The WebSocket streams of one call: open every connection, send its steps, report."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State

from callrec.simulator.calls import SimulatedCall
from callrec.simulator.errors import ConnectFailed, StreamRejected
from callrec.simulator.faults import NO_FAULTS, Faults, fault_rng
from callrec.simulator.messages import FRAME_MS, MessageWriter
from callrec.simulator.plan import Step, StreamPlan, connection_steps, plan_streams
from callrec.simulator.reports import CallReport, StreamReport
from infra.audio import frame_count
from schemas.codecs import DEFAULT_CODEC, Codec
from schemas.wavix import Track

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 120.0
"""How long to wait for the server to answer our close frame. The server reads the close
frame only after every media frame before it, so a backpressured server may take long;
giving up would reset the TCP connection and lose what its kernel still holds."""


def with_token(url: str, token: str | None) -> str:
    """``url`` with ``?token=`` set (kept as is when ``token`` is empty)."""
    if not token:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _redact(url: str) -> str:
    """``url`` without its query, for logs (the token is a secret)."""
    return urlunsplit(urlsplit(url)._replace(query=""))


async def _open(url: str) -> ClientConnection:
    """Open one WebSocket connection; raise a :class:`SimulatorError` when we cannot."""
    try:
        return await connect(
            url,
            compression=None,  # Wavix does not negotiate permessage-deflate
            # No keepalive pings: the stream itself shows liveness, and a backpressured
            # server answers pings only after the media before them, too late.
            ping_interval=None,
            close_timeout=CLOSE_TIMEOUT_S,
        )
    except InvalidStatus as exc:
        response = exc.response
        body = response.body.decode("utf-8", "replace").strip()[:200] if response.body else ""
        raise StreamRejected(response.status_code, body) from None
    except (InvalidHandshake, InvalidURI) as exc:
        raise ConnectFailed(f"{_redact(url)}: {exc}") from None
    except (OSError, TimeoutError) as exc:
        raise ConnectFailed(f"cannot connect to {_redact(url)}: {exc}") from None


async def _open_all(url: str, count: int) -> list[ClientConnection]:
    """Open ``count`` connections together; all or none (the open ones are closed)."""
    results = await asyncio.gather(*(_open(url) for _ in range(count)), return_exceptions=True)
    opened = [r for r in results if isinstance(r, ClientConnection)]
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is None:
        return opened
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    raise failure


async def stream_call(
    url: str,
    call: SimulatedCall,
    *,
    codec: Codec = DEFAULT_CODEC,
    realtime: bool = True,
    faults: Faults = NO_FAULTS,
    token: str | None = None,
    started_at: float | None = None,
) -> CallReport:
    """Stream one call as Wavix would and report what was sent and how each stream ended.

    ``started_at`` is the Wavix time (Unix seconds) of the call's first frame, from
    which every ``event_time`` follows; now when None. Fix it to send the very same
    messages twice (e.g. to compare two deployments).

    Raises :class:`StreamRejected` (HTTP 401, 503, ...) or :class:`ConnectFailed` when a
    connection cannot be opened; then nothing was sent on any of the call's connections.
    """
    plans = plan_streams(call)
    connections = await _open_all(with_token(url, token), len(plans))
    loop = asyncio.get_running_loop()
    start_clock = loop.time()
    started_at = time.time() if started_at is None else started_at
    pace_from = start_clock if realtime else None
    log.info("call_id=%s: streaming %d connection(s) to %s", call.call_id, len(plans), _redact(url))
    try:
        reports = await asyncio.gather(
            *(
                _stream(ws, call, plan, codec, faults, started_at, pace_from)
                for ws, plan in zip(connections, plans, strict=True)
            )
        )
    finally:
        # Cancelled (Ctrl-C) or failed: drop what is still open, as a crashed gateway would.
        for ws in connections:
            if ws.state is not State.CLOSED:
                ws.transport.abort()
    return CallReport(call.call_id, list(reports))


class _Tally:
    """What one connection has done so far (mutable; frozen into a StreamReport)."""

    def __init__(self, tracks: tuple[Track, ...]) -> None:
        self.sent: dict[Track, list[int]] = {t: [] for t in tracks}
        self.dropped: dict[Track, list[int]] = {t: [] for t in tracks}
        self.media = 0
        self.malformed = 0
        self.completed = False


async def _stream(
    ws: ClientConnection,
    call: SimulatedCall,
    plan: StreamPlan,
    codec: Codec,
    faults: Faults,
    started_at: float,
    start_clock: float | None,
) -> StreamReport:
    """Send one connection's messages; ``start_clock`` set means real-time pacing."""
    counts = {t: frame_count(len(call.tracks[t]), codec, FRAME_MS) for t in plan.tracks}
    writer = MessageWriter(call, plan, codec, started_at, faults.string_numbers)
    steps = connection_steps(counts, faults, fault_rng(faults, call.call_id, plan.position))
    tally = _Tally(plan.tracks)
    try:
        aborted = await _send_steps(ws, writer, steps, tally, faults.disconnect_after, start_clock)
        if aborted:
            return _report(plan, tally, None, f"aborted after {tally.media} media messages")
        await ws.close()
    except ConnectionClosed as exc:
        log.info("call_id=%s stream %s closed by the server: %s", call.call_id, plan.stream_id, exc)
    received = ws.protocol.close_rcvd
    if received is None:
        return _report(plan, tally, None, "connection lost without a close frame")
    return _report(plan, tally, received.code, received.reason)


async def _send_steps(
    ws: ClientConnection,
    writer: MessageWriter,
    steps: Iterator[Step],
    tally: _Tally,
    disconnect_after: int | None,
    start_clock: float | None,
) -> bool:
    """Send every step, paced or not; True when ``disconnect_after`` aborted the socket."""
    loop = asyncio.get_running_loop()
    tick = 0
    for step in steps:
        if (
            step.kind not in ("connected", "start")
            and disconnect_after is not None
            and (tally.media >= disconnect_after)
        ):
            # Abort like a crashed gateway: no close frame, no stop, TCP reset.
            ws.transport.abort()
            await ws.wait_closed()
            return True
        if step.tick != tick:
            tick = step.tick
            if start_clock is None:
                await asyncio.sleep(0)  # let other calls' streams have their turn
            else:
                # Absolute schedule from the stream start: late wake-ups do not add up.
                delay = start_clock + tick * FRAME_MS / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        if step.kind == "drop":
            assert step.track is not None
            tally.dropped[step.track].append(step.chunk)
            continue
        await ws.send(writer.render(step), text=True)
        if step.kind == "media":
            assert step.track is not None
            tally.sent[step.track].append(step.chunk)
            tally.media += 1
        elif step.kind == "malformed":
            tally.malformed += 1
        elif step.kind == "stop":
            tally.completed = True
    return False


def _report(plan: StreamPlan, tally: _Tally, code: int | None, reason: str) -> StreamReport:
    return StreamReport(
        stream_id=plan.stream_id,
        channel=plan.channel,
        sent_chunks=tally.sent,
        dropped=tally.dropped,
        malformed_sent=tally.malformed,
        close_code=code,
        close_reason=reason,
        completed=tally.completed,
    )
