"""``callrec simulate``: act as Wavix's media gateway and stream audio files as calls.

Each simulated call opens its WebSocket connection(s) to the ingest URL, all of
them before any message, then sends on each exactly what Wavix sends:
``connected``, ``start``, one ``media`` per 20 ms frame and ``stop``, then closes
normally. Two layouts, as a Wavix customer may configure them:

- ``both``: one connection with ``stream_channel`` both; frame *n* of the
  inbound track then frame *n* of the outbound track, ``media.track`` saying which.
- ``oneway``: one connection per track (``channel`` inbound / outbound), each
  with its own ``stream_id``.

Numbering, per connection: ``start`` has ``sequence_number`` 1 and every later
message the next number in the gateway's order; ``chunk`` counts from 1 per
track; ``timestamp`` is ``(chunk - 1) * 20`` ms. A frame is sent when it is
complete, 20 ms after it began (``realtime``), or as fast as the socket takes it.
``event_time`` follows the audio timeline from one start time per call, so every
stream of a call carries the same ``start`` time, as at the gateway.

Faults (:class:`Faults`) model a bad network or a buggy sender. They are drawn
from a ``random.Random`` seeded with the seed, the call id and the stream's
index, so a run is reproducible whatever the concurrency. A dropped chunk keeps
its sequence number (the receiver sees the gap), a duplicate repeats it, a
reordered pair keeps both; malformed messages are extra, numbered by nothing.

Errors::

    SimulatorError
    ├── StreamRejected   the server refused the WebSocket upgrade (``status``: 401, 503)
    ├── ConnectFailed    no WebSocket connection at all (refused, timeout, bad handshake)
    └── CallsFailed      run_calls: some calls failed; ``errors`` and the others' ``reports``

A close code sent by the server while streaming (1008, 1009, 1013, ...) is not
an error: it is recorded in :class:`StreamReport`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NamedTuple, assert_never
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State

from infra.audio import AudioFileError, encode_pcm, frame_count, load_audio
from schemas import wavix
from schemas.codecs import CODECS, DEFAULT_CODEC, Codec, codec_by_id
from schemas.wavix import Channel, Track

log = logging.getLogger(__name__)

Layout = Literal["both", "oneway"]
TRACKS: tuple[Track, ...] = ("inbound", "outbound")
FRAME_MS = 20
"""Audio per media message, as Wavix sends it."""
DEFAULT_URL = "ws://127.0.0.1:8080/v1/stream"
TOKEN_ENV = "CALLREC_SIMULATE_TOKEN"
CLOSE_TIMEOUT_S = 120.0
"""How long to wait for the server to answer our close frame. The server reads the close
frame only after every media frame before it, so a backpressured server may take long;
giving up would reset the TCP connection and lose what its kernel still holds."""

MalformedKind = Literal["not_json", "bad_base64", "unknown_event"]
MALFORMED_KINDS: tuple[MalformedKind, ...] = ("not_json", "bad_base64", "unknown_event")


# -- errors ----------------------------------------------------------------------------


class SimulatorError(Exception):
    """Root of the errors of ``callrec simulate``."""


class StreamRejected(SimulatorError):
    """The server answered the WebSocket upgrade with an HTTP error."""

    def __init__(self, status: int, body: str = "") -> None:
        self.status = status
        """HTTP status, e.g. 401 (bad token) or 503 (not ready)."""
        self.body = body
        """The response body, trimmed: the server's reason in words."""
        detail = f": {body}" if body else ""
        super().__init__(f"server rejected the stream with HTTP {status}{detail}")


class ConnectFailed(SimulatorError):
    """No WebSocket connection: nothing listens, a timeout, or not a WebSocket server."""


class CallsFailed(SimulatorError):
    """Some calls of :func:`run_calls` could not be streamed; the others finished."""

    def __init__(self, errors: Mapping[str, SimulatorError], reports: list[CallReport]) -> None:
        self.errors = dict(errors)
        """call_id -> why that call could not be streamed."""
        self.reports = reports
        """Reports of the calls that were streamed."""
        kinds = Counter(str(e) for e in self.errors.values())
        listed = "; ".join(f"{msg} (x{n})" for msg, n in kinds.most_common())
        super().__init__(f"{len(self.errors)} calls failed: {listed}")

    @property
    def statuses(self) -> set[int]:
        """The HTTP statuses of the rejected calls."""
        return {e.status for e in self.errors.values() if isinstance(e, StreamRejected)}


# -- value types -----------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedCall:
    """One call to stream: its id and the encoded audio of each track."""

    call_id: str
    """Wavix call id sent in every message of the call."""
    tracks: Mapping[Track, bytes]
    """Audio per track, already encoded in the codec the call is streamed with."""
    layout: Layout = "both"
    """``both``: one connection for all tracks; ``oneway``: one connection per track."""

    def __post_init__(self) -> None:
        if not self.tracks:
            raise ValueError(f"call {self.call_id} has no track")
        unknown = set(self.tracks) - set(TRACKS)
        if unknown:
            raise ValueError(f"call {self.call_id}: unknown tracks {sorted(unknown)}")


@dataclass(frozen=True)
class Faults:
    """What to break on purpose; all zero means a perfect Wavix stream."""

    drop: float = 0.0
    """Probability that a chunk is never sent (its number is listed as dropped)."""
    duplicate: float = 0.0
    """Probability that a chunk is sent twice in a row."""
    reorder: float = 0.0
    """Probability that a chunk is sent after the next chunk of its track."""
    malformed: float = 0.0
    """Probability that an extra invalid message follows a chunk: in turn non-JSON text,
    a media message with a payload that is not base64, and an unknown event."""
    disconnect_after: int | None = None
    """Abort each connection's TCP socket, without close frame or ``stop``, after this
    many media messages."""
    string_numbers: bool = False
    """Send ``sequence_number``, ``timestamp`` and ``chunk`` as JSON strings (Wavix's guide)."""
    seed: int = 0
    """Seed of the fault draws; the same seed gives the same faults."""

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "malformed"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        if self.disconnect_after is not None and self.disconnect_after < 0:
            raise ValueError(f"disconnect_after must be >= 0, got {self.disconnect_after}")


@dataclass(frozen=True)
class StreamReport:
    """What the simulator did on one connection, and how it ended."""

    stream_id: str
    """The ``stream_id`` of the connection's messages."""
    channel: Channel
    """The ``channel`` announced in ``start``."""
    sent_chunks: dict[Track, list[int]]
    """Per track, the chunk numbers sent, in sending order, duplicates included."""
    dropped: dict[Track, list[int]]
    """Per track, the chunk numbers withheld by the ``drop`` fault."""
    malformed_sent: int
    """Invalid messages injected by the ``malformed`` fault."""
    close_code: int | None
    """Close code the server sent (1000 after a normal end, 1008, 1009, 1013, ...); None
    when no close frame came (aborted by ``disconnect_after`` or connection lost)."""
    close_reason: str
    """The server's close reason, or why there was none."""
    completed: bool
    """Whether ``stop`` was sent."""

    @property
    def media_sent(self) -> int:
        """Media messages sent, duplicates included."""
        return sum(len(chunks) for chunks in self.sent_chunks.values())


@dataclass(frozen=True)
class CallReport:
    """The streams of one simulated call."""

    call_id: str
    """The call's Wavix call id."""
    streams: list[StreamReport] = field(default_factory=list)
    """One report per connection, in the order of :data:`TRACKS`."""

    @property
    def completed(self) -> bool:
        """Whether every stream of the call sent ``stop``."""
        return all(s.completed for s in self.streams)


# -- planning: what each connection sends (no I/O) -------------------------------------


class _StreamPlan(NamedTuple):
    """One connection of a call."""

    position: int
    """0 for the call's first connection, 1 for the second: part of the fault seed."""
    stream_id: str
    channel: Channel
    tracks: tuple[Track, ...]


StepKind = Literal["connected", "start", "media", "drop", "malformed", "stop"]


class _Step(NamedTuple):
    """One thing to do on a connection, at the end of 20 ms frame ``tick`` (0 = at once)."""

    tick: int
    kind: StepKind
    seq: int | None = None
    track: Track | None = None
    chunk: int = 0
    malformed: MalformedKind | None = None


def _plan_streams(call: SimulatedCall) -> list[_StreamPlan]:
    """The connections of a call, each with a new stream id (a UUID, as Wavix's)."""
    tracks = tuple(t for t in TRACKS if t in call.tracks)
    if call.layout == "both":
        channel: Channel = "both" if len(tracks) == 2 else tracks[0]
        groups: list[tuple[Channel, tuple[Track, ...]]] = [(channel, tracks)]
    else:
        groups = [(t, (t,)) for t in tracks]
    return [_StreamPlan(i, str(uuid.uuid4()), ch, ts) for i, (ch, ts) in enumerate(groups)]


def _steps(counts: Mapping[Track, int], faults: Faults, rng: random.Random) -> Iterator[_Step]:
    """Every step of one connection in sending order, faults applied.

    ``counts`` is the number of frames of each track the connection carries. Four
    numbers are drawn per chunk whatever the probabilities, so one seed gives the
    same draws with different fault settings.
    """
    yield _Step(0, "connected")
    yield _Step(0, "start", seq=1)
    seq = 1
    malformed = 0
    held: dict[Track, list[_Step]] = {}
    ticks = max(counts.values(), default=0)
    for tick in range(1, ticks + 1):
        for track in TRACKS:
            if tick > counts.get(track, 0):
                continue
            seq += 1
            drop, dup, swap, bad = rng.random(), rng.random(), rng.random(), rng.random()
            if drop < faults.drop:
                group = [_Step(tick, "drop", seq, track, tick)]
            else:
                media = _Step(tick, "media", seq, track, tick)
                group = [media, media] if dup < faults.duplicate else [media]
                if bad < faults.malformed:
                    kind = MALFORMED_KINDS[malformed % len(MALFORMED_KINDS)]
                    malformed += 1
                    group.append(_Step(tick, "malformed", seq, track, tick, kind))
                if track not in held and swap < faults.reorder and tick < counts[track]:
                    held[track] = group
                    continue
            yield from group
            for step in held.pop(track, ()):
                yield step._replace(tick=tick)
    yield _Step(ticks, "stop", seq=seq + 1)


class _MessageWriter:
    """Renders the steps of one connection as Wavix JSON (sans I/O)."""

    def __init__(
        self,
        call: SimulatedCall,
        plan: _StreamPlan,
        codec: Codec,
        started_at: float,
        numbers_as_strings: bool,
    ) -> None:
        self.call = call
        self.plan = plan
        self.frame_bytes = codec.frame_bytes(FRAME_MS)
        self.started_at = started_at
        self.numbers_as_strings = numbers_as_strings
        self._time_cache = (-1, "")

    def render(self, step: _Step) -> bytes:
        """The text frame for ``step`` (not for ``drop``, which sends nothing)."""
        call_id, stream_id = self.call.call_id, self.plan.stream_id
        when = self._event_time(step.tick)
        event: wavix.Event
        match step.kind:
            case "connected":
                event = wavix.Connected(event_time=when)
            case "start":
                event = wavix.Start(
                    call_id=call_id,
                    stream_id=stream_id,
                    stream_type="oneway",
                    channel=self.plan.channel,
                    sequence_number=step.seq,
                    event_time=when,
                )
            case "media":
                event = wavix.Media(
                    call_id=call_id,
                    stream_id=stream_id,
                    media=self._body(step),
                    sequence_number=step.seq,
                    event_time=when,
                )
            case "stop":
                event = wavix.Stop(call_id, stream_id, sequence_number=step.seq, event_time=when)
            case "malformed":
                return self._malformed(step, when)
            case "drop":
                raise ValueError("a dropped chunk has no message")
            case _:
                assert_never(step.kind)
        return wavix.encode(event, numbers_as_strings=self.numbers_as_strings)

    def _body(self, step: _Step) -> wavix.MediaBody:
        assert step.track is not None
        offset = (step.chunk - 1) * self.frame_bytes
        payload = self.call.tracks[step.track][offset : offset + self.frame_bytes]
        return wavix.MediaBody(
            payload=payload,
            chunk=step.chunk,
            timestamp=(step.chunk - 1) * FRAME_MS,
            track=step.track,
        )

    def _malformed(self, step: _Step, when: str) -> bytes:
        ids = {"call_id": self.call.call_id, "stream_id": self.plan.stream_id}
        match step.malformed:
            case "not_json":
                return b'{"event": "media", "media": {"payload": "AAAA'  # cut off mid-message
            case "bad_base64":
                media = {
                    "payload": "*** not base64 ***",
                    "track": step.track,
                    "chunk": step.chunk,
                    "timestamp": (step.chunk - 1) * FRAME_MS,
                }
                return msgspec.json.encode(
                    {"event": "media", **ids, "media": media, "event_time": when}
                )
            case "unknown_event":
                return msgspec.json.encode({"event": "simulator_noise", **ids, "event_time": when})
            case None:
                raise ValueError("a malformed step needs a kind")
            case _:
                assert_never(step.malformed)

    def _event_time(self, tick: int) -> str:
        cached_tick, text = self._time_cache
        if cached_tick != tick:
            text = iso_time(self.started_at + tick * FRAME_MS / 1000)
            self._time_cache = (tick, text)
        return text


def iso_time(epoch_s: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.120Z``."""
    stamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _rng(faults: Faults, call_id: str, index: int) -> random.Random:
    # A str seed is hashed with SHA-512, so it does not depend on PYTHONHASHSEED.
    return random.Random(f"{faults.seed}/{call_id}/{index}")


# -- I/O: one call ---------------------------------------------------------------------


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
    faults: Faults = Faults(),
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
    plans = _plan_streams(call)
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
    plan: _StreamPlan,
    codec: Codec,
    faults: Faults,
    started_at: float,
    start_clock: float | None,
) -> StreamReport:
    """Send one connection's messages; ``start_clock`` set means real-time pacing."""
    counts = {t: frame_count(len(call.tracks[t]), codec, FRAME_MS) for t in plan.tracks}
    writer = _MessageWriter(call, plan, codec, started_at, faults.string_numbers)
    steps = _steps(counts, faults, _rng(faults, call.call_id, plan.position))
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
    writer: _MessageWriter,
    steps: Iterator[_Step],
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


def _report(plan: _StreamPlan, tally: _Tally, code: int | None, reason: str) -> StreamReport:
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


# -- I/O: many calls -------------------------------------------------------------------


async def run_calls(
    url: str,
    calls: Sequence[SimulatedCall],
    *,
    codec: Codec = DEFAULT_CODEC,
    realtime: bool = True,
    faults: Faults = Faults(),
    token: str | None = None,
    concurrency: int | None = None,
    on_call_done: Callable[[str], None] | None = None,
) -> list[CallReport]:
    """Stream ``calls``, at most ``concurrency`` at a time (default: all at once).

    Returns one report per call, in the order of ``calls``. A call that cannot be
    streamed does not stop the others: once all are done, :class:`CallsFailed` is
    raised, carrying each failure (``StreamRejected`` with its HTTP status, or
    ``ConnectFailed``) and the reports of the calls that were streamed.
    ``on_call_done(call_id)`` is called as each call ends, for progress display.
    """
    limit = asyncio.Semaphore(concurrency or max(1, len(calls)))
    errors: dict[str, SimulatorError] = {}

    async def one(call: SimulatedCall) -> CallReport | None:
        async with limit:
            try:
                return await stream_call(
                    url, call, codec=codec, realtime=realtime, faults=faults, token=token
                )
            except SimulatorError as exc:
                log.info("call_id=%s: %s", call.call_id, exc)
                errors[call.call_id] = exc
                return None
            finally:
                if on_call_done is not None:
                    on_call_done(call.call_id)

    results = await asyncio.gather(*(one(call) for call in calls))
    reports = [r for r in results if r is not None]
    if errors:
        raise CallsFailed(errors, reports)
    return reports


# -- calls from an audio file ----------------------------------------------------------


def build_calls(
    path: str | Path,
    *,
    calls: int = 1,
    layout: Layout = "both",
    channel: Channel = "both",
    codec: Codec = DEFAULT_CODEC,
    call_id_prefix: str = "sim",
) -> list[SimulatedCall]:
    """``calls`` calls that all carry the audio of ``path``, encoded as ``codec``.

    A stereo file's left channel is the inbound track and its right channel the
    outbound track; a mono file gives both tracks the same audio. ``channel``
    keeps one track only (its own channel of a stereo file, a mono file as is).
    Call ids are ``<prefix>-<n>``, n from 1. Raises ``AudioFileError``.
    """
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    samples = load_audio(path, codec.sample_rate)
    if samples.shape[0] > 2:
        log.warning("%s has %d channels: using the first two only", path, samples.shape[0])
    left, right = samples[0], samples[1 if samples.shape[0] > 1 else 0]
    wanted = TRACKS if channel == "both" else (channel,)
    source = {"inbound": left, "outbound": right}
    tracks = {t: encode_pcm(source[t], codec) for t in wanted}
    width = len(str(calls))
    return [
        SimulatedCall(f"{call_id_prefix}-{n:0{width}d}", dict(tracks), layout)
        for n in range(1, calls + 1)
    ]


# -- command line ----------------------------------------------------------------------


def summarize(
    reports: Sequence[CallReport], errors: Mapping[str, SimulatorError], elapsed_s: float
) -> dict[str, object]:
    """Totals of a run, as printed by ``callrec simulate --json`` (without the reports)."""
    streams = [s for r in reports for s in r.streams]
    sent = sum(s.media_sent for s in streams)
    unique = sum(len(set(c)) for s in streams for c in s.sent_chunks.values())
    codes = Counter("none" if s.close_code is None else str(s.close_code) for s in streams)
    return {
        "calls": len(reports) + len(errors),
        "calls_failed": len(errors),
        "errors": {call_id: str(exc) for call_id, exc in sorted(errors.items())},
        "http_statuses": sorted(
            {e.status for e in errors.values() if isinstance(e, StreamRejected)}
        ),
        "streams": len(streams),
        "streams_completed": sum(s.completed for s in streams),
        "close_codes": dict(sorted(codes.items())),
        "media_sent": sent,
        "duplicates_sent": sent - unique,
        "dropped": sum(len(c) for s in streams for c in s.dropped.values()),
        "malformed_sent": sum(s.malformed_sent for s in streams),
        "elapsed_s": round(elapsed_s, 3),
    }


def _exit_code(
    reports: Sequence[CallReport], errors: Mapping[str, SimulatorError], faults: Faults
) -> int:
    """2: some call failed to connect; 1: the server ended a stream early; else 0."""
    if errors:
        return 2
    for stream in (s for r in reports for s in r.streams):
        planned_abort = faults.disconnect_after is not None and stream.close_code is None
        if not planned_abort and (not stream.completed or stream.close_code != 1000):
            return 1
    return 0


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1]")
    return value


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is less than {minimum}")
        return value

    return parse


_EPILOG = """\
examples:
  callrec simulate call.wav                       one real-time call, both tracks
  callrec simulate call.wav --calls 200 --fast    200 concurrent calls, no pacing
  callrec simulate call.wav --layout oneway --drop 0.01 --reorder 0.01 --seed 7

A stereo file's left channel is the inbound track, the right one the outbound
track; a mono file is sent on both. The token comes from --token or the
environment variable CALLREC_SIMULATE_TOKEN.

exit status: 0 every stream ended as planned (stop sent, server closed with
1000, or aborted by --disconnect-after); 1 the server closed some stream
early (see close_codes); 2 some call could not connect (HTTP 401/503,
connection refused) or the file could not be read.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``callrec simulate`` to the command line."""
    p = subparsers.add_parser(
        "simulate",
        help="act as Wavix: stream an audio file as live calls, with faults on demand",
        description="Stream an audio file to an ingest server as Wavix's media gateway "
        "does (connected, start, media every 20 ms, stop), as one or many concurrent "
        "calls, optionally with network faults.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "file",
        metavar="FILE",
        type=Path,
        help="audio file in any format FFmpeg reads (wav, flac, mp3, ...)",
    )
    p.add_argument("--url", default=DEFAULT_URL, help="ingest WebSocket URL (default: %(default)s)")
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"stream token, sent as ?token= (default: ${TOKEN_ENV})",
    )
    p.add_argument(
        "--channel",
        choices=("both", "inbound", "outbound"),
        default="both",
        help="tracks to stream: both, or only inbound (left) or outbound "
        "(right) (default: %(default)s)",
    )
    p.add_argument(
        "--layout",
        choices=("both", "oneway"),
        default="both",
        help="both: one connection carries both tracks; oneway: one "
        "connection per track (default: %(default)s)",
    )
    p.add_argument(
        "--calls",
        type=_count(1),
        default=1,
        metavar="N",
        help="concurrent calls to stream, each with the whole file (default: %(default)s)",
    )
    pacing = p.add_mutually_exclusive_group()
    pacing.add_argument(
        "--realtime",
        dest="realtime",
        action="store_true",
        default=True,
        help="send each 20 ms frame when it is due, like Wavix (default)",
    )
    pacing.add_argument(
        "--fast", dest="realtime", action="store_false", help="send as fast as the server reads"
    )
    p.add_argument(
        "--codec",
        choices=sorted(CODECS),
        default=DEFAULT_CODEC.id,
        help="audio encoding of the payloads; must match the server's "
        "CALLREC_INGEST_CODEC (default: %(default)s, what Wavix sends)",
    )
    faults = p.add_argument_group("faults (drawn per chunk, reproducible with --seed)")
    for flag, what in (
        ("--drop", "a chunk is not sent"),
        ("--duplicate", "a chunk is sent twice"),
        ("--reorder", "a chunk is sent after the next one of its track"),
        (
            "--malformed",
            "an invalid message follows a chunk (non-JSON, bad base64, unknown event, in turn)",
        ),
    ):
        faults.add_argument(
            flag,
            type=_probability,
            default=0.0,
            metavar="P",
            help=f"probability that {what} (default: 0)",
        )
    faults.add_argument(
        "--disconnect-after",
        type=_count(0),
        default=None,
        metavar="N",
        help="abort each connection (TCP reset, no stop) after N media messages",
    )
    faults.add_argument(
        "--string-numbers",
        action="store_true",
        help="send sequence_number, timestamp and chunk as strings, as in Wavix's guide",
    )
    faults.add_argument(
        "--seed", type=int, default=0, help="seed of the fault draws (default: %(default)s)"
    )
    p.add_argument(
        "--call-id-prefix",
        default=None,
        metavar="X",
        help="call ids are X-1, X-2, ... (zero-padded; default: sim-<random hex>, so "
        "that runs do not collide)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary and every stream's report as JSON on stdout",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log each call on stderr")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    """``callrec simulate``: the only function here that prints."""
    from tqdm import tqdm

    from callrec.logs import configure_logging

    configure_logging("INFO" if args.verbose else "WARNING")
    faults = Faults(
        drop=args.drop,
        duplicate=args.duplicate,
        reorder=args.reorder,
        malformed=args.malformed,
        disconnect_after=args.disconnect_after,
        string_numbers=args.string_numbers,
        seed=args.seed,
    )
    codec = codec_by_id(args.codec)
    prefix = args.call_id_prefix or f"sim-{uuid.uuid4().hex[:8]}"
    try:
        calls = build_calls(
            args.file,
            calls=args.calls,
            layout=args.layout,
            channel=args.channel,
            codec=codec,
            call_id_prefix=prefix,
        )
    except AudioFileError as exc:
        print(f"callrec simulate: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    errors: Mapping[str, SimulatorError] = {}
    with tqdm(total=len(calls), unit="call", file=sys.stderr, disable=None) as bar:
        try:
            reports = asyncio.run(
                run_calls(
                    args.url,
                    calls,
                    codec=codec,
                    realtime=args.realtime,
                    faults=faults,
                    token=args.token,
                    on_call_done=lambda _: bar.update(),
                )
            )
        except CallsFailed as exc:
            reports, errors = exc.reports, exc.errors
    summary = summarize(reports, errors, time.perf_counter() - started)
    if args.json:
        summary["reports"] = [dataclasses.asdict(r) for r in reports]
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    return _exit_code(reports, errors, faults)


def _print_summary(summary: Mapping[str, object]) -> None:
    print(
        f"{summary['calls']} calls ({summary['calls_failed']} failed), "
        f"{summary['streams']} streams ({summary['streams_completed']} completed) "
        f"in {summary['elapsed_s']} s"
    )
    print(
        f"media sent {summary['media_sent']} (duplicates {summary['duplicates_sent']}), "
        f"dropped {summary['dropped']}, malformed {summary['malformed_sent']}"
    )
    print(f"close codes: {summary['close_codes']}")
    errors = summary["errors"]
    assert isinstance(errors, dict)
    for call_id, message in list(errors.items())[:10]:
        print(f"failed {call_id}: {message}", file=sys.stderr)
