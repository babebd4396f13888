"""One open WebSocket stream: the connection that parses as it reads, and its flow control.

:class:`IngestConnection` hands each message to its stream where websockets parses
it (no per-message task). :class:`OpenStream` parses the message once
(``StreamSession``), offers its record to the publisher, pauses the socket while
the publisher has no room (backpressure), gathers media frames into coalesced
records (``CALLREC_INGEST_COALESCE_MS``), and fails the stream with its close
code. :class:`~ingest.server.IngestServer` owns the streams, the coalescing timer
and the shutdown.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event
from websockets.typing import BytesLike

from infra.logsafe import safe
from ingest import metrics
from ingest.errors import (
    CallTokenMismatch,
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


class IngestConnection(ServerConnection):
    """websockets' server connection, handing each data message to a sink as it is parsed.

    websockets' handler API queues every message and wakes the handler task for
    each one (an assembler, futures, two task switches per message). Here a
    message is handled inside ``data_received``, where websockets parsed it, and
    flow control pauses the transport directly; ``process_event`` is websockets'
    hook for this (``serve(create_connection=...)``). The opening handshake,
    control frames and the closing handshake stay websockets' own.
    """

    EARLY_FRAMES = 16
    """Messages held for a handler that has not attached yet; more pause the socket."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink: Callable[[BytesLike], None] | None = None
        self._early: list[BytesLike] = []
        self._early_paused = False
        self._fragments: list[BytesLike] | None = None

    def attach(self, sink: Callable[[BytesLike], None]) -> None:
        """From now on every data message goes to ``sink``, those already read first."""
        self._sink = sink
        early, self._early = self._early, []
        if self._early_paused:
            self._early_paused = False
            self.transport.resume_reading()
        for data in early:
            sink(data)

    def process_event(self, event: Event) -> None:
        if self.request is None or not isinstance(event, Frame):
            super().process_event(event)  # the opening handshake
            return
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not event.fin:
                self._fragments = [event.data]
                return
            data = event.data
        elif opcode is Opcode.CONT:
            # websockets checked the sequence and the size limit of the whole message.
            assert self._fragments is not None
            self._fragments.append(event.data)
            if not event.fin:
                return
            data, self._fragments = b"".join(self._fragments), None
        else:
            super().process_event(event)  # ping, pong, close
            return
        if self._sink is not None:
            self._sink(data)
            return
        self._early.append(data)
        if len(self._early) >= self.EARLY_FRAMES and not self._early_paused:
            self._early_paused = True
            self.transport.pause_reading()


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

    def __init__(self, server: IngestServer, ws: IngestConnection,
                 session: StreamSession) -> None:
        self.server = server
        self.ws = ws
        self.session = session
        self.last_seen = time.monotonic()
        self.held_since: float | None = None
        """When the socket was paused for want of room: not reading is our doing, not idleness."""
        self.pending: collections.deque[BytesLike] = collections.deque()
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

    def feed(self, data: BytesLike) -> None:
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
        self.ws.transport.pause_reading()
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
        if not self.ws.transport.is_closing():
            self.ws.transport.resume_reading()

    def _settle(self) -> None:
        self.pending.clear()
        if self.held_since is not None:
            metrics.BACKPRESSURE.inc(time.perf_counter() - self.held_since)
            self.held_since = None
        self.last_seen = time.monotonic()
        self.settled.set()

    def _take(self, data: BytesLike) -> None:
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
        if self.ws.protocol.close_sent is None:
            metrics.CLOSE_CODES.labels(str(int(failure.close_code))).inc()
        # The loop keeps only a weak reference to a task: hold it until it is done.
        closing = asyncio.get_running_loop().create_task(
            self.ws.close(failure.close_code, failure.reason)
        )
        self.server.closing.add(closing)
        closing.add_done_callback(self.server.closing.discard)


_EVENT_OF: dict[type, str] = {
    envelope.StreamStarted: "start",
    envelope.MarkReceived: "mark",
}
