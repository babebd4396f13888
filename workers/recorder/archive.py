"""Writing one finished recording to the archive, idempotently.

Key layout (docs/formats.md)::

    recordings/<recording_id>/audio.wav       WAV, inbound = left, outbound = right
    recordings/<recording_id>/peaks.json      waveform peaks for the console (infra/peaks.py)
    recordings/<recording_id>/manifest.json   written last: its presence means "archived"
    tables/calls/date=YYYY-MM-DD/<recording_id>.parquet

``recording_id`` is ``<call_id>-<part>`` (see ``schemas.tables.recording_id``).
The part of a recording is found in the archive, not in memory: the manifest of
an existing part whose first stream is this recording's first stream means
this recording *is* that part (a replay: nothing is written again); otherwise
the recording is the call's next part. Every object's bytes depend only on the
records, so a replay that does write produces the same bytes at the same keys.

Runs in a worker thread (boto3 is synchronous); raises ``StoreError`` or
``OSError`` for the caller to retry; anything else (a manifest that does not
decode, ``ArchiveConflictError``, ``ReassemblyError``) fails the same way again:
the caller records the recording as failed (workers.recorder.failures).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from infra.logsafe import safe
from infra.parquet import rows_to_parquet
from infra.peaks import CONTENT_TYPE as PEAKS_CONTENT_TYPE
from infra.peaks import PeaksBuilder, peaks_bytes
from infra.store import ObjectStore, StoredObject
from infra.wav import write_wav
from schemas import envelope
from schemas.custody import parse_iso_ns
from schemas.layout import MANIFEST_NAME, PEAKS_NAME, WAV_NAME, manifest_key, recording_prefix
from schemas.manifest import (
    CallInfo,
    Manifest,
    ObjectEntry,
    PauseEntry,
    decode_manifest,
    manifest_bytes,
    recording_event,
)
from schemas.tables import recording_id, table_key
from workers.recorder.errors import ArchiveConflictError
from workers.recorder.manifests import build_manifest, calls_row
from workers.recorder.reassembly import RecordingAssembler, RecordingResult

if TYPE_CHECKING:
    from workers.recorder.tracker import Recording

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ArchivedRecording:
    event: envelope.RecordingFinished
    """What goes to ``callrec.recordings``."""
    already_archived: bool
    """True when a replay found the manifest and wrote nothing."""
    gaps: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    last_close_ns: int | None = None


def archive_recording(store: ObjectStore, rec: Recording, work_dir: Path) -> ArchivedRecording:
    """Archive a recording the tracker handed over; see the module docstring."""
    assembler = rec.assembler
    assert isinstance(assembler, RecordingAssembler)
    result = assembler.finalize(timed_out=rec.idle, cut_reason=rec.cut_reason)
    part, existing = _find_part(store, result)
    rec_id = recording_id(result.call_id, part)
    prefix = recording_prefix(rec_id)
    if existing is not None:
        log.info("call_id=%s: %s already archived, not rewritten", safe(result.call_id),
                 rec_id)
        assembler.discard()
        return ArchivedRecording(recording_event(existing, store.uri), already_archived=True,
                                 last_close_ns=rec.closed_at_ns)

    manifest = build_manifest(result, part=part, recording_id=rec_id,
                              call=call_info(rec), pauses=pauses_of(rec, assembler, result))
    wav_path = work_dir / f"{rec_id}.wav"
    try:
        waveform = PeaksBuilder(result.codec, manifest.tracks)
        _, sha256 = write_wav(wav_path, result.codec, result.track_paths,
                              result.track_lengths, tee=waveform.feed)
        wav = store.put_file(prefix + WAV_NAME, wav_path, sha256, "audio/wav")
        peaks = store.put_bytes(prefix + PEAKS_NAME, peaks_bytes(waveform.finish()),
                                PEAKS_CONTENT_TYPE)
    finally:
        wav_path.unlink(missing_ok=True)
    row = calls_row(manifest, recording_key=wav.key, manifest_key=prefix + MANIFEST_NAME,
                    wav_sha256=wav.sha256, wav_bytes=wav.size)
    table = store.put_bytes(table_key("calls", manifest.date, rec_id),
                            rows_to_parquet("calls", [row]), "application/vnd.apache.parquet")
    manifest = msgspec.structs.replace(
        manifest, objects=sorted((_entry(wav), _entry(peaks), _entry(table)),
                                  key=lambda o: o.key)
    )
    store.put_bytes(prefix + MANIFEST_NAME, manifest_bytes(manifest), "application/json")
    assembler.discard()
    counts = [t.counts for t in result.tracks]
    return ArchivedRecording(
        recording_event(manifest, store.uri),
        already_archived=False,
        gaps=sum(c.gaps for c in counts),
        duplicates=sum(c.duplicates for c in counts),
        out_of_order=sum(c.out_of_order for c in counts),
        last_close_ns=rec.closed_at_ns,
    )


def call_info(rec: Recording) -> CallInfo | None:
    """The control plane's metadata of the call, when it sent any."""
    answered, completed = rec.answered, rec.completed
    if answered is None and completed is None:
        return None
    first = answered or completed
    assert first is not None
    return CallInfo(
        from_number=first.from_number,
        to_number=first.to_number,
        direction=first.direction,
        tag=first.tag,
        answered_time=first.answered_time or (answered.event_time if answered else None),
        completed_time=completed.completed_time or completed.event_time if completed else None,
        disposition=completed.disposition if completed else None,
    )


def pauses_of(rec: Recording, assembler: RecordingAssembler,
              result: RecordingResult) -> list[PauseEntry]:
    """Paused intervals: from the end of each stopped stream's audio to the start of the
    next stream (the one started on resume), or to the end of the recording."""
    spans = assembler.stream_spans()
    entries: list[PauseEntry] = []
    for pause in rec.pauses:
        span = spans.get(pause.stream_id or "")
        if span is None:
            continue
        start = span[1]
        later = [s for s, _ in spans.values() if s >= start]
        end = min(later, default=max(start, result.duration_ms))
        if end > start:
            entries.append(PauseEntry(start_ms=start, end_ms=end))
    return sorted(entries, key=lambda p: p.start_ms)


def _find_part(store: ObjectStore, result: RecordingResult) -> tuple[int, Manifest | None]:
    """(part, its manifest if that part is already archived) for this recording.

    A recording whose first stream is a stream of an archived part, with audio that
    arrived no later than that stream's last archived arrival, *is* (a piece of) that
    part: a replay after a crash or rebalance, possibly starting mid-call when the
    committed offset lay inside it. Nothing is written again. A recording that
    continues such a stream after its last archived arrival (the stream went quiet
    longer than the idle timeout, then resumed) is the call's next part.
    """
    first = result.streams[0] if result.streams else None
    parts = _archived_parts(store, result.call_id)
    if first is not None:
        arrived = parse_iso_ns(first.first_arrival)
        for part, manifest in sorted(parts.items()):
            for archived in manifest.streams:
                if archived.stream_id != first.stream_id:
                    continue
                until = parse_iso_ns(archived.last_arrival)
                if arrived is None or until is None or arrived <= until:
                    return part, manifest
    return (max(parts) + 1 if parts else 0), None



def _archived_parts(store: ObjectStore, call_id: str) -> dict[int, Manifest]:
    """The manifests of the call's archived parts, read at their exact keys.

    Parts are numbered 0, 1, 2... without holes (part n+1 is archived only after part
    n's manifest exists), so they are found by asking for part 0's manifest, then 1's,
    until one is missing: one request more than the call has parts, whatever the size
    of the archive (listing ``recordings/<call_id>-`` would also list every call whose
    id starts with this one's, and grow with them).
    """
    parts: dict[int, Manifest] = {}
    while True:
        key = manifest_key(recording_id(call_id, len(parts)))
        if not store.exists(key):
            return parts
        manifest = decode_manifest(store.get_bytes(key))
        if manifest.call_id != call_id:
            raise ArchiveConflictError(f"{key} belongs to call {manifest.call_id!r}")
        parts[len(parts)] = manifest


def _entry(obj: StoredObject) -> ObjectEntry:
    return ObjectEntry(key=obj.key, sha256=obj.sha256, size=obj.size,
                       content_type=obj.content_type)
