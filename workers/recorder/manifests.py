"""A finalized recording described for the archive: its manifest and its ``calls`` row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from schemas.custody import iso_time, parse_iso_ns
from schemas.manifest import CallInfo, Manifest, ObjectEntry, PauseEntry, start_ns
from workers.recorder.reassembly import RecordingResult


def build_manifest(
    result: RecordingResult,
    *,
    part: int,
    recording_id: str,
    objects: Sequence[ObjectEntry] = (),
    call: CallInfo | None = None,
    pauses: Sequence[PauseEntry] = (),
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
        call=call if call is not None else msgspec.UNSET,
        pauses=list(pauses) if pauses else msgspec.UNSET,
        timeline=list(result.timeline) if result.timeline else msgspec.UNSET,
    )


def calls_row(
    manifest: Manifest,
    *,
    recording_key: str,
    manifest_key: str,
    wav_sha256: str,
    wav_bytes: int,
) -> dict[str, Any]:
    """The ``calls`` table row of a recording (``schemas.tables.CALLS``; no partition column)."""
    counts = manifest.counts.values()
    start_ms = start_ns(manifest) // 1_000_000
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
        **call_columns(manifest.call or None),
        "paused_ms": (sum(p.end_ms - p.start_ms for p in manifest.pauses or [])
                      if manifest.call else None),
    }


def call_columns(call: CallInfo | None) -> dict[str, Any]:
    """The call metadata columns shared by the ``calls`` and ``control`` tables."""
    if call is None:
        call = CallInfo()
    return {
        "from_number": call.from_number,
        "to_number": call.to_number,
        "direction": call.direction,
        "tag": call.tag,
        "answered_time": _ms(call.answered_time),
        "completed_time": _ms(call.completed_time),
        "disposition": call.disposition,
    }


def _ms(text: str | None) -> int | None:
    ns = parse_iso_ns(text)
    return None if ns is None else ns // 1_000_000
