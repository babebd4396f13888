"""Login throttling: too many failed logins for one user name, or from one address, in a
window of time, and further attempts are refused (429) without checking the password.

Two counts, each over the last ``CALLREC_CONSOLE_LOGIN_WINDOW_S`` (docs/console.md):

- per **user name** (``CALLREC_CONSOLE_LOGIN_MAX_FAILURES``, default 5): guessing one
  user's password;
- per **client address** (``CALLREC_CONSOLE_LOGIN_MAX_ADDRESS_FAILURES``, default 20):
  trying a few passwords on many users from one place.

A refused attempt waits until enough failures have aged out of the window (the answer's
``Retry-After``). A successful login clears its user name's failures but not its
address's: otherwise one valid account would let a password sprayer reset its own count
after every few tries. The counts are kept in memory, per process (each replica counts
its own), for at most :data:`MAX_KEYS` names and addresses (the oldest are dropped).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_KEYS = 50_000
"""User names and addresses remembered at once (bounds the memory an attacker can fill
with made-up names: about 10 MB)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an attempt is refused, and for how long."""

    retry_after_s: int
    """Seconds until an attempt may be made again (at least 1)."""
    by: str
    """``user``, ``address`` or ``user,address``: which count is over its limit."""


class LoginThrottle:
    """Failed logins per user name and per address over a sliding window."""

    def __init__(
        self,
        max_failures: int,
        max_address_failures: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"user": max_failures, "address": max_address_failures}
        """Failures within the window that close the door (0: no limit)."""
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def refusal(self, user: str, address: str) -> Refusal | None:
        """A :class:`Refusal` when either count is at its limit; None: the attempt may go on."""
        now = self._clock()
        waits: dict[str, float] = {}
        with self._lock:
            for kind, key in (("user", user), ("address", address)):
                limit = self.limits[kind]
                times = self._recent((kind, key), now)
                if limit and len(times) >= limit:
                    # Allowed again once the limit-th newest failure leaves the window.
                    waits[kind] = times[-limit] + self.window_s - now
        if not waits:
            return None
        return Refusal(max(1, math.ceil(max(waits.values()))), ",".join(waits))

    def failed(self, user: str, address: str) -> Refusal | None:
        """Count a failed login; the :class:`Refusal` that the next attempt will get when
        this failure reached a limit (None: it did not)."""
        now = self._clock()
        with self._lock:
            for kind, key in (("user", user), ("address", address)):
                if not self.limits[kind]:
                    continue
                times = self._recent((kind, key), now)
                if not times:  # only the newest ``limit`` failures matter
                    times = self._failures[(kind, key)] = deque(maxlen=self.limits[kind])
                times.append(now)
                self._failures.move_to_end((kind, key))
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)
        return self.refusal(user, address)

    def succeeded(self, user: str) -> None:
        """A right password: that user name's failures are forgiven (not its address's)."""
        with self._lock:
            self._failures.pop(("user", user), None)

    def failures(self, kind: str, key: str) -> int:
        """Failures of a user name (``kind`` ``user``) or address within the window now."""
        with self._lock:
            return len(self._recent((kind, key), self._clock()))

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        """The failures of ``key`` still in the window (older ones dropped); lock held."""
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times
