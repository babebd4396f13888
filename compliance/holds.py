"""Legal holds: keep chosen recordings whatever the retention policy says.

A hold on a recording is (1) the S3 Object Lock legal hold on every one of its
objects (WAV, manifest, transcript, table files) — on a local archive the hold
marker file every delete honours — and (2) a record ``holds/<recording_id>.json``
(who, when, why) that ``callrec hold list`` and the ``holds`` view of
``callrec query`` show. Every change is appended to the audit trail.

Order, so that an interrupted command leaves the recording protected:
setting holds the objects first, then writes the record; clearing marks the
record cleared first, then lifts the objects' holds. Running either again
finishes it. Objects written after the hold (a transcript the analyzer adds
later) are not held until the hold is set again; ``callrec verify`` reports
them. With ``CALLREC_S3_LEGAL_HOLD`` (every object held by policy), clearing
only updates the record and the objects stay held.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from compliance.audit import AuditLog
from compliance.recordings import (
    iso,
    load_hold,
    load_manifest,
    now,
    recording_keys,
)
from infra.store import ObjectNotFoundError, ObjectStore
from schemas.compliance import (
    CONTENT_TYPE,
    HOLDS_PREFIX,
    HoldRecord,
    decode_hold,
    encode,
    hold_key,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HoldChange:
    """What one ``set_hold``/``clear_hold`` did to one recording."""

    recording_id: str
    objects: int
    """Objects whose legal hold was set (or lifted)."""
    record: HoldRecord


@dataclass
class HoldReport:
    changed: list[HoldChange] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Recording ids that have no manifest in the archive (nothing done)."""


def set_hold(
    store: ObjectStore,
    recording_ids: Iterable[str],
    reason: str,
    actor: str,
    address: str = "",
    audit: AuditLog | None = None,
) -> HoldReport:
    """Put a legal hold on every object of each recording and record it."""
    if not reason.strip():
        raise ValueError("a legal hold needs a reason")
    audit = audit or AuditLog(store)
    report = HoldReport()
    for rec_id in dict.fromkeys(recording_ids):
        manifest = load_manifest(store, rec_id)
        if manifest is None:
            report.missing.append(rec_id)
            continue
        keys = recording_keys(store, rec_id, manifest.date)
        for key in keys:
            store.set_legal_hold(key, True)
        record = HoldRecord(
            recording_id=rec_id,
            call_id=manifest.call_id,
            active=True,
            reason=reason,
            set_by=actor,
            set_at=iso(now()),
        )
        store.put_bytes(hold_key(rec_id), encode(record), CONTENT_TYPE)
        audit.append(
            actor=actor,
            address=address,
            action="hold.set",
            target=manifest.call_id,
            detail={"recording_id": rec_id, "reason": reason, "objects": str(len(keys))},
        )
        log.info(
            "call_id=%s: legal hold set on %s (%d objects)", manifest.call_id, rec_id, len(keys)
        )
        report.changed.append(HoldChange(rec_id, len(keys), record))
    return report


def clear_hold(
    store: ObjectStore,
    recording_ids: Iterable[str],
    reason: str,
    actor: str,
    address: str = "",
    audit: AuditLog | None = None,
    policy_hold: bool = False,
) -> HoldReport:
    """Lift the legal hold of each recording (``policy_hold``: the policy holds every
    object, so only the record changes). A recording never held is reported missing."""
    audit = audit or AuditLog(store)
    report = HoldReport()
    for rec_id in dict.fromkeys(recording_ids):
        held = load_hold(store, rec_id)
        manifest = load_manifest(store, rec_id)
        if held is None and manifest is None:
            report.missing.append(rec_id)
            continue
        call_id = held.call_id if held else manifest.call_id if manifest else ""
        record = (
            msgspec.structs.replace(
                held, active=False, cleared_by=actor, cleared_at=iso(now()), clear_reason=reason
            )
            if held is not None
            else None
        )
        if record is not None:
            store.put_bytes(hold_key(rec_id), encode(record), CONTENT_TYPE)
        keys = recording_keys(store, rec_id, manifest.date if manifest else None)
        lifted = 0
        if not policy_hold:
            for key in keys:
                try:
                    store.set_legal_hold(key, False)
                except ObjectNotFoundError:
                    continue
                lifted += 1
        audit.append(
            actor=actor,
            address=address,
            action="hold.clear",
            target=call_id,
            detail={"recording_id": rec_id, "reason": reason, "objects": str(lifted)},
        )
        log.info("call_id=%s: legal hold cleared on %s (%d objects)", call_id, rec_id, lifted)
        report.changed.append(
            HoldChange(
                rec_id,
                lifted,
                record
                or HoldRecord(
                    recording_id=rec_id,
                    call_id=call_id,
                    active=False,
                    reason="",
                    set_by="",
                    set_at="",
                    cleared_by=actor,
                    cleared_at=iso(now()),
                    clear_reason=reason,
                ),
            )
        )
    return report


def list_holds(store: ObjectStore, include_cleared: bool = False) -> list[HoldRecord]:
    """The hold records (active ones only unless ``include_cleared``), by recording id."""
    records = []
    for key in store.list_keys(HOLDS_PREFIX):
        try:
            record = decode_hold(store.get_bytes(key))
        except (msgspec.DecodeError, ObjectNotFoundError):
            continue
        if record.active or include_cleared:
            records.append(record)
    return sorted(records, key=lambda r: r.recording_id)


def active_holds(store: ObjectStore) -> set[str]:
    """Recording ids under an active hold."""
    return {r.recording_id for r in list_holds(store)}
