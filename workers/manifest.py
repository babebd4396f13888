"""The manifest: one recording's self-description for the compliance archive (JSON).

A manifest says what was recorded (codec, tracks, channel layout, start and
duration), whether it is complete (and if not, why), where every byte came
from (custody: streams, ingest pods, connections, first/last arrival, close
reasons) and what the recorder had to repair (per-track counts of duplicates,
reordering, gaps, overlaps). It lists every other object of the recording with
its sha256, so an auditor can check the archive with nothing but the manifest.

Write order, and why the manifest comes last::

    WAV ─▶ calls Parquet row (carries wav_sha256 and the manifest URI)
        ─▶ manifest (carries the sha256 of the WAV and of the Parquet file)

The manifest cannot hold its own sha256; the S3 object checksum carries it.

Determinism (DESIGN.md §4, exactly-once archive): a replay after a crash must
write the same bytes. Everything here is derived from Kafka records, never
from the wall clock; JSON keys are sorted, lists have a defined order, the
indentation is fixed and the document ends with one newline. Field names and
meanings are the contract of ``version`` 1; adding a field keeps the version,
renaming or changing one takes a new version (readers check ``version``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import msgspec

from schemas import envelope
from schemas.wavix import Track
from workers.layout import manifest_key, wav_key

if TYPE_CHECKING:
    from workers.reassembly import RecordingResult
    from workers.store import ObjectStore

MANIFEST_VERSION = 1
CONTENT_TYPE = "application/json"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_time(ns: int, digits: int = 3) -> str:
    """Format Unix-epoch nanoseconds as ISO-8601 UTC with ``digits`` fraction digits.

    ``2024-05-01T12:00:00.123Z`` for ``digits=3``. Truncates (never rounds), so a
    time never moves into the next second or day partition.
    """
    dt = _EPOCH + timedelta(microseconds=ns // 1000)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        frac = f"{ns % 1_000_000_000:09d}"[:digits]
        text = f"{text}.{frac}"
    return text + "Z"


class CloseEntry(msgspec.Struct, frozen=True, kw_only=True):
    """How one connection of a stream ended (a ``StreamClosed`` record)."""

    reason: str
    """``stop`` (Wavix said so), ``disconnect`` (socket ended without stop), ``error``."""
    detail: str
    """The ingest pod's human-readable cause, e.g. ``close code 1009``."""
    ingest_pod: str
    connection_id: str
    time: str
    """When the ingest pod wrote the close (ISO-8601 UTC, microseconds)."""
    chunks: int
    """Media chunks this connection published to Kafka."""
    invalid: int
    """Messages this connection skipped as invalid."""


class StreamCustody(msgspec.Struct, frozen=True, kw_only=True):
    """Where one Wavix stream's audio came from, and what arrived of it."""

    stream_id: str
    stream_type: str | None
    """``oneway``/``twoway``; null when no start record arrived."""
    channel: str | None
    """``inbound``/``outbound``/``both`` as declared at start; null without a start."""
    codec: str
    tracks: list[str]
    """Tracks this stream carried audio for, in channel order."""
    event_time: str | None
    """Wavix's ``event_time`` of the earliest start record, verbatim."""
    start_time: str | None
    """When the ingest pod received the earliest start record (ISO-8601 UTC)."""
    offset_ms: int
    """Where the stream's timestamp 0 lies in the recording (alignment)."""
    ingest_pods: list[str]
    """Every pod that held a connection of this stream, sorted."""
    connection_ids: list[str]
    """Every connection (reconnects included), sorted."""
    first_arrival: str | None
    """Earliest ``received_ns`` of the stream's chunks (ISO-8601 UTC, µs)."""
    last_arrival: str | None
    """Latest ``received_ns`` of the stream's chunks."""
    chunks: int
    """Media records received from Kafka for this stream (duplicates included)."""
    published: int | None
    """Media records the ingest pods said they published (sum over closes); null if none closed."""
    missing_chunks: int
    """Chunk numbers never received between the lowest and highest received one."""
    numbering: str
    """``per_track``, or ``shared`` when a ``both`` stream numbers its two tracks with one
    counter (detected: the two tracks' numbers never coincide); gaps are counted accordingly."""
    duplicates: int
    out_of_order: int
    rejected: int
    """Chunks not used: unknown or mismatched codec, bad payload, beyond the maximum length."""
    marks: int
    closes: list[CloseEntry]
    """One per connection that ended, ordered by time."""


class TrackCounts(msgspec.Struct, frozen=True, kw_only=True):
    """What the recorder saw and repaired on one track (docs/reassembly.md defines each)."""

    received: int
    """Media records accepted for the track, duplicates included."""
    chunks: int
    """Distinct chunks after deduplication (each placed in the audio, fully or partly)."""
    duplicates: int
    """Records whose (stream, chunk number) had been seen before."""
    conflicting_duplicates: int
    """Distinct extra versions of a chunk number (another timestamp or payload); dropped."""
    out_of_order: int
    """Chunks that arrived after a higher chunk number of the same stream."""
    late: int
    """Chunks that arrived after the reorder window had moved past them (spilled separately)."""
    rejected: int
    overlaps: int
    """Chunks that lost some or all of their bytes to an earlier-starting chunk."""
    overlap_ms: int
    gaps: int
    """Holes filled with silence between the track's first and last audio."""
    gap_ms: int
    lead_ms: int
    """Silence before the track's first audio (alignment to the recording start)."""
    length_ms: int
    """Length of the track's audio before padding to the longest track."""
    jitter_ms: float = 0.0
    """RFC 3550 interarrival jitter (ms) of the track's worst stream, from the ingest pods'
    receive times against the chunks' timestamps, in arrival order."""


class ObjectEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One object of the recording in the archive."""

    key: str
    """Object key in the bucket."""
    sha256: str
    """Lower-case hex SHA-256 of the object's bytes."""
    size: int
    content_type: str


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """The manifest of one recording (JSON, version 1)."""

    version: int = MANIFEST_VERSION
    call_id: str
    part: int
    recording_id: str
    codec: str
    """Codec of the WAV's samples, e.g. ``L16/24000``."""
    sample_rate: int
    tracks: list[str]
    """Tracks in channel order."""
    channels: dict[str, int]
    """Track → WAV channel index (``inbound`` 0 = left, ``outbound`` 1 = right)."""
    start_time: str
    """Recording start (time 0 of the WAV), ISO-8601 UTC with ms, derived from records."""
    clock: str
    """Clock the streams were aligned with: ``event_time`` (Wavix) or ``received`` (ingest)."""
    duration_ms: int
    complete: bool
    reason: str
    """Empty when complete; otherwise every reason, ``; ``-separated."""
    streams: list[StreamCustody]
    counts: dict[str, TrackCounts]
    """Per track."""
    objects: list[ObjectEntry]
    """Every other object of the recording (WAV, Parquet rows), sorted by key."""

    @property
    def date(self) -> str:
        """``YYYY-MM-DD`` of the recording start (UTC): the Hive ``date=`` partition."""
        return self.start_time[:10]

    @property
    def end_time(self) -> str:
        return iso_time(_start_ns(self) + self.duration_ms * 1_000_000)


_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder(Manifest)


def manifest_bytes(manifest: Manifest) -> bytes:
    """Encode a manifest deterministically: sorted keys, 2-space indent, final newline."""
    normalized = msgspec.structs.replace(
        manifest, objects=sorted(manifest.objects, key=lambda o: o.key)
    )
    return msgspec.json.format(_encoder.encode(normalized), indent=2) + b"\n"


def decode_manifest(data: bytes) -> Manifest:
    """Parse a manifest written by :func:`manifest_bytes` (raises ``msgspec.DecodeError``)."""
    return _decoder.decode(data)


def build_manifest(
    result: RecordingResult,
    *,
    part: int,
    recording_id: str,
    objects: Sequence[ObjectEntry] = (),
) -> Manifest:
    """The manifest of a finalized recording.

    ``objects`` may be empty at first: build the manifest, derive the calls row
    from it (:func:`calls_row`), then add the WAV and Parquet entries with
    ``msgspec.structs.replace`` before encoding.
    """
    return Manifest(
        call_id=result.call_id,
        part=part,
        recording_id=recording_id,
        codec=result.codec.id,
        sample_rate=result.codec.sample_rate,
        tracks=[t.track for t in result.tracks],
        channels={t.track: i for i, t in enumerate(result.tracks)},
        start_time=iso_time(result.start_ns),
        clock=result.clock,
        duration_ms=result.duration_ms,
        complete=result.complete,
        reason=result.reason,
        streams=list(result.streams),
        counts={t.track: t.counts for t in result.tracks},
        objects=sorted(objects, key=lambda o: o.key),
    )


def calls_row(
    manifest: Manifest,
    *,
    recording_key: str,
    manifest_key: str,
    wav_sha256: str,
    wav_bytes: int,
) -> dict[str, Any]:
    """The ``calls`` table row of a recording (schemas.tables.CALLS; no partition column)."""
    counts = manifest.counts.values()
    start_ms = _start_ns(manifest) // 1_000_000
    return {
        "call_id": manifest.call_id,
        "part": manifest.part,
        "recording_id": manifest.recording_id,
        "start_time": start_ms,
        "end_time": start_ms + manifest.duration_ms,
        "duration_ms": manifest.duration_ms,
        "tracks": list(manifest.tracks),
        "channels": len(manifest.tracks),
        "complete": manifest.complete,
        "incomplete_reason": None if manifest.complete else manifest.reason,
        "codec": manifest.codec,
        "sample_rate": manifest.sample_rate,
        "recording_key": recording_key,
        "manifest_key": manifest_key,
        "wav_sha256": wav_sha256,
        "wav_bytes": wav_bytes,
        "gaps": sum(c.gaps for c in counts),
        "gap_ms": sum(c.gap_ms for c in counts),
        "missing_chunks": sum(s.missing_chunks for s in manifest.streams),
        "duplicates": sum(c.duplicates for c in counts),
        "out_of_order": sum(c.out_of_order for c in counts),
        "overlaps": sum(c.overlaps for c in counts),
        "streams": len(manifest.streams),
        "ingest_pods": sorted({p for s in manifest.streams for p in s.ingest_pods}),
    }


def parse_iso_ns(text: str | None) -> int | None:
    """ISO-8601 time as Unix nanoseconds (µs precision); None if absent or unparsable.

    A time without a zone is taken as UTC.
    """
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _start_ns(manifest: Manifest) -> int:
    ns = parse_iso_ns(manifest.start_time)
    if ns is None:
        raise ValueError(f"manifest start_time {manifest.start_time!r} is not ISO-8601")
    return ns


def recording_event(store: ObjectStore, manifest: Manifest) -> envelope.RecordingFinished:
    """The ``callrec.recordings`` event of an archived recording, from its manifest."""
    wav = wav_key(manifest.recording_id)
    return envelope.RecordingFinished(
        call_id=manifest.call_id,
        part=manifest.part,
        recording_id=manifest.recording_id,
        wav_uri=store.uri(wav),
        manifest_uri=store.uri(manifest_key(manifest.recording_id)),
        tracks=cast(list[Track], list(manifest.tracks)),
        codec=manifest.codec,
        start_ns=parse_iso_ns(manifest.start_time) or 0,
        duration_ms=manifest.duration_ms,
        complete=manifest.complete,
        reason=manifest.reason,
        wav_sha256=next((o.sha256 for o in manifest.objects if o.key == wav), ""),
    )
