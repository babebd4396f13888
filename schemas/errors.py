"""Errors of the contract layer. Every parser in ``schemas`` raises only these.

::

    SchemaError
    ├── ProtocolError                a Wavix WebSocket message we cannot accept
    │   ├── MalformedJSONError       reason "malformed_json": not a JSON object
    │   ├── UnknownEventError        reason "unknown_event": ``event`` is not one we know
    │   ├── InvalidMessageError      reason "invalid_message": wrong types, missing fields
    │   └── InvalidPayloadError      reason "bad_base64" / "bad_payload": audio we cannot use
    ├── EnvelopeError                a Kafka record we cannot decode
    │   └── UnsupportedVersionError  written by a newer callrec than this one
    ├── CallEventError               a Wavix call event (webhook) we cannot accept
    │   ├── MalformedCallEventError  reason "malformed_json": not a JSON object
    │   └── InvalidCallEventError    reason "invalid_event": no call id or event type
    └── UnknownCodecError            a codec id we do not know

``reason`` is a short, stable label used as the value of the ``reason`` metric label and
in logs. No exception here is retriable: the same input always fails the same way.
"""

from __future__ import annotations


class SchemaError(Exception):
    """Root of every error raised by ``schemas``."""

    reason = "invalid"
    retriable = False


class ProtocolError(SchemaError):
    """A WebSocket message from the sender that does not follow the Wavix protocol."""


class MalformedJSONError(ProtocolError):
    reason = "malformed_json"


class UnknownEventError(ProtocolError):
    reason = "unknown_event"


class InvalidMessageError(ProtocolError):
    reason = "invalid_message"


class InvalidPayloadError(ProtocolError):
    reason = "bad_payload"


class InvalidBase64Error(InvalidPayloadError):
    reason = "bad_base64"


class EnvelopeError(SchemaError):
    """A Kafka record value that is not a callrec envelope we can read."""

    reason = "bad_envelope"


class UnsupportedVersionError(EnvelopeError):
    reason = "unsupported_version"


class UnknownCodecError(SchemaError):
    reason = "unknown_codec"


class CallEventError(SchemaError):
    """A Wavix call event (webhook body) that cannot be used."""

    reason = "invalid_event"


class MalformedCallEventError(CallEventError):
    reason = "malformed_json"


class InvalidCallEventError(CallEventError):
    reason = "invalid_event"
