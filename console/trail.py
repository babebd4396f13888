"""The console's side of the audit trail: append every access, read back who listened.

Every search, call view, play, download, integrity check, login and refusal is
appended to the archive's hash-chained log (compliance/audit.py) *before* the
answer is sent; when the log cannot be written the access is refused (503): an
access that leaves no trace does not happen.

A **play** is one playback session: the call page mints a random session token
and puts it in the audio URL (``/calls/<id>/audio?ps=<token>``); the first audio
request of a (user, recording, token) is the play, the Range requests that follow
(buffering, seeking) are the same play. The audio element is ``preload="none"``,
so nothing is fetched, and nothing counted, until the user presses play.

"Who listened" on the call page comes from the entries themselves: the console
reads the log forward from the last entry it has seen (entries are numbered
without gaps), keeping only ``play`` entries per recording: once in the background
after start-up (one read per entry: a long log takes a while), then with each index
refresh and each call page (only the entries written since).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from compliance.audit import AuditLog, decode_entry
from console import metrics
from infra.store import ObjectNotFoundError, ObjectStore, StoreError
from schemas.audit import entry_key

log = logging.getLogger(__name__)

PLAY_SESSION_TTL_S = 30 * 60
"""A playback session's token counts as one play for this long."""
MAX_PLAY_SESSIONS = 10_000


class AuditUnavailable(Exception):
    """The audit log could not be written: the access is refused (503)."""


@dataclass(frozen=True, slots=True)
class Listen:
    """One play of a recording, as the audit log has it."""

    time: str
    actor: str
    address: str
    outcome: str


class ConsoleTrail:
    """Appends the console's entries; remembers plays and playback sessions."""

    def __init__(self, store: ObjectStore) -> None:
        self.log = AuditLog(store)
        self.store = store
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._next_seq = 0
        self._plays: dict[str, list[Listen]] = {}
        self._sessions: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def append(
        self,
        *,
        actor: str,
        action: str,
        target: str = "",
        address: str = "",
        outcome: str = "ok",
        detail: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self.log.append(
                actor=actor,
                action=action,
                target=target,
                address=address,
                outcome=outcome,
                detail=detail,
            )
        except (StoreError, OSError, RuntimeError) as exc:
            metrics.AUDIT_ERRORS.inc()
            log.error("audit entry %s by %s on %s not written: %s", action, actor, target, exc)
            raise AuditUnavailable(str(exc)) from None

    def new_play(self, actor: str, recording_id: str, session: str) -> bool:
        """Whether this audio request starts a play (the session's first request)."""
        now = time.monotonic()
        key = (actor, recording_id, session)
        with self._lock:
            while self._sessions:
                started = next(iter(self._sessions.values()))
                if now - started < PLAY_SESSION_TTL_S and len(self._sessions) < (MAX_PLAY_SESSIONS):
                    break
                self._sessions.popitem(last=False)
            if key in self._sessions:
                return False
            self._sessions[key] = now
            return True

    def forget_play(self, actor: str, recording_id: str, session: str) -> None:
        """The play could not be recorded: let the next request try again."""
        with self._lock:
            self._sessions.pop((actor, recording_id, session), None)

    def listens(self, recording_id: str) -> list[Listen]:
        """Every play entry about ``recording_id`` (allowed or refused), oldest first."""
        self.catch_up()
        with self._lock:
            return list(self._plays.get(recording_id, ()))

    def catch_up(self) -> None:
        """Read the entries written since the last look (by this or any other process)."""
        with self._read_lock:  # one reader at a time; plays and sessions stay unblocked
            seq = self._next_seq
            found: list[tuple[str, Listen]] = []
            while True:
                try:
                    data = self.store.get_bytes(entry_key(seq))
                except ObjectNotFoundError:
                    break
                seq += 1
                try:
                    entry = decode_entry(data)
                except msgspec.DecodeError:
                    continue  # `callrec audit verify` reports it
                if entry.action == "play":
                    found.append(
                        (
                            entry.target,
                            Listen(entry.time, entry.actor, entry.address, entry.outcome),
                        )
                    )
            with self._lock:
                for target, listen in found:
                    self._plays.setdefault(target, []).append(listen)
                self._next_seq = seq
