"""Wavix call events (webhooks), sans I/O: bytes in, one typed :class:`CallEvent` out.

Wavix posts a JSON object per call event to the URL subscribed for it (docs/control.md,
"Wavix facts"). What arrives varies between Wavix's API reference, its SDK and its own
demo server, so the parser is lenient on purpose:

- the call id is ``id`` (newer), ``uuid`` (older), ``call_id`` or ``call.id``;
- every field may be a string or a number (numbers become strings: ``from``/``to`` are
  phone numbers, never arithmetic);
- unknown fields are ignored; an unknown ``event_type`` is *not* an error: the event is
  returned with ``known=False`` so the webhook can answer 200 and count it;
- a ``post-call`` summary has no ``event_type`` but a ``disposition``: it becomes
  ``post_call``; Wavix's demo calls a new call ``incoming_call``.

Raises only :class:`~schemas.errors.CallEventError` subclasses.
"""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.errors import InvalidCallEventError, MalformedCallEventError

EVENT_TYPES: frozenset[str] = frozenset(
    {
        "call_setup",
        "incoming_call",
        "ringing",
        "early_media",
        "answered",
        "completed",
        "busy",
        "cancelled",
        "rejected",
        "on_call_event",
        "post_call",
    }
)
"""Every ``event_type`` the control plane knows (Wavix's ``on-call`` types, the demo
server's ``incoming_call`` and ``post_call`` for a ``post-call`` summary)."""

FINAL_TYPES: frozenset[str] = frozenset({"completed", "busy", "cancelled", "rejected", "post_call"})
"""Events after which the call is over."""

MAX_ID = 128
MAX_TEXT = 256


class CallEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One Wavix call event, normalized. Every field but ``call_id``/``event_type`` optional."""

    call_id: str
    """Wavix call id (``id``/``uuid``/``call_id``/``call.id``): the key of everything."""
    event_type: str
    """One of :data:`EVENT_TYPES`, or the sender's unknown type verbatim (``known`` False)."""
    known: bool = True
    event_time: str | None = None
    """When Wavix sent the event (ISO-8601, verbatim)."""
    from_number: str | None = None
    """``from``: the caller, E.164 as Wavix sends it."""
    to_number: str | None = None
    """``to``: the called number."""
    direction: str | None = None
    """``inbound`` or ``outbound`` (lower-cased), else verbatim."""
    tag: str | None = None
    """The user's tag on the call (outbound calls)."""
    call_started: str | None = None
    call_answered: str | None = None
    call_completed: str | None = None
    disposition: str | None = None
    """``post-call`` summary: ``answered``, ``noanswer``, ``busy``, ``failed``."""
    duration_s: int | None = None
    """``post-call`` summary: call length in seconds."""

    @property
    def final(self) -> bool:
        return self.event_type in FINAL_TYPES


_json = msgspec.json.Decoder()


def parse(body: bytes | bytearray | memoryview | str) -> CallEvent:
    """Decode one webhook body; raise ``MalformedCallEventError`` (not a JSON object)
    or ``InvalidCallEventError`` (no usable call id or event type)."""
    try:
        data = _json.decode(body)
    except (msgspec.DecodeError, UnicodeError, RecursionError, ValueError) as exc:
        raise MalformedCallEventError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedCallEventError("not a JSON object")
    call_id = _text(data.get("id")) or _text(data.get("uuid")) or _text(data.get("call_id"))
    call = data.get("call")
    if call_id is None and isinstance(call, dict):
        call_id = _text(call.get("id")) or _text(call.get("uuid"))
    if call_id is None:
        raise InvalidCallEventError("no call id (id, uuid, call_id or call.id)")
    if len(call_id) > MAX_ID:
        raise InvalidCallEventError(f"call id longer than {MAX_ID} characters")
    event_type = _text(data.get("event_type")) or _text(data.get("event"))
    disposition = _text(data.get("disposition"))
    if event_type is None:
        if disposition is None:
            raise InvalidCallEventError("no event_type")
        event_type = "post_call"
    event_type = event_type.lower().replace("-", "_")
    direction = _text(data.get("direction"))
    return CallEvent(
        call_id=call_id,
        event_type=event_type[:64],
        known=event_type in EVENT_TYPES,
        event_time=_text(data.get("event_time")) or _text(data.get("date")),
        from_number=_text(data.get("from")),
        to_number=_text(data.get("to")) or _text(data.get("destination")),
        direction=direction.lower() if direction else None,
        tag=_text(data.get("tag")),
        call_started=_text(data.get("call_started")),
        call_answered=_text(data.get("call_answered")),
        call_completed=_text(data.get("call_completed")),
        disposition=disposition.lower() if disposition else None,
        duration_s=_int(data.get("duration")),
    )


def _text(value: Any) -> str | None:
    """A string or number as bounded text; anything else (null, object, bool) as None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:MAX_TEXT] or None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(float(str(value)))
    except (TypeError, ValueError, OverflowError):
        return None


def encode(event: CallEvent) -> bytes:
    """The event as Wavix-style JSON (``id``, ``from``, ``to``...): what the emulator posts."""
    out: dict[str, Any] = {"id": event.call_id, "event_type": event.event_type}
    for name, wire in (
        ("event_time", "event_time"),
        ("from_number", "from"),
        ("to_number", "to"),
        ("direction", "direction"),
        ("tag", "tag"),
        ("call_started", "call_started"),
        ("call_answered", "call_answered"),
        ("call_completed", "call_completed"),
        ("disposition", "disposition"),
        ("duration_s", "duration"),
    ):
        value = getattr(event, name)
        if value is not None:
            out[wire] = value
    return msgspec.json.encode(out)
