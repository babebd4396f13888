"""The audit trail's entries: the contract of ``audit/<seq>.json`` and of the ``audit`` view.

compliance/audit.py writes and verifies the chain; docs/compliance.md describes it.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable

import msgspec
import pyarrow as pa

AUDIT_PREFIX = "audit/"
GENESIS = "0" * 64
"""``prev`` of the first entry."""
_KEY = re.compile(r"audit/(\d{12})\.json")


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One access or change, as stored (JSON, sorted keys, one line)."""

    seq: int
    """Position in the chain, from 0, without gaps; also the object's key."""
    time: str
    """When it happened (ISO-8601 UTC, microseconds)."""
    actor: str
    """Who: the console user, or ``cli:<os user>`` for a command."""
    address: str
    """From where: the client's IP address (the console), or the host (a command)."""
    action: str
    """What, e.g. ``search``, ``view``, ``play``, ``download``, ``verify``, ``hold.set``,
    ``hold.clear``, ``retention.delete``, ``erase``, ``export``, ``login``, ``denied``."""
    target: str
    """What it was about: a call id, a recording id, a search, or empty."""
    outcome: str
    """``ok``, ``denied`` or ``error``."""
    detail: dict[str, str]
    """Small facts that depend on the action (a reason, a filter, a count)."""
    prev: str
    """SHA-256 (hex) of the previous entry's stored bytes; 64 zeros for entry 0."""


def entry_key(seq: int) -> str:
    return f"{AUDIT_PREFIX}{seq:012d}.json"


def seq_of_key(key: str) -> int | None:
    match = _KEY.fullmatch(key)
    return int(match.group(1)) if match else None


AUDIT_SCHEMA = pa.schema([
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("actor", pa.string(), nullable=False),
    pa.field("address", pa.string(), nullable=False),
    pa.field("action", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("outcome", pa.string(), nullable=False),
    pa.field("detail", pa.string(), nullable=False),
    pa.field("prev", pa.string(), nullable=False),
])
"""The ``audit`` view of ``callrec query``: ``time`` as a UTC timestamp, ``detail`` as
JSON text (``detail->>'reason'`` in DuckDB)."""


def audit_table(entries: Iterable[bytes]) -> pa.Table:
    """The ``audit`` view's rows from stored entries (unreadable ones are left out:
    ``callrec audit verify`` reports them)."""
    decoder = msgspec.json.Decoder(AuditEntry)
    rows = []
    for data in entries:
        try:
            entry = decoder.decode(data)
        except msgspec.DecodeError:
            continue
        row = msgspec.structs.asdict(entry)
        row["time"] = _dt.datetime.fromisoformat(entry.time.replace("Z", "+00:00"))
        row["detail"] = msgspec.json.encode(entry.detail).decode()
        rows.append(row)
    rows.sort(key=lambda r: r["seq"])
    return pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA)
