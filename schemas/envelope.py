"""The versioned envelope of every record callrec writes to Kafka.

Layout of a record value (documented in docs/formats.md)::

    offset  size  field
    0       2     magic  b"CR"
    2       1     version (1 today)
    3       1     kind: 1 media chunk, 2 stream started, 3 stream closed,
                        4 mark, 5 recording finished, 9 media batch
                        (6 to 8 are reserved for the control plane's records)
    4       ...   body: a MessagePack map of the kind's fields (names below)

Topic ``callrec.media`` carries kinds 1 to 4 and 9 keyed by ``call_id``; topic
``callrec.recordings`` carries kind 5. The body is a map, not an array, so a
later writer may add fields within a version and older readers ignore them;
removing or changing the meaning of a field takes a new version, and every
version this code ever wrote stays decodable (tests/unit/test_envelope.py holds
fixed byte samples of each).

A new kind is additive (version 1 stays): a reader that predates it refuses its
records as an unknown kind, and every record it knows still decodes. Kind 9
(``MediaBatch``) carries consecutive frames of one stream that ingest coalesced
(``CALLREC_INGEST_COALESCE_MS``); with coalescing off ingest writes kind 1 only.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.errors import EnvelopeError, UnsupportedVersionError
from schemas.wavix import Channel, StreamType, Track

MAGIC = b"CR"
VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

CloseReason = Literal["stop", "disconnect", "error"]
"""Why a stream ended: Wavix sent ``stop``; the socket ended without one; we closed it."""


class MediaChunk(msgspec.Struct, frozen=True, kw_only=True):
    """Kind 1: one audio chunk of one track, exactly as received (payload decoded)."""

    call_id: str
    stream_id: str
    track: Track
    """``inbound`` or ``outbound``."""
    chunk: int
    """The sender's chunk number: order key within (stream, track)."""
    timestamp_ms: int
    """Milliseconds from stream start, as sent; places the chunk in time."""
    codec: str
    """Codec id of ``payload`` (``L16/24000``...)."""
    payload: bytes
    received_ns: int
    """Unix time in ns when the ingest pod read the frame (custody)."""
    seq: int | None = None
    """The sender's ``sequence_number``, when given."""


class MediaFrame(msgspec.Struct, frozen=True, kw_only=True):
    """One audio chunk inside a ``MediaBatch``: what ``MediaChunk`` holds per chunk."""

    track: Track
    """``inbound`` or ``outbound`` (a ``both`` stream interleaves them in one batch)."""
    chunk: int
    """The sender's chunk number: order key within (stream, track)."""
    timestamp_ms: int
    """Milliseconds from stream start, as sent; places the chunk in time."""
    payload: bytes
    received_ns: int
    """Unix time in ns when the ingest pod read the frame (custody)."""
    seq: int | None = None
    """The sender's ``sequence_number``, when given."""


class MediaBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Kind 9: consecutive audio chunks of one stream, in the order ingest read them.

    The same chunks as that many ``MediaChunk`` records (docs/formats.md), the fields
    they share written once: one Kafka record per coalescing window instead of one
    per 20 ms frame.
    """

    call_id: str
    stream_id: str
    codec: str
    """Codec id of every frame's ``payload`` (``L16/24000``...)."""
    frames: Annotated[list[MediaFrame], msgspec.Meta(min_length=1)]
    """At least one; in arrival order (``received_ns`` never decreases)."""

    @property
    def received_ns(self) -> int:
        """When ingest read the batch's last frame: the record's time, as for other kinds."""
        return self.frames[-1].received_ns

    def chunks(self) -> list[MediaChunk]:
        """The batch as the ``MediaChunk`` records it stands for (tests, tools)."""
        return [
            MediaChunk(
                call_id=self.call_id, stream_id=self.stream_id, track=f.track, chunk=f.chunk,
                timestamp_ms=f.timestamp_ms, codec=self.codec, payload=f.payload,
                received_ns=f.received_ns, seq=f.seq,
            )
            for f in self.frames
        ]


class StreamStarted(msgspec.Struct, frozen=True, kw_only=True):
    """Kind 2: a Wavix ``start`` was accepted on some ingest pod."""

    call_id: str
    stream_id: str
    stream_type: StreamType
    channel: Channel
    codec: str
    ingest_pod: str
    """Pod (host) name of the ingest process that holds the connection."""
    connection_id: str
    """Random id of the WebSocket connection; tells reconnects of one stream apart."""
    received_ns: int
    event_time: str | None = None
    seq: int | None = None


class StreamClosed(msgspec.Struct, frozen=True, kw_only=True):
    """Kind 3: the stream's connection ended, for the given reason. Always written last."""

    call_id: str
    stream_id: str
    reason: CloseReason
    detail: str
    """Human-readable cause, e.g. ``close code 1009`` or ``kafka unavailable``."""
    ingest_pod: str
    connection_id: str
    received_ns: int
    chunks: int
    """Media chunks this connection published (all of them precede this record); a
    ``MediaBatch`` counts as its frames."""
    invalid: int
    """Messages this connection skipped as invalid."""


class MarkReceived(msgspec.Struct, frozen=True, kw_only=True):
    """Kind 4: Wavix acknowledged a mark (twoway streams): the audio sent before it played."""

    call_id: str
    stream_id: str
    name: str
    received_ns: int
    """Unix time in ns when the ingest pod read the ``mark`` message."""
    seq: int | None = None
    event_time: str | None = None
    """Wavix's ``event_time`` of the mark, verbatim; added within version 1 (records
    written before it decode with None), it places the mark on Wavix's clock."""


class RecordingFinished(msgspec.Struct, frozen=True, kw_only=True):
    """Kind 5, topic ``callrec.recordings``: a recording is archived and durable."""

    call_id: str
    part: int
    """Recording part: 0, then 1... for streams that start after a part was finalized."""
    recording_id: str
    """``<call_id>/<part>``-derived id, stable across replays."""
    wav_uri: str
    manifest_uri: str
    tracks: list[Track]
    codec: str
    start_ns: int
    duration_ms: int
    complete: bool
    reason: str
    wav_sha256: str


Record = (
    MediaChunk | StreamStarted | StreamClosed | MarkReceived | RecordingFinished | MediaBatch
)

_KINDS: dict[type, int] = {
    MediaChunk: 1,
    StreamStarted: 2,
    StreamClosed: 3,
    MarkReceived: 4,
    RecordingFinished: 5,
    MediaBatch: 9,
}
_encoder = msgspec.msgpack.Encoder()
_decoders: dict[int, msgspec.msgpack.Decoder] = {
    kind: msgspec.msgpack.Decoder(cls) for cls, kind in _KINDS.items()
}
_headers = {kind: MAGIC + bytes((VERSION, kind)) for kind in _KINDS.values()}


def encode(record: Record) -> bytes:
    """Serialize a record as the current envelope version."""
    return _headers[_KINDS[type(record)]] + _encoder.encode(record)


def decode(value: bytes) -> Record:
    """Parse an envelope of any supported version; raise ``EnvelopeError`` otherwise."""
    if len(value) < 4 or value[:2] != MAGIC:
        raise EnvelopeError("not a callrec envelope (bad magic)")
    version, kind = value[2], value[3]
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(
            f"envelope version {version} is newer than this callrec ({VERSION})"
        )
    decoder = _decoders.get(kind)
    if decoder is None:
        raise EnvelopeError(f"unknown envelope kind {kind}")
    try:
        record: Record = decoder.decode(memoryview(value)[4:])
    except (msgspec.DecodeError, RecursionError, ValueError) as exc:
        raise EnvelopeError(f"bad {decoder.type.__name__} body: {exc}") from None
    return record
