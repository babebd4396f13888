"""Errors of the ingest service and the WebSocket close code each one maps to.

::

    IngestError
    ├── AnonymousAccessRefused   at start-up: no stream token configured, anonymous
    │                            access not asked for, and not bound to loopback
    ├── SkippedMessage           one message is counted and skipped; the stream goes on
    └── StreamRefused            the connection is closed with ``close_code``
        ├── TooManyInvalid       1008: more invalid messages than allowed
        ├── StreamLimitExceeded  1008: a call already has its maximum of streams here
        ├── IdleTimeout          1008: no message for ``ingest_idle_timeout_s``
        ├── KafkaUnavailable     1013: Kafka did not take a chunk within the produce
        │                              timeout (retriable: the sender may try later)
        └── ServerShutdown       1001: drain grace period over

Protocol errors from ``schemas`` (``ProtocolError``) are skipped like
``SkippedMessage``. WebSocket framing (ingest/stream.py, picows): a message over
``CALLREC_INGEST_MAX_MESSAGE_BYTES`` (one frame or fragments) is closed with 1009,
a broken fragment sequence or a malformed frame with 1002.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """The WebSocket close codes ingest sends (RFC 6455 §7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


class IngestError(Exception):
    """Root of the ingest errors."""

    reason = "ingest_error"
    retriable = False


class AnonymousAccessRefused(IngestError):
    """Ingest would accept streams from anyone: refused at start-up (docs/operations.md)."""

    reason = "anonymous_access_refused"


class SkippedMessage(IngestError):
    """A well-formed message that is not acceptable where it came: count and skip it."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


class StreamRefused(IngestError):
    """The connection must end; ``close_code`` tells the sender why."""

    close_code = CloseCode.INTERNAL_ERROR


class TooManyInvalid(StreamRefused):
    reason = "too_many_invalid"
    close_code = CloseCode.POLICY_VIOLATION


class StreamLimitExceeded(StreamRefused):
    reason = "stream_limit"
    close_code = CloseCode.POLICY_VIOLATION


class CallTokenMismatch(StreamRefused):
    """The per-call stream token was minted for another call id than the ``start``'s."""

    reason = "call_token_mismatch"
    close_code = CloseCode.POLICY_VIOLATION


class IdleTimeout(StreamRefused):
    reason = "idle_timeout"
    close_code = CloseCode.POLICY_VIOLATION


class KafkaUnavailable(StreamRefused):
    reason = "kafka_unavailable"
    close_code = CloseCode.TRY_AGAIN_LATER
    retriable = True


class ServerShutdown(StreamRefused):
    reason = "shutdown"
    close_code = CloseCode.GOING_AWAY
