"""Backfill: analyse recordings already in the archive (``callrec analyzer --backfill``).

Use it after a model or analyzer upgrade, to analyse an archive recorded before
the analyzer ran, or to pick up recordings whose analysis failed.

What is analysed: every recording with a manifest (``recordings/<id>/manifest.json``),
optionally only those that started on or after ``--since`` (the date comes from
the ``calls`` table's ``date=`` partition, so no object is read to filter), and
of those only the ones whose transcript is missing or was made with another
analysis fingerprint (model weights, device and compute type, every decoding
option, library versions, detector parameters, speaker labels, analyzer version:
docs/analytics.md lists them). ``--force`` analyses every selected recording again.

Resumable: each recording's transcript is written last, after its table rows,
so an interrupted backfill started again skips what is done and continues.
(A ``--force`` run is resumed without ``--force``: its finished recordings
already carry the current fingerprint.) Idempotent like every analysis: the
same keys, the same bytes, never a duplicate row.

A recording that cannot be analysed is reported and skipped; a store that
stays unreachable aborts the run (rerun it later).

A batch job serves no ``/metrics``: it reports on stderr (a tqdm progress bar,
a log line per failure or retry, and the summary ``callrec analyzer --backfill``
prints from the :class:`BackfillReport`). The analyzer's counters are still
incremented, for a caller that embeds it in a scraped process.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from infra.store import ObjectStore
from schemas.layout import (
    RECORDINGS,
    TRANSCRIPT_NAME,
    manifest_key,
    parse_table_key,
    recording_of,
    table_prefix,
)
from schemas.manifest import recording_event
from workers.analyzer import metrics
from workers.analyzer.analysis import (
    AnalysisConfig,
    analysed_with,
    analyze_recording,
    fingerprint,
    load_manifest,
)
from workers.analyzer.errors import failure_reason, is_retriable
from workers.analyzer.transcribe import Transcriber

log = logging.getLogger(__name__)

STORE_RETRIES = 5


@dataclass
class BackfillReport:
    """What a backfill did."""

    selected: int = 0
    """Recordings in the archive that match ``since``."""
    analyzed: int = 0
    skipped: int = 0
    """Already analysed with the current fingerprint."""
    failed: dict[str, str] = field(default_factory=dict)
    """recording_id → reason, for recordings that could not be analysed."""


def archived_recordings(store: ObjectStore, since: dt.date | None = None) -> list[str]:
    """Ids of archived recordings (with a manifest) started on or after ``since``, sorted
    by date then id. A recording without a ``calls`` row is kept (its date is unknown)."""
    ids = sorted(filter(None, map(recording_of, store.list_keys(RECORDINGS))))
    dates: dict[str, str] = {}
    for key in store.list_keys(table_prefix("calls")):
        parts = parse_table_key(key)
        if parts is not None:
            dates[parts.recording_id] = parts.date
    if since is not None:
        ids = [i for i in ids if dates.get(i, "9999-12-31") >= since.isoformat()]
    return sorted(ids, key=lambda i: (dates.get(i, ""), i))


def backfill(
    store: ObjectStore,
    transcriber: Transcriber,
    config: AnalysisConfig,
    *,
    since: dt.date | None = None,
    force: bool = False,
    progress: bool = True,
) -> BackfillReport:
    """Analyse archived recordings; see the module docstring."""
    from tqdm import tqdm

    report = BackfillReport()
    ids = archived_recordings(store, since)
    report.selected = len(ids)
    transcripts = set(
        filter(None, (recording_of(k, TRANSCRIPT_NAME) for k in store.list_keys(RECORDINGS)))
    )
    wanted = fingerprint(transcriber, config)
    bar = tqdm(ids, unit="rec", desc="backfill", disable=not progress, dynamic_ncols=True)
    for rec_id in bar:
        if not force and rec_id in transcripts and analysed_with(store, rec_id) == wanted:
            report.skipped += 1
            metrics.RECORDINGS.labels("skipped").inc()
        elif (reason := _analyze_one(store, rec_id, transcriber, config)) is None:
            report.analyzed += 1
        else:
            report.failed[rec_id] = reason
        bar.set_postfix(analyzed=report.analyzed, skipped=report.skipped,
                        failed=len(report.failed), refresh=False)
    bar.close()
    return report


def _analyze_one(store: ObjectStore, rec_id: str, transcriber: Transcriber,
                 config: AnalysisConfig) -> str | None:
    """Analyse one recording; the failure reason, or None on success. Retries a store
    that is down a few times, then raises its error (the backfill stops)."""
    for attempt in range(STORE_RETRIES):
        began = time.perf_counter()
        try:
            manifest = load_manifest(store, manifest_key(rec_id), rec_id)
            event = recording_event(manifest, store.uri)
            result = analyze_recording(store, event, transcriber, config, force=True)
        except Exception as exc:
            reason = failure_reason(exc)
            metrics.FAILURES.labels(reason).inc()
            if is_retriable(exc):
                if attempt + 1 == STORE_RETRIES:
                    raise
                log.warning("%s: archive unavailable, retrying: %s", rec_id, exc)
                time.sleep(2**attempt)
                continue
            metrics.RECORDINGS.labels("failed").inc()
            log.error("%s: analysis failed (%s): %s", rec_id, reason, exc,
                      exc_info=reason == "internal")
            return reason
        metrics.RECORDINGS.labels("analyzed").inc()
        metrics.ANALYSIS_SECONDS.observe(time.perf_counter() - began)
        metrics.AUDIO_SECONDS.inc(result.audio_seconds)
        if result.real_time_factor is not None:
            metrics.REAL_TIME_FACTOR.observe(result.real_time_factor)
        return None
    raise AssertionError("unreachable")
