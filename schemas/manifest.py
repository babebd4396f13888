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

Determinism (docs/architecture.md, exactly-once archive): a replay after a crash must
write the same bytes. Everything here is derived from Kafka records, never
from the wall clock; JSON keys are sorted, lists have a defined order, the
indentation is fixed and the document ends with one newline. Field names and
meanings are the contract of ``version`` 1; adding a field keeps the version,
renaming or changing one takes a new version (readers check ``version``).
Fields added within version 1 are optional: ``timeline`` is absent from
manifests written before it and from recordings without marks (so their
bytes are what they were), and reads back as ``msgspec.UNSET`` (falsy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import msgspec

from schemas import envelope
from schemas.custody import StreamCustody, TimelineEntry, TrackCounts, iso_time, parse_iso_ns
from schemas.layout import manifest_key, wav_key
from schemas.wavix import Track

MANIFEST_VERSION = 1
CONTENT_TYPE = "application/json"


class ObjectEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One object of the recording in the archive."""

    key: str
    """Object key in the bucket."""
    sha256: str
    """Lower-case hex SHA-256 of the object's bytes."""
    size: int
    content_type: str


class CallInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the control plane knew of the call (absent for streams started by hand)."""

    from_number: str | None = None
    """The caller (Wavix ``from``)."""
    to_number: str | None = None
    """The called number (Wavix ``to``)."""
    direction: str | None = None
    """``inbound`` or ``outbound``."""
    tag: str | None = None
    answered_time: str | None = None
    """When the call was answered (Wavix's time, verbatim)."""
    completed_time: str | None = None
    """When the call ended, if that was known before the recording was archived."""
    disposition: str | None = None


class PauseEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An interval paused on request (card payments): silence in the WAV, never transcribed."""

    start_ms: int
    """From the recording start."""
    end_ms: int


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
    call: CallInfo | msgspec.UnsetType = msgspec.UNSET
    """Call metadata from the control plane; absent for streams started by hand and in
    manifests written before it (added within version 1)."""
    pauses: list[PauseEntry] | msgspec.UnsetType = msgspec.UNSET
    """Paused intervals, in order; absent when there are none (added within version 1)."""
    timeline: list[TimelineEntry] | msgspec.UnsetType = msgspec.UNSET
    """Events placed in the recording's time, by ``at_ms`` (then stream, time received):
    the marks of twoway streams. Absent when there are none (added within version 1)."""

    @property
    def date(self) -> str:
        """``YYYY-MM-DD`` of the recording start (UTC): the Hive ``date=`` partition."""
        return self.start_time[:10]

    @property
    def end_time(self) -> str:
        return iso_time(start_ns(self) + self.duration_ms * 1_000_000)


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


def start_ns(manifest: Manifest) -> int:
    ns = parse_iso_ns(manifest.start_time)
    if ns is None:
        raise ValueError(f"manifest start_time {manifest.start_time!r} is not ISO-8601")
    return ns


def recording_event(
    manifest: Manifest, uri: Callable[[str], str]
) -> envelope.RecordingFinished:
    """The ``callrec.recordings`` event of an archived recording, from its manifest;
    ``uri`` turns a key into the archive's URI for it (``ObjectStore.uri``)."""
    wav = wav_key(manifest.recording_id)
    return envelope.RecordingFinished(
        call_id=manifest.call_id,
        part=manifest.part,
        recording_id=manifest.recording_id,
        wav_uri=uri(wav),
        manifest_uri=uri(manifest_key(manifest.recording_id)),
        tracks=cast(list[Track], list(manifest.tracks)),
        codec=manifest.codec,
        start_ns=parse_iso_ns(manifest.start_time) or 0,
        duration_ms=manifest.duration_ms,
        complete=manifest.complete,
        reason=manifest.reason,
        wav_sha256=next((o.sha256 for o in manifest.objects if o.key == wav), ""),
        pauses=[(p.start_ms, p.end_ms) for p in manifest.pauses or []],
    )
