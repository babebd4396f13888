"""Verify the archive: every object against its manifest, the tables, the locks.

What is checked, for each recording in scope (all, a date range, or given ids):

- ``missing``: an object the manifest lists is not there; a manifest is not
  there while the recording's other objects are; a transcript is not there while
  the analyzer's ``segments``/``metrics`` rows are (it is written after them).
- ``mismatch``: an object's SHA-256 or size differs from the manifest's; a
  transcript that names another WAV hash or recording.
- ``unreadable``: a manifest, transcript or table file that does not parse.
- ``unclaimed``: an object under ``recordings/`` or ``tables/`` that no manifest
  lists and that is none of its recording's derived objects (transcript,
  ``segments`` and ``metrics`` files).
- ``calls_mismatch``: the recording's ``calls`` row disagrees with its manifest
  (call id, part, WAV hash and size, keys, start, duration, completeness).
- ``lock_mismatch``: an object's Object Lock retention or legal hold differs from
  the configured policy (``CALLREC_S3_OBJECT_LOCK_*``, ``CALLREC_S3_LEGAL_HOLD``)
  or from the recording's hold record. Retention is not checked on a local
  archive, which has none.
- ``erasure_incomplete``: a recording with a tombstone still has objects.

An erased recording (tombstone, nothing left) is no problem: the report lists it.

Hashing streams each object in 1 MiB blocks (memory: workers x 1 MiB) on a
thread pool: hashlib and the store's I/O release the GIL, so threads run in
parallel. A recording being written at that moment (WAV before manifest) reads
as a missing manifest; the CronJob runs when that is rare, and a rerun settles it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from compliance.erasure import list_tombstones
from compliance.holds import active_holds
from compliance.policy import LockPolicy
from compliance.recordings import iso, now
from infra.store import LocalStore, ObjectNotFoundError, ObjectStore, StoreError
from schemas import layout
from schemas.compliance import CONTENT_TYPE, VERIFY_STATUS_KEY, VerifyStatus, encode
from schemas.layout import (
    RECORDINGS,
    manifest_key,
    parse_table_key,
    recording_prefix,
    table_prefix,
    transcript_key,
)
from schemas.manifest import Manifest, ObjectEntry, decode_manifest, start_ns
from schemas.tables import PARTITION_COLUMN, TABLES, table_key

log = logging.getLogger(__name__)

BLOCK = 1024 * 1024
RETENTION_SLACK = dt.timedelta(hours=1)
"""Clock difference tolerated between a recording's start and its objects' retain-until."""
DERIVED_TABLES = tuple(name for name in TABLES if name != "calls")
"""Table files the analyzer writes, one per recording (no manifest lists them: it is never
rewritten); the recorder's ``calls`` file is listed by the manifest."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in the archive."""

    kind: str
    """``missing``, ``mismatch``, ``unreadable``, ``unclaimed``, ``calls_mismatch``,
    ``lock_mismatch`` or ``erasure_incomplete``."""
    key: str
    """The object concerned."""
    recording_id: str
    """Its recording; empty when it belongs to none."""
    detail: str


@dataclass
class VerifyReport:
    """What :func:`verify_archive` found; :func:`verify_recording` returns one too."""

    scope: str = "all"
    recordings: int = 0
    """Recordings with a manifest that were checked."""
    objects: int = 0
    """Objects hashed."""
    bytes: int = 0
    """Bytes hashed."""
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)
    """Recording ids erased cleanly (a tombstone and nothing left)."""
    held: list[str] = field(default_factory=list)
    """Recording ids in scope under an active legal hold."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["kinds"] = self.kinds()
        return data


VerifyResult = VerifyReport
"""The result for one recording (:func:`verify_recording`)."""


@dataclass
class _Recording:
    rec_id: str
    keys: set[str] = field(default_factory=set)
    """Existing objects of the recording: its directory and table files named after it."""


class _Run:
    """One verification: collects problems from the worker threads."""

    def __init__(
        self,
        store: ObjectStore,
        policy: LockPolicy,
        held: set[str],
        at: dt.datetime,
        advance: Callable[[int], None],
    ) -> None:
        self.store = store
        self.policy = policy
        self.held = held
        self.at = at
        self.advance = advance
        self.retention_checked = not isinstance(store, LocalStore)
        self._lock = threading.Lock()
        self.problems: list[Problem] = []
        self.objects = 0
        self.bytes = 0

    def problem(self, kind: str, key: str, rec_id: str, detail: str) -> None:
        with self._lock:
            self.problems.append(Problem(kind, key, rec_id, detail))

    def hash_object(self, rec_id: str, entry: ObjectEntry) -> None:
        digest, size = hashlib.sha256(), 0
        try:
            for block in self.store.iter_bytes(entry.key, BLOCK):
                digest.update(block)
                size += len(block)
                self.advance(len(block))
        except ObjectNotFoundError:
            self.problem("missing", entry.key, rec_id, "listed by the manifest, not in the archive")
            return
        with self._lock:
            self.objects += 1
            self.bytes += size
        if size != entry.size or digest.hexdigest() != entry.sha256:
            self.problem(
                "mismatch",
                entry.key,
                rec_id,
                f"sha256 {digest.hexdigest()} ({size} bytes), manifest says "
                f"{entry.sha256} ({entry.size} bytes)",
            )

    def check_lock(self, rec_id: str, key: str, start: dt.datetime | None) -> None:
        try:
            lock = self.store.lock_state(key)
        except ObjectNotFoundError:
            return
        want_hold = self.policy.legal_hold or rec_id in self.held
        if lock.legal_hold != want_hold:
            why = (
                "the recording is on legal hold"
                if rec_id in self.held
                else "CALLREC_S3_LEGAL_HOLD is on"
                if self.policy.legal_hold
                else "neither the policy nor a hold record asks for one"
            )
            self.problem(
                "lock_mismatch",
                key,
                rec_id,
                f"legal hold is {'on' if lock.legal_hold else 'off'}; {why}",
            )
        if not self.retention_checked:
            return
        if lock.mode != self.policy.mode:
            self.problem(
                "lock_mismatch",
                key,
                rec_id,
                f"Object Lock mode {lock.mode or 'none'}, policy {self.policy.mode or 'none'}",
            )
        elif (
            self.policy.mode
            and start is not None
            and self.policy.days > 0
            and (
                lock.retain_until is None
                or lock.retain_until < start + dt.timedelta(days=self.policy.days) - RETENTION_SLACK
            )
        ):
            self.problem(
                "lock_mismatch",
                key,
                rec_id,
                f"retained until {lock.retain_until}, policy "
                f"{self.policy.days} days from {start.isoformat()}",
            )

    def check_calls_row(self, manifest: Manifest) -> None:
        import pyarrow.parquet as pq

        key = table_key("calls", manifest.date, manifest.recording_id)
        try:
            rows = pq.read_table(io.BytesIO(self.store.get_bytes(key))).to_pylist()
        except (ObjectNotFoundError, FileNotFoundError):
            return  # reported as missing by the hash of the manifest's entry
        except Exception as exc:  # pyarrow's errors have no common root
            self.problem("unreadable", key, manifest.recording_id, f"not Parquet: {exc}")
            return
        row = next((r for r in rows if r.get("recording_id") == manifest.recording_id), None)
        if row is None:
            self.problem(
                "calls_mismatch", key, manifest.recording_id, "no calls row for the recording"
            )
            return
        wav = next((o for o in manifest.objects if o.key.endswith("/audio.wav")), None)
        start = dt.datetime.fromtimestamp(start_ns(manifest) / 1e9, dt.UTC)
        expected: dict[str, Any] = {
            "call_id": manifest.call_id,
            "part": manifest.part,
            "manifest_key": manifest_key(manifest.recording_id),
            "duration_ms": manifest.duration_ms,
            "complete": manifest.complete,
        }
        if wav is not None:
            expected.update(wav_sha256=wav.sha256, wav_bytes=wav.size, recording_key=wav.key)
        differ = [
            f"{name}={row.get(name)!r} (manifest: {value!r})"
            for name, value in expected.items()
            if row.get(name) != value
        ]
        row_start = row.get("start_time")
        if isinstance(row_start, dt.datetime) and abs(row_start - start) > dt.timedelta(
            milliseconds=1
        ):
            differ.append(f"start_time={row_start.isoformat()} (manifest: {start.isoformat()})")
        if differ:
            self.problem("calls_mismatch", key, manifest.recording_id, "; ".join(differ))

    def check_transcript(self, manifest: Manifest) -> None:
        key = transcript_key(manifest.recording_id)
        try:
            doc = msgspec.json.decode(self.store.get_bytes(key))
        except (ObjectNotFoundError, FileNotFoundError):
            return
        except msgspec.DecodeError as exc:
            self.problem("unreadable", key, manifest.recording_id, f"not JSON: {exc}")
            return
        wav = next((o for o in manifest.objects if o.key.endswith("/audio.wav")), None)
        if not isinstance(doc, dict) or doc.get("recording_id") != manifest.recording_id:
            self.problem(
                "mismatch", key, manifest.recording_id, "the transcript names another recording"
            )
        elif wav is not None and doc.get("wav_sha256") not in (None, wav.sha256):
            self.problem(
                "mismatch",
                key,
                manifest.recording_id,
                f"the transcript was made from WAV {doc.get('wav_sha256')}, the "
                f"manifest lists {wav.sha256}",
            )


def verify_archive(
    store: ObjectStore,
    *,
    policy: LockPolicy | None = None,
    recording_ids: Collection[str] | None = None,
    dates: tuple[dt.date, dt.date] | None = None,
    workers: int = 8,
    progress: bool = False,
    scope: str = "",
) -> VerifyReport:
    """Verify the recordings in scope: ``recording_ids``, or those with table files in
    the ``dates`` range (inclusive), or everything (both None); see the module docstring.
    A date-limited run finds recordings by their table files: one that lost every table
    file is found only by a full run."""
    from tqdm import tqdm

    began = now()
    policy = policy or LockPolicy()
    whole = recording_ids is None and dates is None
    recordings, loose = _collect(store, recording_ids, dates)
    stones = {s.recording_id: s for s in list_tombstones(store)}
    held = active_holds(store)
    report = VerifyReport(scope=scope or ("all" if whole else "selected"))
    for key in loose:
        report.problems.append(Problem("unclaimed", key, "", "no recording owns this key"))

    manifests: dict[str, Manifest] = {}
    for rec in recordings.values():
        mkey = manifest_key(rec.rec_id)
        if rec.rec_id in stones:
            if rec.keys:
                report.problems.extend(
                    Problem(
                        "erasure_incomplete",
                        k,
                        rec.rec_id,
                        "erased (tombstone) but still present: run callrec erase again",
                    )
                    for k in sorted(rec.keys)
                )
            continue
        if mkey not in rec.keys:
            if any(k.startswith(RECORDINGS) for k in rec.keys):
                report.problems.append(
                    Problem(
                        "missing",
                        mkey,
                        rec.rec_id,
                        f"no manifest; unclaimed: {', '.join(sorted(rec.keys))}",
                    )
                )
            else:
                report.problems.extend(
                    Problem("unclaimed", k, rec.rec_id, "no manifest claims it")
                    for k in sorted(rec.keys)
                )
            continue
        try:
            manifests[rec.rec_id] = decode_manifest(store.get_bytes(mkey))
        except msgspec.DecodeError as exc:
            report.problems.append(
                Problem("unreadable", mkey, rec.rec_id, f"manifest does not parse: {exc}")
            )
    wanted = set(recording_ids) if recording_ids is not None else None
    report.erased = sorted(
        r
        for r, stone in stones.items()
        if not (recordings.get(r) and recordings[r].keys)
        and (wanted is None or r in wanted)
        and (dates is None or str(dates[0]) <= stone.date <= str(dates[1]))
    )

    total = sum(
        o.size
        for m in manifests.values()
        for o in m.objects
        if o.key in recordings[m.recording_id].keys
    )
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="verify",
        disable=not progress,
        dynamic_ncols=True,
    )
    bar_lock = threading.Lock()

    def advance(n: int) -> None:
        if progress:
            with bar_lock:
                bar.update(n)

    run = _Run(store, policy, held, began, advance)
    tasks: list[Callable[[], None]] = []
    for rec_id, manifest in manifests.items():
        rec = recordings[rec_id]
        report.held += [rec_id] if rec_id in held else []
        tasks += _plan(run, manifest, rec)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        for future in [pool.submit(task) for task in tasks]:
            try:
                future.result()
            except StoreError as exc:
                report.problems.append(Problem("unreadable", "", "", f"store error: {exc}"))
    bar.close()
    report.recordings = len(manifests)
    report.objects, report.bytes = run.objects, run.bytes
    report.problems += run.problems
    report.problems.sort(key=lambda p: (p.recording_id, p.key, p.kind))
    report.seconds = (now() - began).total_seconds()
    return report


def _plan(run: _Run, manifest: Manifest, rec: _Recording) -> list[Callable[[], None]]:
    """The checks of one recording: its problems found from the listing right away, the
    rest (hashes, locks, rows) as tasks for the pool."""
    rec_id = manifest.recording_id
    start = dt.datetime.fromtimestamp(start_ns(manifest) / 1e9, dt.UTC)
    claimed = {o.key: o for o in manifest.objects}
    derived = {
        transcript_key(rec_id),
        *(table_key(t, manifest.date, rec_id) for t in DERIVED_TABLES),
    }
    tasks: list[Callable[[], None]] = []
    for key, entry in claimed.items():
        if key in rec.keys:
            tasks.append(functools.partial(run.hash_object, rec_id, entry))
        else:
            run.problem("missing", key, rec_id, "listed by the manifest, not in the archive")
    known = {*claimed, *derived, manifest_key(rec_id)}
    for key in sorted(rec.keys - known):
        run.problem("unclaimed", key, rec_id, "not listed by the recording's manifest")
    tables_present = [k for k in derived if k.startswith("tables/") and k in rec.keys]
    transcript = transcript_key(rec_id)
    if tables_present and transcript not in rec.keys:
        run.problem(
            "missing",
            transcript,
            rec_id,
            f"no transcript, but the analyzer's rows exist ({', '.join(tables_present)})"
            ": removed, or the analysis was interrupted",
        )
    if transcript in rec.keys:
        for key in sorted(derived - {transcript} - rec.keys):
            run.problem("missing", key, rec_id, "the transcript exists, its table rows do not")
        tasks.append(lambda: run.check_transcript(manifest))
    tasks.append(lambda: run.check_calls_row(manifest))
    for key in sorted(rec.keys & known):
        tasks.append(functools.partial(run.check_lock, rec_id, key, start))
    return tasks


def _collect(
    store: ObjectStore, recording_ids: Iterable[str] | None, dates: tuple[dt.date, dt.date] | None
) -> tuple[dict[str, _Recording], list[str]]:
    """The recordings in scope with their existing keys, and keys that belong to none."""
    recordings: dict[str, _Recording] = {}
    loose: list[str] = []

    def add(rec_id: str, key: str) -> None:
        recordings.setdefault(rec_id, _Recording(rec_id)).keys.add(key)

    def add_recording_dir(key: str) -> None:
        rest = key[len(RECORDINGS) :]
        rec_id, sep, _ = rest.partition("/")
        if sep and rec_id:
            add(rec_id, key)
        else:
            loose.append(key)

    def add_table(key: str) -> None:
        parsed = parse_table_key(key)
        if parsed is None:
            loose.append(key)
        else:
            add(parsed.recording_id, key)

    if recording_ids is not None:
        for rec_id in dict.fromkeys(recording_ids):
            recordings.setdefault(rec_id, _Recording(rec_id))
            for key in store.list_keys(recording_prefix(rec_id)):
                add(rec_id, key)
            manifest = None
            if manifest_key(rec_id) in recordings[rec_id].keys:
                try:
                    manifest = decode_manifest(store.get_bytes(manifest_key(rec_id)))
                except msgspec.DecodeError:
                    manifest = None
            if manifest is not None:
                for name in TABLES:
                    key = table_key(name, manifest.date, rec_id)
                    if store.exists(key):
                        add(rec_id, key)
        return recordings, loose
    if dates is None:
        for key in store.list_keys(RECORDINGS):
            add_recording_dir(key)
        for key in store.list_keys(layout.TABLES):
            add_table(key)
        return recordings, loose
    day, last = dates
    while day <= last:
        for name in TABLES:
            for key in store.list_keys(f"{table_prefix(name)}{PARTITION_COLUMN}={day}/"):
                add_table(key)
        day += dt.timedelta(days=1)
    for rec_id in list(recordings):
        for key in store.list_keys(recording_prefix(rec_id)):
            add(rec_id, key)
    return recordings, loose


def verify_recording(
    store: ObjectStore, recording_id: str, policy: LockPolicy | None = None, workers: int = 4
) -> VerifyResult:
    """Verify one recording (or confirm it was erased cleanly)."""
    return verify_archive(
        store, policy=policy, recording_ids=[recording_id], workers=workers, scope=recording_id
    )


def record_status(store: ObjectStore, report: VerifyReport) -> VerifyStatus:
    """Write ``verify/last.json`` (docs/compliance.md: what alerts on it)."""
    status = VerifyStatus(
        finished_at=iso(now()),
        scope=report.scope,
        recordings=report.recordings,
        objects=report.objects,
        bytes=report.bytes,
        problems=len(report.problems),
        kinds=report.kinds(),
    )
    store.put_bytes(VERIFY_STATUS_KEY, encode(status), CONTENT_TYPE)
    return status
