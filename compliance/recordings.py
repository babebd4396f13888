"""A recording's objects in the archive: finding them, their locks, deleting them.

Shared by holds, retention, erasure, verify and export. A recording is the
objects under ``recordings/<id>/`` (WAV, manifest, transcript) and its one file
per table (``tables/<table>/date=<day>/<id>.parquet``), see docs/formats.md.
"""

from __future__ import annotations

import datetime as dt
import getpass
import io
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from compliance.errors import (
    NotFoundError,
    OnHoldError,
    RetainedError,
)
from infra.store import ObjectLockedError, ObjectNotFoundError, ObjectStore
from schemas.compliance import HoldRecord, decode_hold, hold_key
from schemas.layout import (
    MANIFEST_NAME,
    RECORDINGS,
    manifest_key,
    recording_of,
    recording_prefix,
)
from schemas.manifest import Manifest, decode_manifest
from schemas.tables import TABLES, recording_id, table_key

log = logging.getLogger(__name__)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def cli_actor() -> tuple[str, str]:
    """(actor, address) of a command run from a shell: ``cli:<os user>``, the host name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}", socket.gethostname()


def load_manifest(store: ObjectStore, rec_id: str) -> Manifest | None:
    """The recording's manifest; None when it is missing or unreadable."""
    try:
        return decode_manifest(store.get_bytes(manifest_key(rec_id)))
    except (ObjectNotFoundError, FileNotFoundError, msgspec.DecodeError):
        return None


def load_hold(store: ObjectStore, rec_id: str) -> HoldRecord | None:
    try:
        return decode_hold(store.get_bytes(hold_key(rec_id)))
    except (ObjectNotFoundError, FileNotFoundError, msgspec.DecodeError):
        return None


def recordings_of_call(store: ObjectStore, call_id: str) -> list[str]:
    """The ids of every archived recording (part) of ``call_id``, in part order."""
    base = recording_id(call_id, 0)[: -len("0")]
    found: dict[int, str] = {}
    for key in store.list_keys(recording_prefix(base)[:-1]):
        rec_id = recording_of(key)
        if rec_id is None:
            continue
        manifest = load_manifest(store, rec_id)
        if manifest is not None and manifest.call_id == call_id:
            found[manifest.part] = rec_id
    return [found[p] for p in sorted(found)]


def resolve_calls(store: ObjectStore, call_ids: Iterable[str]) -> list[str]:
    """The recording ids of ``call_ids`` (every part); :class:`NotFoundError` for a call
    with none."""
    ids: list[str] = []
    for call_id in call_ids:
        found = recordings_of_call(store, call_id)
        if not found:
            raise NotFoundError(f"no recording of call {call_id!r} in the archive")
        ids.extend(found)
    return ids


def all_recordings(store: ObjectStore) -> list[str]:
    """Ids of every recording with a manifest, sorted."""
    return sorted(r for k in store.list_keys(RECORDINGS) if (r := recording_of(k)) is not None)


def table_keys(manifest: Manifest) -> list[str]:
    return [table_key(name, manifest.date, manifest.recording_id) for name in TABLES]


def recording_keys(store: ObjectStore, rec_id: str, date: str | None) -> list[str]:
    """Every existing object of the recording: its directory and its table files
    (when ``date``, its partition day, is known)."""
    keys = list(store.list_keys(recording_prefix(rec_id)))
    if date is not None:
        for name in TABLES:
            key = table_key(name, date, rec_id)
            if store.exists(key):
                keys.append(key)
    return keys


def delete_order(keys: Iterable[str]) -> list[str]:
    """Table rows first, the manifest last: while the manifest is there the recording
    is still found, so an interrupted delete is finished by running it again."""

    def rank(key: str) -> tuple[int, str]:
        if key.endswith("/" + MANIFEST_NAME):
            return 2, key
        return (0 if key.startswith("tables/") else 1), key

    return sorted(set(keys), key=rank)


@dataclass(frozen=True, slots=True)
class Blocker:
    """Why one object cannot be deleted now."""

    key: str
    legal_hold: bool
    mode: str | None
    retain_until: dt.datetime | None

    def describe(self) -> str:
        if self.legal_hold:
            return f"{self.key} is under a legal hold"
        until = self.retain_until.isoformat() if self.retain_until else "?"
        return f"{self.key} is under Object Lock {self.mode or ''} retention until {until}"


def blockers(store: ObjectStore, keys: Iterable[str], at: dt.datetime) -> list[Blocker]:
    """The objects among ``keys`` that a delete at ``at`` would be refused for."""
    found = []
    for key in keys:
        try:
            lock = store.lock_state(key)
        except ObjectNotFoundError:
            continue
        if lock.blocks_delete(at):
            found.append(Blocker(key, lock.legal_hold, lock.mode, lock.retain_until))
    return found


def refuse_if_locked(
    store: ObjectStore, rec_id: str, keys: Iterable[str], at: dt.datetime, what: str
) -> None:
    """Raise :class:`OnHoldError` or :class:`RetainedError` (with the documented message)
    when a hold record or any object's lock forbids deleting the recording now."""
    hold = load_hold(store, rec_id)
    if hold is not None and hold.active:
        raise OnHoldError(
            f"{rec_id} is on legal hold ({hold.reason!r}, set by {hold.set_by} at "
            f"{hold.set_at}): it cannot be {what}; clear the hold first (callrec hold clear)"
        )
    found = blockers(store, keys, at)
    held = [b for b in found if b.legal_hold]
    if held:
        raise OnHoldError(
            f"{rec_id} is under a legal hold on {held[0].key}: it cannot be "
            f"{what}; clear the hold first (callrec hold clear)"
        )
    if found:
        last = max(
            (b for b in found if b.retain_until),
            key=lambda b: b.retain_until or at,
            default=found[0],
        )
        until = last.retain_until.isoformat() if last.retain_until else "?"
        raise RetainedError(
            f"{rec_id} is under Object Lock {last.mode} retention until {until}: it cannot "
            f'be {what} before then (WORM; docs/compliance.md, "Erasure and WORM"); '
            f"nothing was deleted"
        )


def delete_keys(store: ObjectStore, keys: Iterable[str]) -> list[str]:
    """Delete ``keys`` in :func:`delete_order`; returns those deleted. A lock that appears
    mid-way raises ``ObjectLockedError`` (what was deleted stays deleted; run again)."""
    done = []
    for key in delete_order(keys):
        try:
            store.delete(key)
        except ObjectLockedError:
            log.warning("delete refused for %s (locked)", key)
            raise
        done.append(key)
    return done


def calls_row(store: ObjectStore, manifest: Manifest) -> dict[str, Any] | None:
    """The recording's ``calls`` row (all columns the file has); None when the file is
    missing or holds no row for it."""
    import pyarrow.parquet as pq

    try:
        data = store.get_bytes(table_key("calls", manifest.date, manifest.recording_id))
    except (ObjectNotFoundError, FileNotFoundError):
        return None
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    return next((r for r in rows if r.get("recording_id") == manifest.recording_id), None)
