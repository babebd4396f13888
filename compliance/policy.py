"""The configured policies the compliance operations apply, as plain values.

Built from :class:`compliance.settings.ComplianceSettings` by the CLI, or by the
console from its own settings; the library functions take these, not settings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class LockPolicy:
    """The Object Lock the recorder is configured to put on every object
    (``CALLREC_S3_OBJECT_LOCK_MODE``/``_DAYS``, ``CALLREC_S3_LEGAL_HOLD``)."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    """Retention mode every object should carry; None: none expected."""
    days: int = 0
    """Retention from the upload; an object's retain-until should be at least this
    long after its recording started."""
    legal_hold: bool = False
    """Whether every object should carry a legal hold."""


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Keep recordings that match for ``days`` (first matching rule wins)."""

    days: int
    """0: forever."""
    direction: str | None = None
    """Matches the ``calls.direction`` column; None: any."""
    number_prefix: str | None = None
    """Matches when ``calls.from_number`` or ``calls.to_number`` starts with it."""

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether the rule applies to a ``calls`` row. A rule naming a column the row
        lacks never matches (archives written before the control plane added them)."""
        if self.direction is not None and row.get("direction") != self.direction:
            return False
        if self.number_prefix is not None:
            numbers = [row.get("from_number"), row.get("to_number")]
            if not any(isinstance(n, str) and n.startswith(self.number_prefix) for n in numbers):
                return False
        return True


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long recordings are kept (``CALLREC_RETENTION_DAYS``, ``..._RULES``)."""

    days: int = 0
    """Default for recordings no rule matches; 0: forever."""
    rules: tuple[RetentionRule, ...] = field(default_factory=tuple)

    @property
    def needs_rows(self) -> bool:
        """Whether a decision needs the recording's ``calls`` row."""
        return any(r.direction is not None or r.number_prefix is not None for r in self.rules)

    def days_for(self, row: Mapping[str, Any] | None) -> int:
        for rule in self.rules:
            if row is not None and rule.matches(row):
                return rule.days
            if row is None and rule.direction is None and rule.number_prefix is None:
                return rule.days
        return self.days

    def expires(self, start: dt.datetime, row: Mapping[str, Any] | None) -> dt.datetime | None:
        """When a recording that started at ``start`` may go; None: never."""
        days = self.days_for(row)
        return start + dt.timedelta(days=days) if days > 0 else None
