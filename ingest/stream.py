"""One open WebSocket stream: the socket that parses as it reads, and its flow control.

:class:`IngestSocket` is the picows listener of one stream connection: picows (Cython)
parses each frame inside ``data_received`` and hands it over, no per-message task or
queue. :class:`OpenStream` parses the message once (``StreamSession``), offers its
record to the publisher, pauses the socket while the publisher has no room
(backpressure), gathers media frames into coalesced records (``CALLREC_INGEST_COALESCE_MS``),
and fails the stream with its close code. :class:`~ingest.server.IngestServer` owns the
streams, the coalescing timer and the shutdown.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from typing import TYPE_CHECKING

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from infra.logsafe import safe
from ingest import metrics
from ingest.errors import (
    CallTokenMismatch,
    CloseCode,
    KafkaUnavailable,
    SkippedMessage,
    StreamLimitExceeded,
    StreamRefused,
    TooManyInvalid,
)
from ingest.session import StreamSession
from schemas import envelope
from schemas.errors import ProtocolError

if TYPE_CHECKING:
    from ingest.server import IngestServer

log = logging.getLogger(__name__)

COALESCE_MAX_BYTES = 64 * 1024
"""Audio in one coalesced record at most: far below a Kafka batch (the publisher's 256 KiB)."""

FRAME_HARD_LIMIT = 16
"""picows' own frame size limit, in multiples of the message limit (memory, not policy)."""

CLOSE_TIMEOUT_S = 10.0
"""How long a closing handshake we started waits for the peer's close frame (as websockets)."""

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


class IngestSocket(WSListener):
    """One stream connection, as picows hands it over: frames in, close handshake out.

    Data messages go to the stream's ``feed`` as they are parsed (a fragmented
    message once whole); one over ``CALLREC_INGEST_MAX_MESSAGE_BYTES`` is closed
    with 1009 here. picows itself refuses a frame over :data:`FRAME_HARD_LIMIT`
    times that (before reading it into memory), but it reads one frame ahead: a
    frame just before such a one is not recorded either. picows answers pings; the
    closing handshake is ours: a close frame from the peer is answered with its code
    and the socket closed; one we send waits up to :data:`CLOSE_TIMEOUT_S` for the answer.
    """

    def __init__(self, server: IngestServer, call_token: str | None) -> None:
        super().__init__()
        self.server = server
        self.call_token = call_token
        """The per-call token this connection was opened with; its ``start`` must match."""
        self.transport: WSTransport | None = None
        self.stream: OpenStream | None = None
        self.feed = _unread
        """Where data messages go: the stream's ``feed`` while open, nowhere once closing."""
        self.disconnected = asyncio.get_running_loop().create_future()
        self.max_bytes = server.settings.ingest_max_message_bytes
        self._fragments: list[bytes] | None = None
        self._fragment_bytes = 0
        self._close_timer: asyncio.TimerHandle | None = None

    # -- picows callbacks ------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        rcvbuf = self.server.settings.ingest_socket_receive_bytes
        if rcvbuf:
            # picows' read buffer doubles whenever a read fills it and never shrinks: the
            # kernel's buffer (autotuned up to MBs) would otherwise set its size after a
            # pause for backpressure, per stream, for the rest of the call.
            sock = transport.underlying_transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.stream = self.server.open_stream(self)
        self.feed = self.stream.feed

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type in _DATA:
            if (frame.fin and self._fragments is None and frame.payload_size <= self.max_bytes
                    and not transport.is_close_frame_sent):
                self.feed(frame.get_payload_as_bytes())
                return
            self._fragment(frame, first=True)
        elif msg_type is WSMsgType.CONTINUATION:
            self._fragment(frame, first=False)
        elif msg_type is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                code = frame.get_close_code()
                transport.send_close(WSCloseCode.OK if code is WSCloseCode.NO_INFO else code)
            transport.disconnect()
        # PONG: we send no pings; PING is answered by picows.

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def pause_writing(self) -> None:
        """Only close frames are written: nothing to hold back."""

    def resume_writing(self) -> None:
        """Only close frames are written: nothing to hold back."""

    # -- what the stream asks of its socket -------------------------------------------

    def pause_reading(self) -> None:
        assert self.transport is not None
        self.transport.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        assert self.transport is not None
        underlying = self.transport.underlying_transport
        if not underlying.is_closing():
            underlying.resume_reading()

    @property
    def close_sent(self) -> int | None:
        """The close code we sent, if we sent one."""
        handshake = self.transport.close_handshake if self.transport is not None else None
        if handshake is None or handshake.sent is None:
            return None
        return int(handshake.sent.code.value)

    def disconnect(self) -> None:
        """Drop the socket now (after what was written, a close frame included)."""
        if self.transport is not None:
            self.transport.disconnect()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the socket is closed when the peer answers (or not)."""
        transport = self.transport
        if transport is None or transport.is_close_frame_sent or transport.is_disconnected:
            return
        self.feed = _unread  # what the peer sends after this is not recorded
        # A close frame's reason is at most 123 bytes of UTF-8: cut on a character.
        transport.send_close(WSCloseCode(code),
                             reason.encode()[:123].decode(errors="ignore").encode())
        self.resume_reading()  # the answer must be read, even from a socket held for room
        self._close_timer = asyncio.get_running_loop().call_later(
            CLOSE_TIMEOUT_S, transport.disconnect)

    # -- fragmented messages ------------------------------------------------------------

    def _fragment(self, frame: WSFrame, first: bool) -> None:
        if self.transport is None or self.transport.is_close_frame_sent:
            return  # closing (picows closes a frame over the size limit itself): not read
        if first != (self._fragments is None):  # RFC 6455 5.4: a sequence, never nested
            self._protocol_error("unexpected continuation frame" if not first
                                 else "new message inside a fragmented one")
            return
        if first:
            self._fragments, self._fragment_bytes = [], 0
        assert self._fragments is not None
        self._fragment_bytes += frame.payload_size
        if self._fragment_bytes > self.max_bytes:
            self._fragments = None
            self.close(CloseCode.MESSAGE_TOO_BIG, "message too big")  # counted at the end
            return
        self._fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            data, self._fragments = b"".join(self._fragments), None
            self.feed(data)

    def _protocol_error(self, why: str) -> None:
        log.info("stream %s: protocol error: %s (1002)",
                 safe(self.stream.session.connection_id) if self.stream else "?", why)
        self._fragments = None
        self.close(CloseCode.PROTOCOL_ERROR, why)


def _unread(data: bytes) -> None:
    """A data message read while the stream is not open to it (closing): not recorded."""


class OpenStream:
    """One open stream: its protocol session, flow control and book-keeping.

    Frames arrive through :meth:`feed`, from ``data_received``. While the
    publisher has no room (Kafka slow or away) the socket is paused and the
    frames already read wait in ``pending``; the publisher calls :meth:`resume`
    when it has room again. Nothing read is dropped, unless the stream failed.
    """

    __slots__ = ("call_token", "failure", "failures_seen", "frame_bytes", "frames",
                 "held_since", "key", "last_seen", "partition", "pending", "server", "session",
                 "settled", "unacked", "ws")

    def __init__(self, server: IngestServer, ws: IngestSocket,
                 session: StreamSession) -> None:
        self.server = server
        self.ws = ws
        self.session = session
        self.last_seen = time.monotonic()
        self.held_since: float | None = None
        """When the socket was paused for want of room: not reading is our doing, not idleness."""
        self.pending: collections.deque[bytes] = collections.deque()
        self.settled = asyncio.Event()
        """Set while no frame waits for room."""
        self.settled.set()
        self.unacked: collections.deque[asyncio.Future[None]] = collections.deque()
        self.failure: StreamRefused | None = None
        self.failures_seen = server.publisher.failures
        self.key = b""
        self.partition = 0
        self.call_token: str | None = None
        """The per-call token this connection was opened with; its ``start`` must match."""
        self.frames: list[envelope.MediaFrame] = []
        """Frames read in the current coalescing window, not yet offered."""
        self.frame_bytes = 0

    def feed(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        if self.failure is not None:
            return  # being closed: the rest of what the sender wrote is not read
        if self.pending or not self.server.publisher.has_room():
            self.pending.append(data)
            if self.held_since is None:
                self._hold()
            return
        self._take(data)

    def _hold(self) -> None:
        self.flush()  # no more frames come in while paused: waiting would only add latency
        if self.failure is not None:
            return  # the flush found the stream failed (its Kafka batch given up): closing
        self.held_since = time.perf_counter()
        self.settled.clear()
        self.ws.pause_reading()
        self.server.publisher.when_room(self.resume)

    def resume(self) -> None:
        """Room was made: publish what waited, then read the socket again."""
        if self.held_since is None:
            return  # the stream failed while it waited
        self.collect_acks()
        publisher = self.server.publisher
        pending = self.pending
        while pending and self.failure is None and publisher.has_room(waiting=True):
            self._take(pending.popleft())
        if pending and self.failure is None:
            self.flush()
            publisher.when_room(self.resume)
            return
        self._settle()
        self.ws.resume_reading()

    def _settle(self) -> None:
        self.pending.clear()
        if self.held_since is not None:
            metrics.BACKPRESSURE.inc(time.perf_counter() - self.held_since)
            self.held_since = None
        self.last_seen = time.monotonic()
        self.settled.set()

    def _take(self, data: bytes) -> None:
        """Parse one message and offer its record to the publisher."""
        session, server = self.session, self.server
        hot = metrics.HOT
        hot.received_bytes += len(data)
        try:
            record = session.receive(data)
        except (ProtocolError, SkippedMessage) as exc:
            session.invalid += 1
            metrics.INVALID_MESSAGES.labels(exc.reason).inc()
            if session.invalid > server.settings.ingest_max_invalid_messages:
                self.fail(TooManyInvalid(f"{session.invalid} invalid messages"))
            return
        except Exception:
            log.exception("call_id=%s stream %s failed", safe(session.call_id),
                          safe(session.stream_id))
            self.fail(StreamRefused("internal error"))
            return
        if record is None:
            hot.messages[session.last_event] += 1
            if session.stopped:
                self.flush()
            return
        if isinstance(record, envelope.MediaFrame):
            hot.messages["media"] += 1
            hot.audio_bytes += len(record.payload)
            if server.coalesce_s:
                self._coalesce(record)
                return
            hot.published_frames += 1
            record = session.chunk_record(record)
        else:
            self.flush()  # a mark follows the frames read before it
            hot.messages[_EVENT_OF[type(record)]] += 1
            if isinstance(record, envelope.StreamStarted):
                if self.call_token is not None and not server.token_fits(
                        self.call_token, record.call_id):
                    session.refuse_start()
                    metrics.CALL_TOKEN_MISMATCH.inc()
                    log.warning("call_id=%r: per-call stream token is another call's: "
                                "refused (1008)", record.call_id)
                    self.fail(CallTokenMismatch("stream token is for another call"))
                    return
                try:
                    server.admit(record)
                except StreamLimitExceeded as exc:
                    session.refuse_start()
                    metrics.INVALID_MESSAGES.labels("stream_limit").inc()
                    self.fail(exc)
                    return
                self.key = record.call_id.encode()
                self.partition = server.publisher.partition_for(self.key)
        self._offer(envelope.encode(record))

    def _offer(self, value: bytes) -> None:
        publisher = self.server.publisher
        done = publisher.offer(self.partition, self.key, value)
        unacked = self.unacked
        if not unacked or unacked[-1] is not done:  # else: same batch as the previous record
            unacked.append(done)
        if unacked[0].done() or publisher.failures != self.failures_seen:
            self.collect_acks()

    def _coalesce(self, frame: envelope.MediaFrame) -> None:
        """Add a frame to the stream's window; write the batch at once when it is full."""
        frames = self.frames
        frames.append(frame)
        self.frame_bytes += len(frame.payload)
        if len(frames) == 1:
            self.server.window_opened(self)
        if (len(frames) >= self.server.coalesce_max_frames
                or self.frame_bytes >= COALESCE_MAX_BYTES):
            self.flush()

    def flush(self) -> None:
        """Offer the frames of the current window as one ``MediaBatch`` (if any)."""
        self.server.window_closed(self)
        frames = self.frames
        if not frames:
            return
        self.frames = []
        self.frame_bytes = 0
        start = self.session.start
        assert start is not None  # frames only follow an accepted start
        metrics.HOT.published_frames += len(frames)
        self._offer(envelope.encode(envelope.MediaBatch(
            call_id=start.call_id, stream_id=start.stream_id, codec=self.session.codec.id,
            frames=frames,
        )))

    def collect_acks(self) -> None:
        """Forget acknowledged batches; one the publisher gave up on fails the stream (1013).

        Checked as frames come, on resume and at the end, instead of with a callback
        per batch and stream. Batches are acknowledged in order, except that one
        retried inside aiokafka (which never gives up on an idempotent batch) can
        hold up those behind it while they fail: the publisher's ``failures`` count
        says when to look at all of them.
        """
        unacked = self.unacked
        while unacked and unacked[0].done():
            self._check(unacked.popleft())
        failures = self.server.publisher.failures
        if failures != self.failures_seen:
            self.failures_seen = failures
            for fut in unacked:
                if fut.done():
                    self._check(fut)

    def _check(self, fut: asyncio.Future[None]) -> None:
        exc = fut.exception()
        if exc is not None:
            self.fail(exc if isinstance(exc, StreamRefused) else KafkaUnavailable(str(exc)))

    def fail(self, failure: StreamRefused) -> None:
        """End the stream: close the socket with the failure's code (once)."""
        if self.failure is not None:
            return
        self.failure = failure
        self.flush()  # what was read and taken is published, as without coalescing
        self._settle()  # frames still waiting for room are not published
        if self.ws.close_sent is None:
            metrics.CLOSE_CODES.labels(str(int(failure.close_code))).inc()
        self.ws.close(failure.close_code, failure.reason)


_EVENT_OF: dict[type, str] = {
    envelope.StreamStarted: "start",
    envelope.MarkReceived: "mark",
}
