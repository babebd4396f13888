"""The versioned envelope of every record callrec writes to Kafka.

Layout of a record value (documented in docs/formats.md)::

    offset  size  field
    0       2     magic  b"CR"
    2       1     version (1 today)
    3       1     kind: 1 media chunk, 2 stream started, 3 stream closed,
                        4 mark, 5 recording finished, 6 call event received,
                        7 call lifecycle, 8 control state, 9 media batch
    4       ...   body: a MessagePack map of the kind's fields (names below)

Topic ``callrec.media`` carries kinds 1 to 4, 7 and 9 keyed by ``call_id``; topic
``callrec.recordings`` carries kind 5; ``callrec.calls`` kind 6 and the compacted
``callrec.control`` kind 8, both keyed by ``call_id`` (docs/control.md). The body is a
map, not an array, so a later writer may add fields within a version and older readers
ignore them; removing or changing the meaning of a field takes a new version, and every
version this code ever wrote stays decodable (tests/unit/test_envelope.py holds fixed
byte samples of each).

A new kind is additive (version 1 stays): a reader that predates it refuses its
records as an unknown kind, and every record it knows still decodes. Kind 9
(``MediaBatch``) carries consecutive frames of one stream that ingest coalesced
(``CALLREC_INGEST_COALESCE_MS``); with coalescing off ingest writes kind 1 only.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.callevents import CallEvent
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


class MediaFrame(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One audio chunk inside a ``MediaBatch``: what ``MediaChunk`` holds per chunk.

    ``gc=False`` here and on ``MediaBatch``: a frame holds scalars and bytes, a batch
    strings and its list of frames, so neither can be part of a reference cycle, and
    the garbage collector need not track the ~50,000 of them a second that ingest and
    the recorder make at 400 calls (ingest's parse-and-coalesce path: 2.03 -> 1.81 us
    per message, gen-0 collections 1,781 -> 235 per 200,000 messages).
    """

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


class MediaBatch(msgspec.Struct, frozen=True, kw_only=True, gc=False):
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
    pauses: list[tuple[int, int]] = msgspec.field(default_factory=list)
    """Paused intervals ``(start_ms, end_ms)`` from the recording start: silence, never
    transcribed (absent in records written before pauses existed)."""


CallEventSource = Literal["wavix", "api"]
"""Where a call event came from: Wavix's webhook, or callrec's control API (pause/resume)."""


class CallEventReceived(msgspec.Struct, frozen=True, kw_only=True):
    """Kind 6, topic ``callrec.calls``: a call event the control plane accepted."""

    event: CallEvent
    received_ns: int
    """Unix time in ns when the control pod accepted the event."""
    source: CallEventSource = "wavix"
    """``api`` for ``pause``/``resume`` requests of the control API."""

    @property
    def call_id(self) -> str:
        return self.event.call_id


LifecycleEvent = Literal["answered", "paused", "resumed", "completed"]


class CallLifecycle(msgspec.Struct, frozen=True, kw_only=True):
    """Kind 7, topic ``callrec.media``: what the controller knows of a call, for the recorder.

    ``answered`` precedes the call's first stream and carries its metadata; ``paused``
    precedes the close of the stream it stops (keep the recording open, silence);
    ``resumed`` precedes the next stream; ``completed`` ends the recording at once.
    """

    call_id: str
    event: LifecycleEvent
    received_ns: int
    """Control's clock when it acted (places the record among the call's records)."""
    event_time: str | None = None
    """Wavix's ``event_time`` of the event behind it, verbatim."""
    from_number: str | None = None
    to_number: str | None = None
    direction: str | None = None
    tag: str | None = None
    answered_time: str | None = None
    completed_time: str | None = None
    disposition: str | None = None
    stream_id: str | None = None
    """``paused``: the Wavix stream being stopped."""


ControlPhase = Literal["seen", "starting", "started", "failed", "skipped", "paused",
                       "completed"]


class ControlState(msgspec.Struct, frozen=True, kw_only=True):
    """Kind 8, compacted topic ``callrec.control``: the controller's durable state of a call.

    Written (acks=all) before every Wavix request that changes the call and after its
    answer; the latest record per call is what a restarted controller resumes from.
    """

    call_id: str
    phase: ControlPhase
    updated_ns: int
    offset: int = -1
    """Offset in ``callrec.calls`` of the last event applied: a replayed event at or
    before it is not applied again."""
    epoch: int = 0
    """Stream start attempts made (intents written) for the call."""
    stream_id: str | None = None
    """The Wavix stream recording the call now, if any."""
    reason: str | None = None
    """Why the call is not (or no longer) recorded: ``no_rule_matched``,
    ``stream_start_failed: 401 ...``, ``stream_start_unknown``..."""
    rule: str | None = None
    """Name of the recording rule that matched."""
    channel: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    direction: str | None = None
    tag: str | None = None
    first_event_time: str | None = None
    answered_time: str | None = None
    completed_time: str | None = None
    disposition: str | None = None
    last_event: str | None = None
    pauses: int = 0
    first_seen_ns: int = 0
    """Control's clock when the first event of the call was accepted (table partition)."""


Record = (
    MediaChunk | StreamStarted | StreamClosed | MarkReceived | RecordingFinished | MediaBatch
    | CallEventReceived | CallLifecycle | ControlState
)

_KINDS: dict[type, int] = {
    MediaChunk: 1,
    StreamStarted: 2,
    StreamClosed: 3,
    MarkReceived: 4,
    RecordingFinished: 5,
    CallEventReceived: 6,
    CallLifecycle: 7,
    ControlState: 8,
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
