"""The audit trail: an append-only, hash-chained log of every access and change.

Who did what, when, from where: every console search, call view, play and
download, every compliance action (hold, retention, erasure, export, verify).
Each entry is one object in the archive, numbered without gaps::

    audit/000000000000.json
    audit/000000000001.json     {"seq": 1, "prev": "<sha256 of entry 0's bytes>", ...}

Appending writes the next number create-only (``ObjectStore.put_new``: S3
``If-None-Match: *``, a hard link locally), so writers in several processes or
pods never fork the chain: a writer that lost the race re-reads the head and
tries the next number. Each entry carries the SHA-256 of the previous entry's
bytes (``prev``; 64 zeros for the first), so :func:`verify_log` detects an
entry that was edited (the next one's ``prev`` no longer matches), removed (a
gap in the numbers) or inserted (a number out of place, a chain that breaks).
On S3 the entries inherit the archive's Object Lock retention: WORM as well as
evident. What a chain cannot show by itself is the removal of its newest
entries; an evidence export records the head it saw (its ``seq`` and hash), and
``callrec audit verify`` prints the head so it can be kept elsewhere.

Reading the log as a table: the ``audit`` view of ``callrec query``
(``schemas.audit.AUDIT_SCHEMA``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import msgspec

from infra.store import ObjectExistsError, ObjectNotFoundError, ObjectStore
from schemas.audit import AUDIT_PREFIX, GENESIS, AuditEntry, entry_key, seq_of_key

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder(AuditEntry)
APPEND_ATTEMPTS = 50
"""Races lost in a row before an append gives up (each loss means another writer won)."""


def entry_bytes(entry: AuditEntry) -> bytes:
    """The stored bytes of an entry: sorted keys, one line, final newline (hashed as is)."""
    return _encoder.encode(entry) + b"\n"


def entry_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_entry(data: bytes) -> AuditEntry:
    return _decoder.decode(data)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class AuditLog:
    """Appends to, and reads, the archive's audit trail. Thread-safe; one per process."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._head: tuple[int, str] | None = None
        """(seq, hash) of the newest entry this process knows; None: find it first."""

    def append(
        self,
        *,
        actor: str,
        action: str,
        target: str = "",
        address: str = "",
        outcome: str = "ok",
        detail: Mapping[str, str] | None = None,
    ) -> AuditEntry:
        """Write one entry after the newest one; returns it as stored."""
        with self._lock:
            for _ in range(APPEND_ATTEMPTS):
                seq, prev = self._head if self._head is not None else self._find_head()
                entry = AuditEntry(
                    seq=seq + 1, time=now_iso(), actor=actor, address=address, action=action,
                    target=target, outcome=outcome, detail=dict(detail or {}), prev=prev,
                )
                data = entry_bytes(entry)
                try:
                    self.store.put_new(entry_key(entry.seq), data, CONTENT_TYPE)
                except ObjectExistsError:
                    self._head = None  # another writer took this number: look again
                    continue
                self._head = (entry.seq, entry_hash(data))
                return entry
        raise RuntimeError(f"audit append lost {APPEND_ATTEMPTS} races in a row")

    def head(self) -> tuple[int, str]:
        """(seq, sha256) of the newest entry; (-1, GENESIS) for an empty log."""
        with self._lock:
            self._head = self._find_head()
            return self._head

    def _find_head(self) -> tuple[int, str]:
        """The newest entry by probing numbers (O(log n) requests, no listing): doubling
        until a number is missing, then bisecting. Relies on the numbers having no gap,
        which :func:`verify_log` checks."""
        if not self.store.exists(entry_key(0)):
            return -1, GENESIS
        low, high = 0, 1
        while self.store.exists(entry_key(high)):
            low, high = high, high * 2
        while high - low > 1:  # entry low exists, entry high does not
            mid = (low + high) // 2
            if self.store.exists(entry_key(mid)):
                low = mid
            else:
                high = mid
        return low, entry_hash(self.store.get_bytes(entry_key(low)))

    def entries(self, target: str | None = None) -> Iterator[AuditEntry]:
        """Every entry in order (optionally only those about ``target``)."""
        for key in self.store.list_keys(AUDIT_PREFIX):
            if seq_of_key(key) is None:
                continue
            try:
                entry = decode_entry(self.store.get_bytes(key))
            except (msgspec.DecodeError, ObjectNotFoundError):
                continue
            if target is None or entry.target == target:
                yield entry


@dataclass
class AuditReport:
    """What :func:`verify_log` found."""

    entries: int = 0
    head_seq: int = -1
    head_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)
    """One line per problem, naming the entry's key."""

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_log(store: ObjectStore) -> AuditReport:
    """Walk the chain from entry 0: every number present once, every entry parseable
    and numbered as its key says, every ``prev`` the hash of the entry before."""
    report = AuditReport()
    expected_seq, prev_hash = 0, GENESIS
    for key in store.list_keys(AUDIT_PREFIX):
        seq = seq_of_key(key)
        if seq is None:
            report.problems.append(f"{key}: not an audit entry (inserted?)")
            continue
        data = store.get_bytes(key)
        try:
            entry = decode_entry(data)
        except msgspec.DecodeError as exc:
            report.problems.append(f"{key}: unreadable entry (edited?): {exc}")
            expected_seq, prev_hash = seq + 1, entry_hash(data)
            continue
        if seq != expected_seq:
            missing = f"{expected_seq}" if seq == expected_seq + 1 else (
                f"{expected_seq}..{seq - 1}")
            report.problems.append(
                f"{key}: entries {missing} are missing (removed?)" if seq > expected_seq
                else f"{key}: number out of order")
        if entry.seq != seq:
            report.problems.append(f"{key}: says it is entry {entry.seq} (edited or moved?)")
        if entry.prev != prev_hash:
            report.problems.append(
                f"{key}: does not follow the entry before it (that one was edited, "
                f"removed or inserted)")
        report.entries += 1
        expected_seq, prev_hash = seq + 1, entry_hash(data)
        report.head_seq, report.head_hash = seq, prev_hash
    return report
