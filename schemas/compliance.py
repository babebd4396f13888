"""Compliance records in the archive: legal holds, erasure tombstones, the last verification.

compliance/ writes them; ``callrec query`` shows them as the ``holds`` and
``tombstones`` views; docs/compliance.md describes what they mean::

    holds/<recording_id>.json        one per recording ever held (``active`` says if now)
    tombstones/<recording_id>.json   one per erased recording: who, when, why, what (sha256)
    verify/last.json                 the result of the last ``callrec verify --record``

Records are JSON with sorted keys. A hold record is rewritten when the hold is
cleared (never deleted: under Object Lock the old versions stay, and the audit
trail holds the history); a tombstone is written once, before the erasure.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable
from typing import Any

import msgspec
import pyarrow as pa

HOLDS_PREFIX = "holds/"
TOMBSTONES_PREFIX = "tombstones/"
VERIFY_STATUS_KEY = "verify/last.json"
CONTENT_TYPE = "application/json"
_RECORD_KEY = re.compile(r"(?:holds|tombstones)/([^/]+)\.json")


class HoldRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A legal hold on one recording (``holds/<recording_id>.json``)."""

    recording_id: str
    call_id: str
    active: bool
    """Whether the hold is in force now; a cleared hold keeps its record with False."""
    reason: str
    """Why it was put (a case or matter reference)."""
    set_by: str
    set_at: str
    """ISO-8601 UTC."""
    cleared_by: str = ""
    cleared_at: str = ""
    clear_reason: str = ""


class ErasedObject(msgspec.Struct, frozen=True, kw_only=True):
    """One object an erasure removed."""

    key: str
    sha256: str
    """SHA-256 of the bytes that were erased (from the manifest, or hashed before deleting)."""
    size: int


class Tombstone(msgspec.Struct, frozen=True, kw_only=True):
    """The record of an erasure (``tombstones/<recording_id>.json``): no personal data,
    only identifiers and hashes, so that it may outlive what it describes."""

    recording_id: str
    call_id: str
    date: str
    """``YYYY-MM-DD`` partition the recording's table rows were in."""
    erased_by: str
    erased_at: str
    """ISO-8601 UTC: when the erasure began (the tombstone is written first)."""
    reason: str
    """Why (e.g. a GDPR Art. 17 request reference)."""
    objects: list[ErasedObject]
    """Everything the erasure removes, sorted by key."""


class VerifyStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``verify/last.json``: the outcome of the last recorded ``callrec verify``."""

    finished_at: str
    scope: str
    """``all``, a date range or call ids."""
    recordings: int
    objects: int
    bytes: int
    problems: int
    """0 when the archive verified clean."""
    kinds: dict[str, int]
    """Problems by kind (``missing``, ``mismatch``, ...)."""


_encoder = msgspec.json.Encoder(order="sorted")


def encode(record: HoldRecord | Tombstone | VerifyStatus) -> bytes:
    return msgspec.json.format(_encoder.encode(record), indent=2) + b"\n"


def decode_hold(data: bytes) -> HoldRecord:
    return msgspec.json.decode(data, type=HoldRecord)


def decode_tombstone(data: bytes) -> Tombstone:
    return msgspec.json.decode(data, type=Tombstone)


def decode_verify_status(data: bytes) -> VerifyStatus:
    return msgspec.json.decode(data, type=VerifyStatus)


def hold_key(recording_id: str) -> str:
    return f"{HOLDS_PREFIX}{recording_id}.json"


def tombstone_key(recording_id: str) -> str:
    return f"{TOMBSTONES_PREFIX}{recording_id}.json"


def recording_of_record(key: str) -> str | None:
    """The recording id of ``holds/<id>.json`` or ``tombstones/<id>.json``."""
    match = _RECORD_KEY.fullmatch(key)
    return match.group(1) if match else None


def _time(text: str) -> _dt.datetime | None:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


HOLDS_SCHEMA = pa.schema(
    [
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("call_id", pa.string(), nullable=False),
        pa.field("active", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("set_by", pa.string(), nullable=False),
        pa.field("set_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("cleared_by", pa.string()),
        pa.field("cleared_at", pa.timestamp("us", tz="UTC")),
        pa.field("clear_reason", pa.string()),
    ]
)
"""The ``holds`` view of ``callrec query``: one row per recording ever held."""

TOMBSTONES_SCHEMA = pa.schema(
    [
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("call_id", pa.string(), nullable=False),
        pa.field("date", pa.string(), nullable=False),
        pa.field("erased_by", pa.string(), nullable=False),
        pa.field("erased_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("objects", pa.int32(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
    ]
)
"""The ``tombstones`` view of ``callrec query``: one row per erased recording."""


def holds_table(records: Iterable[bytes]) -> pa.Table:
    """The ``holds`` view's rows (unreadable records are left out: verify reports them)."""
    rows = []
    for data in records:
        try:
            hold = decode_hold(data)
        except msgspec.DecodeError:
            continue
        row = msgspec.structs.asdict(hold)
        row["set_at"] = _time(hold.set_at)
        row["cleared_at"] = _time(hold.cleared_at)
        for name in ("cleared_by", "clear_reason"):
            row[name] = row[name] or None
        rows.append(row)
    rows.sort(key=lambda r: r["recording_id"])
    return pa.Table.from_pylist(rows, schema=HOLDS_SCHEMA)


def tombstones_table(records: Iterable[bytes]) -> pa.Table:
    """The ``tombstones`` view's rows."""
    rows: list[dict[str, Any]] = []
    for data in records:
        try:
            stone = decode_tombstone(data)
        except msgspec.DecodeError:
            continue
        rows.append(
            {
                "recording_id": stone.recording_id,
                "call_id": stone.call_id,
                "date": stone.date,
                "erased_by": stone.erased_by,
                "erased_at": _time(stone.erased_at),
                "reason": stone.reason,
                "objects": len(stone.objects),
                "bytes": sum(o.size for o in stone.objects),
            }
        )
    rows.sort(key=lambda r: r["recording_id"])
    return pa.Table.from_pylist(rows, schema=TOMBSTONES_SCHEMA)
