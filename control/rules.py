"""Recording rules: which answered calls are recorded, and on which stream channel. Pure.

A rules file (TOML, ``CALLREC_CONTROL_RULES_FILE``; docs/control.md "Recording rules")::

    [[rule]]
    name = "support"              # shown in the control table and logs
    to = ["+44800"]               # E.164 prefixes of the called number (any of)
    direction = "inbound"         # inbound | outbound
    channel = "both"              # inbound | outbound | both (default: the setting)

    [[rule]]
    name = "sales-sample"
    tag = ["sales"]               # the call's Wavix tag (any of)
    from = ["+1"]
    sample_percent = 10           # 10 % of the matching calls, chosen by call id

    [[rule]]
    name = "never-the-ceo"
    from = ["+15550100"]
    record = false                # an exclusion: matching calls are not recorded

The first rule whose every condition holds decides; a condition not given always
holds. No rule matching means not recorded (``no_rule_matched``). Sampling hashes the
call id (SHA-256), so every replica and every replay decides the same.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control.errors import RulesError
from schemas.callevents import CallEvent

CHANNELS = ("inbound", "outbound", "both")


@dataclass(frozen=True, slots=True)
class Rule:
    """One recording rule; empty tuples match anything."""

    name: str
    from_prefixes: tuple[str, ...] = ()
    """E.164 prefixes of the caller; a leading ``+`` is optional on both sides."""
    to_prefixes: tuple[str, ...] = ()
    direction: str | None = None
    tags: tuple[str, ...] = ()
    sample_percent: float = 100.0
    """Share of matching calls recorded, chosen deterministically by call id."""
    channel: str | None = None
    """Stream channel; None = the service default."""
    record: bool = True
    """False: an exclusion rule."""

    def matches(self, event: CallEvent) -> bool:
        if self.from_prefixes and not _has_prefix(event.from_number, self.from_prefixes):
            return False
        if self.to_prefixes and not _has_prefix(event.to_number, self.to_prefixes):
            return False
        if self.direction is not None and event.direction != self.direction:
            return False
        if self.tags and event.tag not in self.tags:
            return False
        return sample_bucket(event.call_id) < self.sample_percent


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with an answered call."""

    record: bool
    rule: str | None
    """The deciding rule; None when none matched."""
    channel: str
    reason: str | None
    """Why not recorded (``no_rule_matched``, ``excluded by rule X``); None when recorded."""


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    default_channel: str = "both"

    def decide(self, event: CallEvent) -> Decision:
        for rule in self.rules:
            if rule.matches(event):
                if not rule.record:
                    return Decision(
                        False, rule.name, self.default_channel, f"excluded_by_rule: {rule.name}"
                    )
                return Decision(True, rule.name, rule.channel or self.default_channel, None)
        return Decision(False, None, self.default_channel, "no_rule_matched")


def record_all(channel: str = "both") -> RuleSet:
    return RuleSet((Rule(name="all"),), channel)


def record_none(channel: str = "both") -> RuleSet:
    return RuleSet((), channel)


def sample_bucket(call_id: str) -> float:
    """The call's place in [0, 100): a stable hash of its id."""
    digest = hashlib.sha256(call_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / 2**64


def _digits(number: str | None) -> str:
    return (number or "").strip().lstrip("+")


def _has_prefix(number: str | None, prefixes: Sequence[str]) -> bool:
    digits = _digits(number)
    return bool(digits) and any(digits.startswith(_digits(p)) for p in prefixes)


def load_rules(path: str | Path, default_channel: str = "both") -> RuleSet:
    """Read a rules file; raise ``RulesError`` naming the rule and field that is wrong."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"rules file {path}: {exc}") from None
    return parse_rules(data, default_channel)


def parse_rules(data: dict[str, Any], default_channel: str = "both") -> RuleSet:
    entries = data.get("rule", [])
    if not isinstance(entries, list):
        raise RulesError("rules: [[rule]] tables expected")
    unknown_top = set(data) - {"rule"}
    if unknown_top:
        raise RulesError(f"rules: unknown keys {sorted(unknown_top)}")
    return RuleSet(tuple(_rule(i, e) for i, e in enumerate(entries)), default_channel)


_KEYS = {"name", "from", "to", "direction", "tag", "sample_percent", "channel", "record"}


def _rule(index: int, entry: Any) -> Rule:
    if not isinstance(entry, dict):
        raise RulesError(f"rule {index}: a table expected")
    name = str(entry.get("name", f"rule-{index}"))
    where = f"rule {name!r}"
    unknown = set(entry) - _KEYS
    if unknown:
        raise RulesError(f"{where}: unknown keys {sorted(unknown)}")
    direction = entry.get("direction")
    if direction not in (None, "inbound", "outbound"):
        raise RulesError(f"{where}: direction must be inbound or outbound")
    channel = entry.get("channel")
    if channel not in (None, *CHANNELS):
        raise RulesError(f"{where}: channel must be one of {CHANNELS}")
    percent = entry.get("sample_percent", 100)
    if not isinstance(percent, int | float) or not 0 <= percent <= 100:
        raise RulesError(f"{where}: sample_percent must be a number from 0 to 100")
    record = entry.get("record", True)
    if not isinstance(record, bool):
        raise RulesError(f"{where}: record must be true or false")
    return Rule(
        name=name,
        from_prefixes=_strings(where, "from", entry.get("from")),
        to_prefixes=_strings(where, "to", entry.get("to")),
        direction=direction,
        tags=_strings(where, "tag", entry.get("tag")),
        sample_percent=float(percent),
        channel=channel,
        record=record,
    )


def _strings(where: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RulesError(f"{where}: {key} must be a string or a list of strings")
    return tuple(value)
