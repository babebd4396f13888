"""``callrec ingest``: the WebSocket server Wavix streams call audio to.

HTTP routes, all on one port (decided before any WebSocket upgrade):

================================  =====================================================
``GET /v1/stream?token=T``        WebSocket upgrade; also ``/v1/stream/T``. 401 without
                                  a valid token, 503 while not ready.
``GET /healthz``                  200 while the process runs
``GET /readyz``                   200 when Kafka answers and we are not draining, else 503
``GET /metrics``                  Prometheus text format
================================  =====================================================

Per connection: each frame is parsed once (``StreamSession``), the record is
handed to the ``KafkaPublisher`` (which may make us wait: backpressure), and
when the socket ends for any reason a ``StreamClosed`` record is written after
every chunk of the stream has been acknowledged.

Shutdown (SIGTERM): ``/readyz`` and new stream upgrades answer 503 (the port
stays open so probes see it), live streams continue for ``ingest_drain_grace_s``;
those still open are then closed with 1001, their close records written, the
producer flushed and the listening socket closed.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hmac
import http
import logging
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import prometheus_client
from aiokafka.errors import KafkaError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ingest import metrics
from ingest.errors import (
    CloseCode,
    IdleTimeout,
    IngestError,
    KafkaUnavailable,
    ServerShutdown,
    SkippedMessage,
    StreamLimitExceeded,
    StreamRefused,
    TooManyInvalid,
)
from ingest.publisher import KafkaPublisher
from ingest.session import StreamSession
from schemas import envelope
from schemas.codecs import codec_by_id
from schemas.errors import ProtocolError

if TYPE_CHECKING:
    from callrec.bus import Publisher
    from callrec.settings import IngestSettings

log = logging.getLogger(__name__)

STREAM_PATH = "/v1/stream"


class _Connection:
    """Book-keeping ingest holds for one open stream."""

    __slots__ = ("failure", "last_seen", "publishing", "session", "unacked", "ws")

    def __init__(self, ws: ServerConnection, session: StreamSession) -> None:
        self.ws = ws
        self.session = session
        self.last_seen = time.monotonic()
        self.publishing = False
        """Waiting for room in the in-flight budget: not reading is our doing, not idleness."""
        self.unacked: collections.deque[asyncio.Future[None]] = collections.deque()
        self.failure: StreamRefused | None = None


class IngestServer:
    """One ingest process: WebSocket server, Kafka publisher, probes and drain."""

    def __init__(self, settings: IngestSettings, publisher: Publisher | None = None) -> None:
        self.settings = settings
        self.codec = codec_by_id(settings.ingest_codec)
        self.publisher: Publisher = publisher or KafkaPublisher(
            settings.kafka_client_options(),
            settings.kafka_media_topic,
            max_inflight_bytes=settings.ingest_max_inflight_bytes,
            produce_timeout_s=settings.ingest_produce_timeout_s,
        )
        self._tokens = [t.get_secret_value().encode() for t in settings.ingest_tokens]
        self._server: Server | None = None
        self._connections: set[_Connection] = set()
        self._streams_per_call: dict[str, dict[str, str]] = {}
        """call_id -> {connection_id: stream_type} of the streams open on this pod."""
        self._handlers: set[asyncio.Task[None]] = set()
        self._kafka_ok = False
        self._publisher_started = False
        self.draining = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._kafka_ok and self._publisher_started and not self.draining

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen at once (probes answer); connect to Kafka in the background."""
        if not self._tokens:
            log.warning("CALLREC_INGEST_TOKENS is empty: streams are accepted without a token")
        self._server = await serve(
            self._handle,
            self.settings.ingest_host,
            self.settings.ingest_port,
            process_request=self._route,
            max_size=self.settings.ingest_max_message_bytes,
            # A few frames per connection, then TCP flow control: with 16 frames of
            # Wavix media per socket we would hold ~24 KiB per stream for nothing.
            max_queue=(4, 1),
            compression=None,
            # No keepalive pings: while Kafka is slow we stop reading sockets on purpose,
            # so pongs would go unread and live streams would be closed with 1011. Dead
            # peers are closed by the idle sweep, which knows when we are the ones waiting.
            ping_interval=None,
            server_header=None,
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch_kafka()), loop.create_task(self._sweep_idle())]
        log.info(
            "ingest listening on %s:%d%s, publishing to %s",
            self.settings.ingest_host, self.port, STREAM_PATH, self.settings.kafka_media_topic,
        )

    async def drain(self, grace_s: float | None = None) -> None:
        """Stop taking streams, let live ones finish within the grace period, then close."""
        grace = self.settings.ingest_drain_grace_s if grace_s is None else grace_s
        self.draining = True  # /readyz and new stream upgrades now answer 503
        metrics.READY.set(0)
        assert self._server is not None
        log.info("draining: %d live streams, grace %.0fs", len(self._connections), grace)
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=grace)
        remaining = list(self._connections)
        for conn in remaining:
            conn.failure = ServerShutdown("drain grace period over")
        await asyncio.gather(
            *(c.ws.close(CloseCode.GOING_AWAY, "server shutting down") for c in remaining)
        )
        # Handlers still write their close records; wait for them before the producer stops.
        if self._handlers:
            await asyncio.wait(set(self._handlers))
        await self.close()

    async def close(self) -> None:
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
            idle = [c for c in self._connections if c.last_seen < cutoff and not c.publishing]
            for conn in idle:
                conn.failure = IdleTimeout(f"no message for {timeout:.0f}s")
                conn.last_seen = float("inf")
                asyncio.get_running_loop().create_task(
                    conn.ws.close(CloseCode.POLICY_VIOLATION, "idle timeout")
                )

    # -- HTTP, before the upgrade ------------------------------------------------------

    def _route(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path.rstrip("/")
        if path == "/healthz":
            return _text(http.HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            if self.ready:
                return _text(http.HTTPStatus.OK, "ready\n")
            why = "draining" if self.draining else "kafka unavailable"
            return _text(http.HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {why}\n")
        if path == "/metrics":
            body = prometheus_client.generate_latest()
            return Response(
                200, "OK",
                Headers([("Content-Type", prometheus_client.CONTENT_TYPE_LATEST),
                         ("Content-Length", str(len(body)))]),
                body,
            )
        if path == STREAM_PATH or path.startswith(STREAM_PATH + "/"):
            token = path[len(STREAM_PATH) + 1:] or _first(parse_qs(url.query).get("token"))
            if not self._authorized(token):
                metrics.CONNECTIONS.labels("unauthorized").inc()
                return _text(http.HTTPStatus.UNAUTHORIZED, "missing or invalid token\n")
            if not self.ready:
                metrics.CONNECTIONS.labels("not_ready").inc()
                return _text(http.HTTPStatus.SERVICE_UNAVAILABLE, "not ready, try another pod\n")
            return None
        return _text(http.HTTPStatus.NOT_FOUND, "not found\n")

    def _authorized(self, token: str | None) -> bool:
        if not self._tokens:
            return True
        if not token:
            return False
        given = token.encode()
        # Compare with every token so the time taken says nothing about which matched.
        matched = False
        for expected in self._tokens:
            matched |= hmac.compare_digest(given, expected)
        return matched

    # -- one stream ----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._stream(ws)
        finally:
            self._handlers.discard(task)

    async def _stream(self, ws: ServerConnection) -> None:
        metrics.CONNECTIONS.labels("accepted").inc()
        metrics.CONNECTIONS_OPEN.inc()
        session = StreamSession(self.codec, self.settings.ingest_pod_name, uuid.uuid4().hex)
        conn = _Connection(ws, session)
        self._connections.add(conn)
        reason: envelope.CloseReason = "disconnect"
        detail = "socket closed without stop"
        try:
            await self._receive(conn)
            if session.stopped:
                reason, detail = "stop", "stop received"
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                metrics.INVALID_MESSAGES.labels("too_big").inc()
                metrics.CLOSE_CODES.labels("1009").inc()
                reason, detail = "error", "message over CALLREC_INGEST_MAX_MESSAGE_BYTES (1009)"
            elif session.stopped:
                reason, detail = "stop", "stop received"
        except StreamRefused as exc:
            conn.failure = exc
        except Exception:
            log.exception("stream %s/%s failed", session.call_id, session.stream_id)
            conn.failure = StreamRefused("internal error")
        finally:
            self._connections.discard(conn)
            metrics.CONNECTIONS_OPEN.dec()
        if conn.failure is not None:
            reason = "disconnect" if isinstance(conn.failure, ServerShutdown) else "error"
            detail = f"{conn.failure.reason}: {conn.failure}"
            code = conn.failure.close_code
            if ws.close_code is None:
                metrics.CLOSE_CODES.labels(str(int(code))).inc()
                await ws.close(code, conn.failure.reason)
            elif not isinstance(conn.failure, KafkaUnavailable):
                metrics.CLOSE_CODES.labels(str(int(code))).inc()
        await self._finish(conn, reason, detail)

    async def _receive(self, conn: _Connection) -> None:
        ws, session = conn.ws, conn.session
        max_invalid = self.settings.ingest_max_invalid_messages
        key = b""
        partition = 0
        async for data in ws:
            conn.last_seen = time.monotonic()
            if conn.failure is not None:
                raise conn.failure
            metrics.RECEIVED_BYTES.inc(len(data))
            try:
                record = session.receive(data)
            except (ProtocolError, SkippedMessage) as exc:
                session.invalid += 1
                metrics.INVALID_MESSAGES.labels(exc.reason).inc()
                if session.invalid > max_invalid:
                    raise TooManyInvalid(f"{session.invalid} invalid messages") from None
                continue
            if record is None:
                metrics.MESSAGES_BY_EVENT[session.last_event].inc()
                continue
            if isinstance(record, envelope.MediaChunk):
                metrics.MEDIA_MESSAGES.inc()
                metrics.AUDIO_BYTES.inc(len(record.payload))
            else:
                metrics.MESSAGES_BY_EVENT[_EVENT_OF[type(record)]].inc()
                if isinstance(record, envelope.StreamStarted):
                    try:
                        self._admit(record)
                    except StreamLimitExceeded:
                        session.refuse_start()
                        metrics.INVALID_MESSAGES.labels("stream_limit").inc()
                        raise
                    key = record.call_id.encode()
                    partition = self.publisher.partition_for(key)
            # Backpressure (Kafka slow or away) may hold us here up to the produce timeout;
            # the sender is not idle meanwhile, it is waiting for us.
            conn.publishing = True
            try:
                done = await self.publisher.publish(partition, key, envelope.encode(record))
            finally:
                conn.publishing = False
                conn.last_seen = time.monotonic()
            self._track(conn, done)
        if conn.failure is not None:
            raise conn.failure

    def _admit(self, start: envelope.StreamStarted) -> None:
        """Refuse a stream past the per-call limits (5 oneway + 1 twoway) on this pod.

        Connections are counted, not stream ids: a sender reusing a stream id on
        several sockets at once must not get around the limit.
        """
        streams = self._streams_per_call.setdefault(start.call_id, {})
        limit = (self.settings.ingest_max_oneway_streams_per_call
                 if start.stream_type == "oneway"
                 else self.settings.ingest_max_twoway_streams_per_call)
        same_type = sum(1 for t in streams.values() if t == start.stream_type)
        if same_type >= limit:
            raise StreamLimitExceeded(
                f"call_id={start.call_id} already has {same_type} {start.stream_type} "
                "streams on this pod"
            )
        streams[start.connection_id] = start.stream_type

    def _track(self, conn: _Connection, done: asyncio.Future[None]) -> None:
        unacked = conn.unacked
        if unacked and unacked[-1] is done:
            return
        unacked.append(done)
        done.add_done_callback(functools.partial(self._on_ack, conn))
        while unacked and unacked[0].done():
            unacked.popleft()

    def _on_ack(self, conn: _Connection, fut: asyncio.Future[None]) -> None:
        exc = fut.exception()
        if exc is not None and conn.failure is None:
            assert isinstance(exc, IngestError)
            conn.failure = exc if isinstance(exc, StreamRefused) else KafkaUnavailable(str(exc))
            metrics.CLOSE_CODES.labels(str(int(CloseCode.TRY_AGAIN_LATER))).inc()
            asyncio.get_running_loop().create_task(
                conn.ws.close(CloseCode.TRY_AGAIN_LATER, "kafka unavailable")
            )

    async def _finish(self, conn: _Connection, reason: envelope.CloseReason, detail: str) -> None:
        """Wait for the stream's chunks to be acknowledged, then write its close record."""
        session = conn.session
        if session.start is None:
            return
        await asyncio.gather(*conn.unacked, return_exceptions=True)
        metrics.STREAMS_CLOSED.labels(reason).inc()
        key = session.start.call_id.encode()
        record = session.close_record(reason, detail)
        try:
            done = await self.publisher.publish(self.publisher.partition_for(key), key,
                                                envelope.encode(record))
            await done
        except IngestError as exc:
            log.error("call_id=%s stream %s: close record lost: %s",
                      session.call_id, session.stream_id, exc)
        streams = self._streams_per_call.get(session.start.call_id)
        if streams is not None:
            streams.pop(session.connection_id, None)
            if not streams:
                del self._streams_per_call[session.start.call_id]
        log.info("call_id=%s stream %s closed: %s (%s), %d chunks, %d invalid",
                 session.call_id, session.stream_id, reason, detail, session.chunks,
                 session.invalid)


_EVENT_OF: dict[type, str] = {
    envelope.StreamStarted: "start",
    envelope.MarkReceived: "mark",
}


def _text(status: http.HTTPStatus, body: str) -> Response:
    data = body.encode()
    headers = Headers([("Content-Type", "text/plain; charset=utf-8"),
                       ("Content-Length", str(len(data)))])
    return Response(status.value, status.phrase, headers, data)


def _first(values: Iterable[str] | None) -> str | None:
    return next(iter(values), None) if values else None
