"""Retention: delete recordings older than the configured policy, unless on hold.

``callrec retention apply`` walks every recording with a manifest, works out
how long it is kept (``CALLREC_RETENTION_RULES``, first match on the ``calls``
row's ``direction``/``from_number``/``to_number`` when the table has them, else
``CALLREC_RETENTION_DAYS``; 0 keeps forever) from its start time, and deletes
the expired ones with their table files, the manifest last.

- Idempotent and resumable: a recording is found by its manifest, deleted last,
  so a run that stopped half-way is finished by the next; a recording already
  gone is simply not found.
- A recording on hold (a hold record or a legal hold on any object) is kept and
  reported as held.
- Object Lock retention that has not run out yet (the policy is shorter than the
  lock, or the clocks disagree) makes the delete impossible: the recording is
  reported as retained with the date, and nothing of it is deleted.
- ``dry_run`` reports what would go and deletes nothing.

Every deletion is appended to the audit trail (``retention.delete``). The audit
trail, hold records and tombstones are never deleted by retention.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from compliance.audit import AuditLog
from compliance.errors import ComplianceError, OnHoldError
from compliance.policy import RetentionPolicy
from compliance.recordings import (
    all_recordings,
    calls_row,
    delete_keys,
    load_manifest,
    now,
    recording_keys,
    refuse_if_locked,
)
from infra.store import ObjectLockedError, ObjectStore
from schemas.manifest import start_ns

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionDecision:
    recording_id: str
    call_id: str
    expires: dt.datetime | None
    """When it may go; None: kept forever."""
    outcome: str
    """``kept`` (not expired), ``deleted``, ``would_delete`` (dry run), ``held``,
    ``retained`` (Object Lock forbids it yet) or ``failed``."""
    detail: str = ""


@dataclass
class RetentionReport:
    decisions: list[RetentionDecision] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for d in self.decisions if d.outcome == outcome)


def apply_retention(
    store: ObjectStore,
    policy: RetentionPolicy,
    actor: str,
    address: str = "",
    *,
    dry_run: bool = False,
    at: dt.datetime | None = None,
    audit: AuditLog | None = None,
    progress: Callable[[RetentionDecision], None] | None = None,
) -> RetentionReport:
    """Apply ``policy`` to every recording (see the module docstring)."""
    at = at or now()
    audit = audit or AuditLog(store)
    report = RetentionReport()
    for rec_id in all_recordings(store):
        decision = _decide(store, rec_id, policy, at, actor, address, dry_run, audit)
        if decision is None:
            continue
        report.decisions.append(decision)
        if progress is not None:
            progress(decision)
    return report


def _decide(
    store: ObjectStore,
    rec_id: str,
    policy: RetentionPolicy,
    at: dt.datetime,
    actor: str,
    address: str,
    dry_run: bool,
    audit: AuditLog,
) -> RetentionDecision | None:
    manifest = load_manifest(store, rec_id)
    if manifest is None:
        return None  # deleted meanwhile, or unreadable (verify reports that)
    start = dt.datetime.fromtimestamp(start_ns(manifest) / 1e9, dt.UTC)
    row = calls_row(store, manifest) if policy.needs_rows else None
    expires = policy.expires(start, row)

    def decided(outcome: str, detail: str = "") -> RetentionDecision:
        return RetentionDecision(rec_id, manifest.call_id, expires, outcome, detail)

    if expires is None or at < expires:
        return decided("kept")
    keys = recording_keys(store, rec_id, manifest.date)
    try:
        refuse_if_locked(store, rec_id, keys, at, "deleted")
    except OnHoldError as exc:
        return decided("held", str(exc))
    except ComplianceError as exc:
        return decided("retained", str(exc))
    if dry_run:
        return decided("would_delete")
    try:
        delete_keys(store, keys)
    except ObjectLockedError as exc:
        return decided("failed", str(exc))
    audit.append(
        actor=actor,
        address=address,
        action="retention.delete",
        target=manifest.call_id,
        detail={"recording_id": rec_id, "expired": expires.isoformat(), "objects": str(len(keys))},
    )
    log.info(
        "call_id=%s: %s deleted by retention (expired %s)",
        manifest.call_id,
        rec_id,
        expires.isoformat(),
    )
    return decided("deleted")
