"""The ``control`` table: one row per call the control plane saw, recorded or not.

Written to ``tables/control/date=<first event date>/<call id>-0.parquet`` when the call
ends (and rewritten, same key, when a later event such as ``post_call`` adds to it), so
"which calls were not recorded, and why" is one query (docs/control.md)::

    SELECT call_id, from_number, to_number, reason FROM control WHERE NOT recorded
"""

from __future__ import annotations

from typing import Any

from infra.parquet import rows_to_parquet
from infra.store import ObjectStore
from schemas.custody import iso_time, parse_iso_ns
from schemas.envelope import ControlState
from schemas.tables import recording_id, table_key


def control_row(state: ControlState) -> dict[str, Any]:
    recorded = state.phase in ("started", "paused", "completed") and state.stream_id is not None
    return {
        "call_id": state.call_id,
        "recorded": recorded,
        "reason": None if recorded else (state.reason or "not_answered"),
        "rule": state.rule,
        "channel": state.channel,
        "stream_id": state.stream_id,
        "stream_starts": state.epoch,
        "pauses": state.pauses,
        "first_event_time": state.first_seen_ns // 1_000_000,
        "last_event": state.last_event,
        "from_number": state.from_number,
        "to_number": state.to_number,
        "direction": state.direction,
        "tag": state.tag,
        "answered_time": _ms(state.answered_time),
        "completed_time": _ms(state.completed_time),
        "disposition": state.disposition,
    }


def control_key(state: ControlState) -> str:
    date = iso_time(state.first_seen_ns)[:10]
    return table_key("control", date, recording_id(state.call_id, 0))


def write_row(store: ObjectStore, state: ControlState) -> str:
    """Write (or overwrite) the call's row; returns its key. Blocking (run in a thread)."""
    key = control_key(state)
    store.put_bytes(
        key, rows_to_parquet("control", [control_row(state)]), "application/vnd.apache.parquet"
    )
    return key


def _ms(text: str | None) -> int | None:
    ns = parse_iso_ns(text)
    return None if ns is None else ns // 1_000_000
