"""Erasure (GDPR Art. 17, CCPA): remove one call's audio, transcript, manifest and rows.

For each recording of the call, in this order:

1. Refuse, deleting nothing, when any recording of the call is on legal hold or
   any object is under an unexpired Object Lock retention (COMPLIANCE mode
   cannot be shortened by anyone; GOVERNANCE is not bypassed by callrec). The
   message names the date the retention ends (docs/compliance.md, "Erasure and
   WORM").
2. Write the tombstone ``tombstones/<recording_id>.json``: who, when, why, and
   the SHA-256 and size of every object about to go — no audio, no text, no
   phone number. ``callrec verify`` accepts an erased recording by it.
3. Delete the table files, then the WAV and transcript, the manifest last
   (every S3 version), and rewrite any table file that holds rows of several
   recordings without this one's rows (atomically: the store replaces the
   object whole). A crash mid-way is finished by running the command again:
   the tombstone is found and the rest deleted.
4. Append ``erase`` (or ``erase`` with outcome ``denied``) to the audit trail.

The call's own rows go too: the control plane's ``control`` table keeps one row
per call it saw (numbers, direction, tag), recorded or not. :func:`erase_call` and
:func:`erase_number` delete those files (``schemas.tables.CALL_TABLES``), so a
person's number leaves the archive even for calls that were never recorded.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from compliance.audit import AuditLog
from compliance.errors import ComplianceError, NoNumbersError, NotFoundError
from compliance.recordings import (
    delete_keys,
    iso,
    load_manifest,
    now,
    recording_keys,
    recordings_of_call,
    refuse_if_locked,
)
from infra.store import ObjectExistsError, ObjectNotFoundError, ObjectStore
from schemas.compliance import (
    CONTENT_TYPE,
    TOMBSTONES_PREFIX,
    ErasedObject,
    Tombstone,
    decode_tombstone,
    encode,
    recording_of_record,
    tombstone_key,
)
from schemas.layout import manifest_key, parse_table_key, table_prefix
from schemas.tables import CALL_TABLES, PARTITION_COLUMN, TABLES, recording_id

log = logging.getLogger(__name__)


@dataclass
class ErasureReport:
    """What :func:`erase_recordings` did."""

    erased: list[Tombstone] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    """Keys deleted."""
    rewritten: list[str] = field(default_factory=list)
    """Shared table files rewritten without the erased rows."""
    call_rows: list[str] = field(default_factory=list)
    """Files of the per-call tables (the control plane's row of each call) deleted."""


def sha256_of(store: ObjectStore, key: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for block in store.iter_bytes(key):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def load_tombstone(store: ObjectStore, rec_id: str) -> Tombstone | None:
    try:
        return decode_tombstone(store.get_bytes(tombstone_key(rec_id)))
    except (ObjectNotFoundError, FileNotFoundError, msgspec.DecodeError):
        return None


def list_tombstones(store: ObjectStore) -> list[Tombstone]:
    stones = []
    for key in store.list_keys(TOMBSTONES_PREFIX):
        if recording_of_record(key) is None:
            continue
        try:
            stones.append(decode_tombstone(store.get_bytes(key)))
        except (msgspec.DecodeError, ObjectNotFoundError):
            continue
    return stones


def erase_call(
    store: ObjectStore,
    call_id: str,
    reason: str,
    actor: str,
    address: str = "",
    audit: AuditLog | None = None,
) -> ErasureReport:
    """Erase every recording of ``call_id`` and the call's own rows (module docstring)."""
    rec_ids = recordings_of_call(store, call_id)
    stones = [s for s in list_tombstones(store) if s.call_id == call_id]
    # An interrupted erasure: the tombstone is there, maybe some objects still are.
    rec_ids += [s.recording_id for s in stones if s.recording_id not in rec_ids]
    if not rec_ids and not call_row_keys(store, {call_id}):
        raise NotFoundError(f"no recording of call {call_id!r} in the archive")
    return _erase_calls(store, rec_ids, {call_id}, reason, actor, address, audit)


def erase_number(
    store: ObjectStore,
    number: str,
    reason: str,
    actor: str,
    address: str = "",
    audit: AuditLog | None = None,
) -> ErasureReport:
    """Erase every recording and every call row where ``number`` is the caller or callee."""
    calls = calls_by_number(store, number)
    try:
        rec_ids = recordings_by_number(store, number)
    except NoNumbersError:
        if not calls:
            raise
        rec_ids = []
    if not rec_ids and not calls:
        raise NotFoundError(f"no call with number {number} in the archive")
    return _erase_calls(store, rec_ids, calls, reason, actor, address, audit)


def _erase_calls(
    store: ObjectStore,
    rec_ids: list[str],
    call_ids: set[str],
    reason: str,
    actor: str,
    address: str,
    audit: AuditLog | None,
) -> ErasureReport:
    """The recordings, then the per-call rows of their calls and of ``call_ids``."""
    report = (erase_recordings(store, rec_ids, reason, actor, address, audit) if rec_ids
              else ErasureReport())
    keys = call_row_keys(store, call_ids | {s.call_id for s in report.erased})
    report.call_rows = _erase_call_rows(store, keys, reason, actor, address, audit)
    return report


def call_row_keys(store: ObjectStore, call_ids: set[str]) -> list[str]:
    """Files of the per-call tables that belong to ``call_ids`` (named for the call)."""
    wanted = {recording_id(call_id, 0) for call_id in call_ids}
    keys = []
    for name in CALL_TABLES:
        for key in store.list_keys(table_prefix(name)):
            parsed = parse_table_key(key)
            if parsed is not None and parsed.recording_id in wanted:
                keys.append(key)
    return keys


def calls_by_number(store: ObjectStore, number: str) -> set[str]:
    """Call ids whose per-call row has ``number`` as ``from_number`` or ``to_number``."""
    import pyarrow.parquet as pq

    found: set[str] = set()
    for name in CALL_TABLES:
        for key in store.list_keys(table_prefix(name)):
            if parse_table_key(key) is None:
                continue
            try:
                table = pq.read_table(io.BytesIO(store.get_bytes(key)))
            except (ObjectNotFoundError, OSError):
                continue
            columns = [c for c in ("from_number", "to_number") if c in table.column_names]
            if "call_id" not in table.column_names or not columns:
                continue
            for row in table.select(["call_id", *columns]).to_pylist():
                if any(row[c] == number for c in columns):
                    found.add(row["call_id"])
    return found


def _erase_call_rows(
    store: ObjectStore,
    keys: list[str],
    reason: str,
    actor: str,
    address: str,
    audit: AuditLog | None,
) -> list[str]:
    if not keys:
        return []
    deleted = delete_keys(store, keys)
    (audit or AuditLog(store)).append(
        actor=actor, address=address, action="erase", target="call rows",
        detail={"reason": reason, "files": str(len(keys))},
    )
    log.info("%d call rows erased", len(keys))
    return deleted


def erase_recordings(
    store: ObjectStore,
    recording_ids: Iterable[str],
    reason: str,
    actor: str,
    address: str = "",
    audit: AuditLog | None = None,
) -> ErasureReport:
    """Erase each recording; refuse them all, deleting nothing, if any is held or retained."""
    if not reason.strip():
        raise ValueError("an erasure needs a reason (e.g. the request's reference)")
    audit = audit or AuditLog(store)
    at = now()
    plans: list[tuple[str, str, str, list[str]]] = []  # (rec_id, call_id, date, keys)
    for rec_id in dict.fromkeys(recording_ids):
        manifest = load_manifest(store, rec_id)
        stone = load_tombstone(store, rec_id)
        if manifest is not None:
            call_id, date = manifest.call_id, manifest.date
        elif stone is not None:
            call_id, date = stone.call_id, stone.date
        else:
            raise NotFoundError(f"no recording {rec_id!r} in the archive")
        keys = recording_keys(store, rec_id, date)
        try:
            refuse_if_locked(store, rec_id, keys, at, "erased")
        except ComplianceError as exc:
            audit.append(
                actor=actor,
                address=address,
                action="erase",
                target=call_id,
                outcome="denied",
                detail={"recording_id": rec_id, "reason": reason, "refused": str(exc)},
            )
            raise
        plans.append((rec_id, call_id, date, keys))

    report = ErasureReport()
    for rec_id, call_id, date, keys in plans:
        stone = load_tombstone(store, rec_id) or _write_tombstone(
            store, rec_id, call_id, date, keys, reason, actor
        )
        report.rewritten += _rewrite_shared_files(store, rec_id, date)
        report.deleted += delete_keys(store, keys)
        report.erased.append(stone)
        audit.append(
            actor=actor,
            address=address,
            action="erase",
            target=call_id,
            detail={"recording_id": rec_id, "reason": reason, "objects": str(len(stone.objects))},
        )
        log.info("call_id=%s: %s erased (%d objects)", call_id, rec_id, len(keys))
    return report


def _write_tombstone(
    store: ObjectStore,
    rec_id: str,
    call_id: str,
    date: str,
    keys: list[str],
    reason: str,
    actor: str,
) -> Tombstone:
    manifest = load_manifest(store, rec_id)
    known = {o.key: o for o in manifest.objects} if manifest else {}
    objects = []
    for key in sorted(keys):
        if key in known:
            objects.append(ErasedObject(key=key, sha256=known[key].sha256, size=known[key].size))
            continue
        try:
            sha, size = sha256_of(store, key)
        except ObjectNotFoundError:
            continue
        objects.append(ErasedObject(key=key, sha256=sha, size=size))
    stone = Tombstone(
        recording_id=rec_id,
        call_id=call_id,
        date=date,
        erased_by=actor,
        erased_at=iso(now()),
        reason=reason,
        objects=objects,
    )
    try:
        store.put_new(tombstone_key(rec_id), encode(stone), CONTENT_TYPE)
    except ObjectExistsError:  # another run was first: its tombstone stands
        return load_tombstone(store, rec_id) or stone
    return stone


def _rewrite_shared_files(store: ObjectStore, rec_id: str, date: str) -> list[str]:
    """Table files of the day that are not one recording's own (a compacted file) and
    hold rows of ``rec_id``: rewritten without them (or deleted when nothing is left)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rewritten = []
    own: dict[str, bool] = {}
    for name in TABLES:
        for key in store.list_keys(f"{table_prefix(name)}{PARTITION_COLUMN}={date}/"):
            parsed = parse_table_key(key)
            if parsed is None or parsed.recording_id == rec_id:
                continue
            other = parsed.recording_id
            if other not in own:
                own[other] = store.exists(manifest_key(other))
            if own[other]:
                continue  # one recording's own file: holds only its rows
            data = store.get_bytes(key)
            table = pq.read_table(io.BytesIO(data))
            if "recording_id" not in table.column_names:
                continue
            keep = pc.not_equal(table["recording_id"], rec_id)
            kept = table.filter(keep)
            if kept.num_rows == table.num_rows:
                continue
            if kept.num_rows == 0:
                store.delete(key)
            else:
                out = io.BytesIO()
                pq.write_table(kept, out, compression="zstd")
                store.put_bytes(key, out.getvalue(), "application/vnd.apache.parquet")
            rewritten.append(key)
    return rewritten


def recordings_by_number(store: ObjectStore, number: str) -> list[str]:
    """Recording ids whose ``calls`` row has ``number`` as ``from_number`` or
    ``to_number``; :class:`NoNumbersError` when no calls row has a number (files written
    before the columns existed, or recordings made without the control plane)."""
    import pyarrow.parquet as pq

    found: list[str] = []
    any_numbers = False
    for key in store.list_keys(table_prefix("calls")):
        if parse_table_key(key) is None:
            continue
        try:
            table = pq.read_table(io.BytesIO(store.get_bytes(key)))
        except (ObjectNotFoundError, OSError):
            continue
        columns = [c for c in ("from_number", "to_number") if c in table.column_names]
        if not columns:
            continue
        for row in table.select(["recording_id", *columns]).to_pylist():
            any_numbers = any_numbers or any(row[c] is not None for c in columns)
            if any(row[c] == number for c in columns):
                found.append(row["recording_id"])
    if not any_numbers:
        raise NoNumbersError(
            "the calls table has no from_number/to_number (archives written before, or "
            "without, the control plane): erase by --call-id instead"
        )
    return sorted(set(found))
