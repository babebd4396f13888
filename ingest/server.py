"""``callrec ingest``: the WebSocket server Wavix streams call audio to.

HTTP routes, all on one port (decided before any WebSocket upgrade):

================================  =====================================================
``GET /v1/stream?token=T``        WebSocket upgrade; also ``/v1/stream/T``. 401 without
                                  a valid token, 503 while not ready.
``GET /healthz``                  200 while the process runs
``GET /readyz``                   200 when Kafka answers and we are not draining, else 503
``GET /metrics``                  Prometheus text format
================================  =====================================================

Per connection: each message is parsed once (``StreamSession``) as picows reads
it (ingest/stream.py), and its record offered to the ``KafkaPublisher``; while the publisher
has no room (Kafka slow or away) the socket is not read (backpressure). When
the socket ends for any reason a ``StreamClosed`` record is written after every
chunk of the stream has been acknowledged.

Coalescing (``CALLREC_INGEST_COALESCE_MS`` > 0): a stream's media frames are
gathered into one ``MediaBatch`` record per window instead of one ``MediaChunk``
each; one server timer writes the batches whose window is over, and a batch is
written at once when full, on ``stop``, before a ``mark``, when the socket
stops being read for want of room, and when the stream ends (before its close
record). Frames still in a window are read but not yet offered: not
acknowledged (docs/reliability.md).

Shutdown (SIGTERM): ``/readyz`` and new stream upgrades answer 503 (the port
stays open so probes see it), live streams continue for ``ingest_drain_grace_s``;
those still open are then closed with 1001, their close records written, the
producer flushed and the listening socket closed.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import ipaddress
import logging
import math
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, parse_qs, urlsplit

import prometheus_client
from aiokafka.errors import KafkaError
from picows import (
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from infra.logsafe import install_token_redaction, safe
from ingest import metrics
from ingest.errors import (
    AnonymousAccessRefused,
    CloseCode,
    IdleTimeout,
    IngestError,
    ServerShutdown,
    StreamLimitExceeded,
)
from ingest.session import StreamSession
from ingest.stream import FRAME_HARD_LIMIT, IngestSocket, OpenStream
from schemas import envelope, streamtoken
from schemas.codecs import codec_by_id

if TYPE_CHECKING:
    from infra.bus import Publisher
    from ingest.settings import IngestSettings

log = logging.getLogger(__name__)

_PICOWS_LOG = logging.getLogger("ingest.ws")
"""picows' logger: a line per connection at INFO; callrec's own lines say what matters."""

STREAM_PATH = "/v1/stream"


class IngestServer:
    """One ingest process: WebSocket server, Kafka publisher, probes and drain."""

    def __init__(self, settings: IngestSettings, publisher: Publisher) -> None:
        self.settings = settings
        self.codec = codec_by_id(settings.ingest_codec)
        self.publisher = publisher
        self._tokens = [t.get_secret_value().encode() for t in settings.ingest_tokens]
        self._token_keys = settings.token_keys()
        """Per-call stream token keys (docs/control.md, "Stream tokens")."""
        self._server: asyncio.Server | None = None
        self._streams: set[OpenStream] = set()
        self._streams_per_call: dict[str, dict[str, str]] = {}
        """call_id -> {connection_id: stream_type} of the streams open on this pod."""
        self._handlers: set[asyncio.Task[None]] = set()
        self._kafka_ok = False
        self._publisher_started = False
        self.draining = False
        self._tasks: list[asyncio.Task[None]] = []
        # Stream URLs carry tokens; we log request paths at DEBUG.
        install_token_redaction()
        self.coalesce_s = settings.ingest_coalesce_ms / 1000
        self.coalesce_max_frames = settings.ingest_coalesce_max_frames
        self._coalesce_tick = self.coalesce_s / 4
        self._windows: dict[OpenStream, float] = {}
        """Streams with frames in a coalescing window -> the window's end (loop time),
        oldest first: windows have one length, so insertion order is deadline order."""
        self._window_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """Set by :meth:`start`. ``asyncio.get_running_loop()`` makes a ``getpid`` system
        call (CPython's fork check): 3 % of ingest's samples in a native profile when each
        window asked it (docs/benchmarks.md, "Cost per call")."""

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._kafka_ok and self._publisher_started and not self.draining

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen at once (probes answer); connect to Kafka in the background.

        Raises :class:`AnonymousAccessRefused` when no token is configured, unless
        anonymous access is asked for or only loopback is bound.
        """
        check_access(self.settings)
        self._server = await ws_create_server(
            self._route,
            self.settings.ingest_host,
            self.settings.ingest_port,
            # Messages are limited by IngestSocket (1009); this only bounds the memory a
            # frame may take before it is seen.
            max_frame_size=FRAME_HARD_LIMIT * self.settings.ingest_max_message_bytes,
            websocket_handshake_timeout=10,
            # No keepalive pings: while Kafka is slow we stop reading sockets on purpose,
            # so pongs would go unread and live streams would be closed. Dead peers are
            # closed by the idle sweep, which knows when we are the ones waiting.
            enable_auto_ping=False,
            # The loop's own transports (uvloop's by default), not aiofastnet's: as fast
            # here (5.4 against 5.6 us per real-time message) and long proven.
            use_aiofastnet=False,
            logger_name=_PICOWS_LOG,
        )
        loop = self._loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch_kafka()), loop.create_task(self._sweep_idle())]
        log.info(
            "ingest listening on %s:%d%s, publishing to %s",
            self.settings.ingest_host, self.port, STREAM_PATH, self.settings.kafka_media_topic,
        )

    def stop_taking_streams(self) -> None:
        """From now on ``/readyz`` and new stream upgrades answer 503. Called from the
        SIGTERM handler itself: a probe or an upgrade read in the same turn of the loop
        as the signal must already see it."""
        self.draining = True
        metrics.READY.set(0)

    async def drain(self, grace_s: float | None = None) -> None:
        """Stop taking streams, let live ones finish within the grace period, then close."""
        grace = self.settings.ingest_drain_grace_s if grace_s is None else grace_s
        self.stop_taking_streams()
        assert self._server is not None
        log.info("draining: %d live streams, grace %.0fs", len(self._streams), grace)
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=grace)
        for stream in list(self._streams):
            stream.fail(ServerShutdown("drain grace period over"))
        # Handlers still write their close records; wait for them before the producer stops.
        if self._handlers:
            await asyncio.wait(set(self._handlers))
        await self.close()

    async def close(self) -> None:
        """Stop at once: streams still open are closed (1001) and their sockets dropped."""
        for stream in list(self._streams):
            stream.fail(ServerShutdown("server closing"))
            stream.ws.disconnect()
        if self._handlers:  # each writes its stream's close record
            await asyncio.wait(set(self._handlers))
        for stream in list(self._windows):
            stream.flush()
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._publisher_started:
            await self.publisher.stop()
            self._publisher_started = False

    async def _watch_kafka(self) -> None:
        """Connect the producer (retrying), then keep ``ready`` in step with Kafka."""
        while not self._publisher_started:
            try:
                await self.publisher.start()
                self._publisher_started = True
            except KafkaError as exc:
                log.warning("Kafka not reachable yet at %s: %r", self.settings.kafka_bootstrap, exc)
                await asyncio.sleep(1)
        while True:
            ok = await self.publisher.probe(within_s=3)
            if ok != self._kafka_ok:
                log.info("Kafka %s", "reachable" if ok else "unreachable")
            self._kafka_ok = ok
            metrics.READY.set(1 if self.ready else 0)
            await asyncio.sleep(1 if ok else 0.5)

    async def _sweep_idle(self) -> None:
        """Close streams that sent nothing for ``ingest_idle_timeout_s`` (one timer for all)."""
        timeout = self.settings.ingest_idle_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            cutoff = time.monotonic() - timeout
            idle = [st for st in self._streams
                    if st.last_seen < cutoff and st.held_since is None]
            for stream in idle:
                stream.last_seen = float("inf")
                stream.fail(IdleTimeout(f"no message for {timeout:.0f}s"))

    # -- coalescing windows: one timer for all streams ----------------------------------

    def window_opened(self, stream: OpenStream) -> None:
        """``stream`` took the first frame of a window: it ends ``coalesce_s`` from now."""
        loop = self._loop or asyncio.get_running_loop()
        deadline = loop.time() + self.coalesce_s
        self._windows[stream] = deadline
        if self._window_timer is None:
            self._arm_window_timer(loop, deadline)

    def window_closed(self, stream: OpenStream) -> None:
        self._windows.pop(stream, None)

    def _arm_window_timer(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        # Fire on a grid of a quarter window, at the tick before the deadline, and flush
        # every window ending before the next tick: a few timer calls per window for all
        # streams together, never one per stream; a frame waits 3/4 to 4/4 of the window.
        tick = self._coalesce_tick
        self._window_timer = loop.call_at(math.floor(deadline / tick) * tick,
                                          self._flush_windows)

    def _flush_windows(self) -> None:
        self._window_timer = None
        loop = self._loop or asyncio.get_running_loop()
        limit = loop.time() + self._coalesce_tick
        windows = self._windows
        while windows:
            stream, deadline = next(iter(windows.items()))
            if deadline > limit:
                self._arm_window_timer(loop, deadline)
                return
            stream.flush()  # removes it from windows

    # -- HTTP, before the upgrade ------------------------------------------------------

    def _route(self, request: WSUpgradeRequest) -> IngestSocket | WSUpgradeResponseWithListener:
        """picows' listener factory: a stream's socket, or the HTTP answer to send instead."""
        path = request.path.decode("latin-1")
        log.debug("%s %s", request.method.decode("latin-1"), path)  # tokens redacted
        answer = self.answer(path)
        if answer is not None:
            return WSUpgradeResponseWithListener(answer, None)
        return IngestSocket(self, self._call_token_in(path))

    def answer(self, target: str) -> WSUpgradeResponse | None:
        """The response to a request for ``target`` (path and query); None: upgrade it."""
        url = urlsplit(target)
        path = url.path.rstrip("/")
        if path == "/healthz":
            return _text(http.HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            if self.ready:
                return _text(http.HTTPStatus.OK, "ready\n")
            why = "draining" if self.draining else "kafka unavailable"
            return _text(http.HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {why}\n")
        if path == "/metrics":
            return WSUpgradeResponse.create_ok_response(
                prometheus_client.generate_latest(),
                [("Content-Type", prometheus_client.CONTENT_TYPE_LATEST)])
        if path == STREAM_PATH or path.startswith(STREAM_PATH + "/"):
            if not self._authorized(_token_in(url)):
                metrics.CONNECTIONS.labels("unauthorized").inc()
                return _text(http.HTTPStatus.UNAUTHORIZED, "missing or invalid token\n")
            if not self.ready:
                metrics.CONNECTIONS.labels("not_ready").inc()
                return _text(http.HTTPStatus.SERVICE_UNAVAILABLE, "not ready, try another pod\n")
            return None
        return _text(http.HTTPStatus.NOT_FOUND, "not found\n")

    def _authorized(self, token: str | None) -> bool:
        if not self._tokens and not self._token_keys:
            return True
        if not token:
            return False
        if self._token_keys and streamtoken.key_id_of(token) in self._token_keys:
            return True  # a per-call token: checked against the start's call id
        if not self._tokens:
            return False
        given = token.encode()
        # Compare with every token so the time taken says nothing about which matched.
        matched = False
        for expected in self._tokens:
            matched |= hmac.compare_digest(given, expected)
        return matched

    # -- one stream ----------------------------------------------------------------------

    def open_stream(self, ws: IngestSocket) -> OpenStream:
        """A stream's socket was upgraded: its stream, and the task that will end it."""
        metrics.CONNECTIONS.labels("accepted").inc()
        metrics.CONNECTIONS_OPEN.inc()
        session = StreamSession(self.codec, self.settings.ingest_pod_name, uuid.uuid4().hex)
        stream = OpenStream(self, ws, session)
        stream.call_token = ws.call_token
        self._streams.add(stream)
        task = asyncio.get_running_loop().create_task(self._stream(stream))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        return stream

    async def _stream(self, stream: OpenStream) -> None:
        """Wait for the socket to end, then write the stream's close record."""
        ws, session = stream.ws, stream.session
        try:
            await ws.disconnected
            await stream.settled.wait()  # what was read while Kafka had no room
            stream.flush()  # the last window, before the close record
            await asyncio.gather(*stream.unacked, return_exceptions=True)
            stream.collect_acks()
        finally:
            self._streams.discard(stream)
            metrics.CONNECTIONS_OPEN.dec()
        sent = ws.close_sent
        reason: envelope.CloseReason
        if stream.failure is not None:
            reason = "disconnect" if isinstance(stream.failure, ServerShutdown) else "error"
            detail = f"{stream.failure.reason}: {stream.failure}"
        elif sent == CloseCode.MESSAGE_TOO_BIG:
            metrics.INVALID_MESSAGES.labels("too_big").inc()
            metrics.CLOSE_CODES.labels("1009").inc()
            reason, detail = "error", "message over CALLREC_INGEST_MAX_MESSAGE_BYTES (1009)"
        elif sent == CloseCode.PROTOCOL_ERROR:
            metrics.CLOSE_CODES.labels("1002").inc()
            reason, detail = "error", "WebSocket protocol error (1002)"
        elif session.stopped:
            reason, detail = "stop", "stop received"
        else:
            reason, detail = "disconnect", "socket closed without stop"
        await self._finish(stream, reason, detail)

    def _call_token_in(self, target: str) -> str | None:
        """The per-call token a stream request carries, if it is one."""
        if not self._token_keys:
            return None
        token = _token_in(urlsplit(target))
        if token and streamtoken.key_id_of(token) in self._token_keys:
            return token
        return None

    def token_fits(self, token: str, call_id: str) -> bool:
        return streamtoken.verify(token, call_id, self._token_keys)

    def admit(self, start: envelope.StreamStarted) -> None:
        """Refuse a stream past the per-call limits (5 oneway + 1 twoway) on this pod.

        Connections are counted, not stream ids: a sender reusing a stream id on
        several sockets at once must not get around the limit.
        """
        streams = self._streams_per_call.get(start.call_id, {})
        limit = (self.settings.ingest_max_oneway_streams_per_call
                 if start.stream_type == "oneway"
                 else self.settings.ingest_max_twoway_streams_per_call)
        same_type = sum(1 for t in streams.values() if t == start.stream_type)
        if same_type >= limit:
            # Nothing is stored for a refused stream: refusals cost no memory.
            raise StreamLimitExceeded(
                f"call_id={safe(start.call_id)} already has {same_type} {start.stream_type} "
                "streams on this pod"
            )
        self._streams_per_call.setdefault(start.call_id, streams)[start.connection_id] = (
            start.stream_type
        )

    async def _offer_when_room(self, partition: int, key: bytes,
                               value: bytes) -> asyncio.Future[None]:
        """``offer``, after waiting for room like a connection would (close records)."""
        publisher = self.publisher
        if not publisher.has_room():
            room: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def wake() -> None:
                if not room.done():
                    room.set_result(None)

            publisher.when_room(wake)
            await room
        return publisher.offer(partition, key, value)

    async def _finish(self, stream: OpenStream, reason: envelope.CloseReason, detail: str) -> None:
        """Wait for the stream's chunks to be acknowledged, then write its close record."""
        session = stream.session
        if session.start is None:
            return
        metrics.STREAMS_CLOSED.labels(reason).inc()
        key = session.start.call_id.encode()
        record = session.close_record(reason, detail)
        try:
            done = await self._offer_when_room(self.publisher.partition_for(key), key,
                                               envelope.encode(record))
            await done
        except IngestError as exc:
            log.error("call_id=%s stream %s: close record lost: %s",
                      safe(session.call_id), safe(session.stream_id), exc)
        streams = self._streams_per_call.get(session.start.call_id)
        if streams is not None:
            streams.pop(session.connection_id, None)
            if not streams:
                del self._streams_per_call[session.start.call_id]
        log.info("call_id=%s stream %s closed: %s (%s), %d chunks, %d invalid",
                 safe(session.call_id), safe(session.stream_id), reason, safe(detail, 256),
                 session.chunks, session.invalid)




def check_access(settings: IngestSettings) -> None:
    """Refuse (:class:`AnonymousAccessRefused`) to serve without a stream token unless
    anonymous access is asked for, or only loopback is bound; warn when serving so.
    Per-call stream token keys (``CALLREC_STREAM_TOKEN_KEYS``) are authentication too."""
    if settings.ingest_tokens or settings.stream_token_keys is not None:
        return
    host = settings.ingest_host
    if settings.ingest_allow_anonymous:
        log.warning("CALLREC_INGEST_TOKENS is empty and CALLREC_INGEST_ALLOW_ANONYMOUS is "
                    "true: streams from anyone who reaches %s are recorded", host)
    elif _loopback(host):
        log.warning("CALLREC_INGEST_TOKENS is empty: streams are accepted without a token "
                    "on %s (loopback only)", host)
    else:
        raise AnonymousAccessRefused(
            f"CALLREC_INGEST_TOKENS is empty and ingest binds {host!r}: anyone could record "
            "into the archive. Set CALLREC_INGEST_TOKENS, bind 127.0.0.1 "
            "(CALLREC_INGEST_HOST), or set CALLREC_INGEST_ALLOW_ANONYMOUS=true"
        )


def _loopback(host: str) -> bool:
    """True when ``host`` binds a loopback address only (nobody else can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_in(url: SplitResult) -> str | None:
    """A stream request's token: ``/v1/stream/T`` or ``/v1/stream?token=T``."""
    path = url.path.rstrip("/")
    return path[len(STREAM_PATH) + 1:] or _first(parse_qs(url.query).get("token"))


def _text(status: http.HTTPStatus, body: str) -> WSUpgradeResponse:
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    if status >= 400:
        return WSUpgradeResponse.create_error_response(status, body.encode(), headers)
    return WSUpgradeResponse.create_ok_response(body.encode(), headers)


def _first(values: Iterable[str] | None) -> str | None:
    return next(iter(values), None) if values else None
