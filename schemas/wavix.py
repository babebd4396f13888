"""The Wavix Call Media Streaming protocol, sans I/O.

Wavix opens a WebSocket to our ``stream_url`` and sends JSON text frames:
``connected``, then ``start``, then ``media``* and finally ``stop`` (``mark`` on
twoway streams). This module turns one frame's bytes into one typed event and
back; it imports no asyncio and raises only :class:`~schemas.errors.ProtocolError`.

Leniency, on purpose (see docs/formats.md):

- ``sequence_number``, ``timestamp`` and ``chunk`` are integers in Wavix's API
  reference and strings in its guide: both decode to ``int``.
- Unknown fields are ignored, so a Wavix release that adds fields keeps working.
- ``media.payload`` is base64, decoded once here (msgspec does it while parsing,
  ~1.5 µs per 20 ms frame against ~7.9 µs for ``json`` + ``base64``).
- ``media.track`` may be absent; the stream's channel then says which track it is.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.codecs import DEFAULT_CODEC, Codec
from schemas.errors import (
    InvalidBase64Error,
    InvalidMessageError,
    InvalidPayloadError,
    MalformedJSONError,
    ProtocolError,
    UnknownEventError,
)

Track = Literal["inbound", "outbound"]
Channel = Literal["inbound", "outbound", "both"]
StreamType = Literal["oneway", "twoway"]

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
"""Call and stream ids: non-empty and bounded, since they become Kafka keys and S3 keys."""
Count = Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class Connected(msgspec.Struct, tag="connected", tag_field="event", frozen=True):
    """Sent once, right after the WebSocket opens."""

    event_time: str | None = None
    """ISO-8601 time Wavix sent the message."""


class Start(msgspec.Struct, tag="start", tag_field="event", frozen=True):
    """Stream metadata, sent before the first ``media``."""

    call_id: Id
    """Wavix call id: the key that groups every stream of one call."""
    stream_id: Id
    """Wavix stream id, unique per stream (per WebSocket connection)."""
    stream_type: StreamType = "oneway"
    """``oneway`` (we only receive) or ``twoway`` (Wavix also plays what we send)."""
    channel: Channel = "both"
    """Which track(s) this stream carries; ``both`` when absent."""
    sequence_number: Count | None = None
    event_time: str | None = None


# ``gc=False`` on the media structs: they hold strings, bytes and numbers (and
# MediaBody), never a container that could refer back to them, so the garbage
# collector need not track the 40,000 a second ingest decodes at 400 calls (see
# schemas.envelope.MediaFrame for the figures).
class MediaBody(msgspec.Struct, frozen=True, gc=False):
    payload: bytes
    """Raw audio: base64 on the wire, bytes here."""
    chunk: Count
    """Chunk number within the stream; the order key for reassembly."""
    timestamp: Count
    """Milliseconds from stream start; places the chunk in time (gap filling)."""
    track: Track | None = None
    """``inbound`` or ``outbound``; absent means the stream's single channel."""


class Media(msgspec.Struct, tag="media", tag_field="event", frozen=True, gc=False):
    """One audio chunk (20 ms of PCM16 24 kHz = 960 bytes from Wavix)."""

    call_id: Id
    stream_id: Id
    media: MediaBody
    sequence_number: Count | None = None
    event_time: str | None = None


class Stop(msgspec.Struct, tag="stop", tag_field="event", frozen=True):
    """The stream is over: the call ended or the stream was stopped."""

    call_id: Id
    stream_id: Id
    sequence_number: Count | None = None
    event_time: str | None = None


class MarkBody(msgspec.Struct, frozen=True):
    name: Annotated[str, msgspec.Meta(max_length=256)]


class Mark(msgspec.Struct, tag="mark", tag_field="event", frozen=True):
    """Twoway only: audio we sent with this mark name finished playing."""

    call_id: Id
    stream_id: Id
    mark: MarkBody
    sequence_number: Count | None = None
    event_time: str | None = None


Event = Connected | Start | Media | Stop | Mark
EVENT_NAMES: tuple[str, ...] = ("connected", "start", "media", "stop", "mark")

_decoder = msgspec.json.Decoder(Event, strict=False)
_encoder = msgspec.json.Encoder()
_NUMBERED = frozenset({"sequence_number", "timestamp", "chunk"})


def parse(data: bytes | bytearray | memoryview | str, codec: Codec = DEFAULT_CODEC) -> Event:
    """Decode one WebSocket frame into an event.

    ``codec`` is the stream's audio encoding: a media payload must hold whole
    samples of it. Raises a :class:`ProtocolError` subclass whose ``reason``
    names what was wrong; never anything else.
    """
    try:
        event = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _classify(str(exc)) from None
    except (msgspec.DecodeError, UnicodeError, RecursionError, ValueError) as exc:
        raise MalformedJSONError(f"not a JSON message: {exc}") from None
    if isinstance(event, Media):
        size = len(event.media.payload)
        if size == 0 or size % codec.sample_width:
            raise InvalidPayloadError(
                f"media payload of {size} bytes is not whole {codec.id} samples"
            )
    return event


def _classify(message: str) -> ProtocolError:
    """Map a msgspec validation message to the error a metric can count."""
    if "base64" in message:
        return InvalidBase64Error(message)
    if message.endswith("at `$.event`") and message.startswith("Invalid value"):
        return UnknownEventError(message)
    return InvalidMessageError(message)


def encode(event: Event, *, numbers_as_strings: bool = False) -> bytes:
    """Encode an event as Wavix sends it (JSON, base64 payload).

    ``numbers_as_strings`` writes ``sequence_number``, ``timestamp`` and ``chunk``
    as strings, the way Wavix's guide shows them.
    """
    if not numbers_as_strings:
        return _encoder.encode(event)
    return _encoder.encode(_stringify(msgspec.to_builtins(event)))


def _stringify(obj: object) -> object:
    if isinstance(obj, dict):
        return {
            k: str(v) if k in _NUMBERED and isinstance(v, int) else _stringify(v)
            for k, v in obj.items()
        }
    return obj
