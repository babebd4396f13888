"""What one Wavix connection has said so far, and what it may say next (no I/O).

A connection goes ``connected`` → ``start`` → ``media``* → ``stop``. The session
turns each message into at most one Kafka record (or media frame) and enforces the rules below;
a rule broken by one message skips that message (``SkippedMessage`` or a
``ProtocolError`` from ``schemas``), never the stream:

=====================  ============================================================
reason                 when
=====================  ============================================================
media_before_start     ``media``/``mark``/``stop`` before ``start``
unknown_stream         ``call_id``/``stream_id`` differ from this stream's ``start``
duplicate_start        a second ``start`` on the connection
track_mismatch         an ``outbound`` chunk on an ``inbound`` stream (or the reverse);
                       anything but ``inbound`` on a twoway stream
missing_track          a chunk without ``track`` on a ``both`` stream
bad_payload            a payload that is empty or not whole samples of the codec
after_stop             any message after ``stop``
=====================  ============================================================
"""

from __future__ import annotations

import time
from typing import assert_never

from ingest.errors import SkippedMessage
from schemas import envelope, wavix
from schemas.codecs import Codec
from schemas.wavix import Track


class StreamSession:
    """Protocol state of one WebSocket connection."""

    def __init__(self, codec: Codec, pod: str, connection_id: str) -> None:
        self.codec = codec
        self.pod = pod
        self.connection_id = connection_id
        self.start: wavix.Start | None = None
        self.stopped = False
        self.chunks = 0
        """Media records produced so far."""
        self.invalid = 0
        """Messages skipped so far."""
        self.last_event = "connected"
        """Name of the last event that produced no record (for the per-event counter)."""

    @property
    def call_id(self) -> str | None:
        return self.start.call_id if self.start else None

    @property
    def stream_id(self) -> str | None:
        return self.start.stream_id if self.start else None

    def receive(
        self, data: bytes | bytearray | memoryview | str
    ) -> envelope.Record | envelope.MediaFrame | None:
        """Take one message; return what to publish, if anything: a record, or for a
        ``media`` message its frame (``OpenStream`` batches or wraps it).

        Raises ``ProtocolError`` or ``SkippedMessage`` for a message to skip.
        """
        event = wavix.parse(data, self.codec)
        if self.stopped:
            raise SkippedMessage("after_stop", f"{type(event).__name__} after stop")
        match event:
            case wavix.Media():
                return self._media(event)
            case wavix.Start():
                return self._start(event)
            case wavix.Stop():
                self._check_stream(event.call_id, event.stream_id)
                self.stopped = True
                self.last_event = "stop"
                return None
            case wavix.Mark():
                self._check_stream(event.call_id, event.stream_id)
                return envelope.MarkReceived(
                    call_id=event.call_id,
                    stream_id=event.stream_id,
                    name=event.mark.name,
                    received_ns=time.time_ns(),
                    seq=event.sequence_number,
                    event_time=event.event_time,
                )
            case wavix.Connected():
                self.last_event = "connected"
                return None
            case _:
                assert_never(event)

    def refuse_start(self) -> None:
        """Forget an accepted ``start`` that the server then refused (stream limit)."""
        self.start = None

    def close_record(self, reason: envelope.CloseReason, detail: str) -> envelope.StreamClosed:
        """The record that ends this stream; only meaningful after ``start``."""
        assert self.start is not None
        return envelope.StreamClosed(
            call_id=self.start.call_id,
            stream_id=self.start.stream_id,
            reason=reason,
            detail=detail,
            ingest_pod=self.pod,
            connection_id=self.connection_id,
            received_ns=time.time_ns(),
            chunks=self.chunks,
            invalid=self.invalid,
        )

    def _start(self, event: wavix.Start) -> envelope.StreamStarted:
        if self.start is not None:
            raise SkippedMessage("duplicate_start", f"second start for {event.stream_id}")
        self.start = event
        return envelope.StreamStarted(
            call_id=event.call_id,
            stream_id=event.stream_id,
            stream_type=event.stream_type,
            channel=event.channel,
            codec=self.codec.id,
            ingest_pod=self.pod,
            connection_id=self.connection_id,
            received_ns=time.time_ns(),
            event_time=event.event_time,
            seq=event.sequence_number,
        )

    def _media(self, event: wavix.Media) -> envelope.MediaFrame:
        start = self._check_stream(event.call_id, event.stream_id)
        body = event.media
        track = self._track(start, body.track)
        self.chunks += 1
        # A frame, not a MediaChunk: the stream's coalescing window takes frames, and the
        # fields every chunk of the stream shares are added once (``chunk_record``).
        return envelope.MediaFrame(
            track=track,
            chunk=body.chunk,
            timestamp_ms=body.timestamp,
            payload=body.payload,
            received_ns=time.time_ns(),
            seq=event.sequence_number,
        )

    def chunk_record(self, frame: envelope.MediaFrame) -> envelope.MediaChunk:
        """``frame`` as a record of its own (coalescing off: one record per frame)."""
        assert self.start is not None  # frames only follow an accepted start
        return envelope.MediaChunk(
            call_id=self.start.call_id,
            stream_id=self.start.stream_id,
            track=frame.track,
            chunk=frame.chunk,
            timestamp_ms=frame.timestamp_ms,
            codec=self.codec.id,
            payload=frame.payload,
            received_ns=frame.received_ns,
            seq=frame.seq,
        )

    def _check_stream(self, call_id: str, stream_id: str) -> wavix.Start:
        start = self.start
        if start is None:
            raise SkippedMessage("media_before_start", "message before start")
        if call_id != start.call_id or stream_id != start.stream_id:
            raise SkippedMessage("unknown_stream", f"message for {call_id}/{stream_id}")
        return start

    @staticmethod
    def _track(start: wavix.Start, track: Track | None) -> Track:
        channel = start.channel
        if start.stream_type == "twoway":
            # A twoway stream carries only the inbound audio (Wavix docs).
            if track not in (None, "inbound"):
                raise SkippedMessage("track_mismatch", f"{track} chunk on a twoway stream")
            return "inbound"
        if channel == "both":
            if track is None:
                raise SkippedMessage("missing_track", "chunk without track on a both stream")
            return track
        if track is not None and track != channel:
            raise SkippedMessage("track_mismatch", f"{track} chunk on an {channel} stream")
        return channel
