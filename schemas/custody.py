"""Custody and repair records of a recording, and the archive's time format.

Value types the recorder fills while it reassembles a call and the manifest
(:mod:`schemas.manifest`) carries: how each connection ended, where each
stream's audio came from, and what was repaired per track. Times are ISO-8601
UTC strings derived from records, never from the wall clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

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


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    """Something that happened at a point of the recording (today: a Wavix ``mark``)."""

    at_ms: int | None
    """Position in the recording (ms from its start, the WAV's time 0), on the clock
    ``clock``; null when the stream's start record never arrived (nothing to place it by)."""
    kind: str
    """``mark``: a twoway stream's mark came back (the audio sent before it had played)."""
    stream_id: str
    name: str
    """The mark's name, as the bot sent it."""
    seq: int | None
    """Wavix's ``sequence_number`` of the message, when given."""
    event_time: str | None
    """Wavix's ``event_time`` of the message, verbatim."""
    received: str
    """When the ingest pod read it (ISO-8601 UTC, µs)."""
    clock: str
    """What placed it: ``event_time`` (Wavix's clock, as the audio when the recording's
    clock is ``event_time``) or ``received`` (the ingest pod's receive time)."""


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
