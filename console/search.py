"""The calls page's query: filters, sort and keyset pagination, from and back to a URL.

Every view is a bookmarkable URL: :class:`CallQuery` is parsed from the query
string and turned back into one (:meth:`CallQuery.url`), so a page, its next
page and its CSV (the same URL with ``.csv``) say the same thing. Pages follow
the sort key (``?next=<token>``: the last row's sort value and recording id),
never an OFFSET: page 2000 costs what page 1 costs. The SQL takes every user
value as a parameter; only column names chosen from fixed lists are spliced in.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal
from urllib.parse import urlencode

from console.errors import BadRequest

SORTS: dict[str, str] = {
    "start_time": "epoch_ms(c.start_time)",
    "duration_ms": "c.duration_ms",
    "call_id": "c.call_id",
    "overtalk_ms": "coalesce(m.overtalk_ms, -1)",
    "interruptions": "coalesce(m.interruptions, -1)",
}
"""Sortable columns and the SQL expression each sorts by (never null)."""

NUMBER_COLUMNS = ("from_number", "to_number")
DIRECTION_COLUMN = "direction"

Tri = Literal["", "yes", "no"]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _float(params: Mapping[str, str], name: str) -> float | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise BadRequest(f"{name}={text!r} is not a number")
    return value


def _date(params: Mapping[str, str], name: str) -> dt.date | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a date (YYYY-MM-DD)") from None


def _tri(params: Mapping[str, str], name: str) -> Tri:
    value = params.get(name, "")
    if value not in ("", "yes", "no"):
        raise BadRequest(f"{name} must be yes, no or empty")
    return value  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class CallQuery:
    """The whole state of a calls page; each field is one query-string parameter."""

    q: str = ""
    """Transcript text (case-insensitive substring of a segment)."""
    call: str = ""
    """Call id (case-insensitive substring)."""
    date_from: dt.date | None = None
    """First UTC day of the recording start."""
    date_to: dt.date | None = None
    """Last UTC day (inclusive)."""
    number: str = ""
    """A phone number, from or to (when the calls table has the columns)."""
    direction: str = ""
    """inbound or outbound (when the calls table has the column)."""
    complete: Tri = ""
    hold: Tri = ""
    """Under an active legal hold (yes) or not (no)."""
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    min_overtalk_s: float | None = None
    min_interruptions: float | None = None
    min_silence_s: float | None = None
    min_clipping: float | None = None
    """Share of clipped samples, 0..1."""
    sort: str = "start_time"
    order: Literal["asc", "desc"] = "desc"
    next: str = ""
    """Keyset token: where the page starts (after this sort value and recording id)."""

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> CallQuery:
        sort = params.get("sort", "start_time") or "start_time"
        if sort not in SORTS:
            raise BadRequest(f"sort must be one of {', '.join(SORTS)}")
        order = params.get("order", "desc") or "desc"
        if order not in ("asc", "desc"):
            raise BadRequest("order must be asc or desc")
        return cls(
            q=params.get("q", "").strip()[:200],
            call=params.get("call", "").strip()[:200],
            date_from=_date(params, "date_from"),
            date_to=_date(params, "date_to"),
            number=params.get("number", "").strip()[:64],
            direction=params.get("direction", "").strip()[:16],
            complete=_tri(params, "complete"),
            hold=_tri(params, "hold"),
            min_duration_s=_float(params, "min_duration_s"),
            max_duration_s=_float(params, "max_duration_s"),
            min_overtalk_s=_float(params, "min_overtalk_s"),
            min_interruptions=_float(params, "min_interruptions"),
            min_silence_s=_float(params, "min_silence_s"),
            min_clipping=_float(params, "min_clipping"),
            sort=sort,
            order=order,  # type: ignore[arg-type]
            next=params.get("next", "")[:500],
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """The non-default parameters, with ``changes`` applied (e.g. ``next=...``)."""
        query = replace(self, **changes)
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(query, f.name)
            if value in (None, "") or (f.name, value) in (
                ("sort", "start_time"),
                ("order", "desc"),
            ):
                continue
            out[f.name] = (
                value.isoformat()
                if isinstance(value, dt.date)
                else f"{value:g}"
                if isinstance(value, float)
                else str(value)
            )
        return out

    def url(self, path: str = "/calls", **changes: Any) -> str:
        params = self.params(**changes)
        return f"{path}?{urlencode(params)}" if params else path

    @property
    def filtered(self) -> bool:
        """Whether any filter is set (a search, for the audit trail)."""
        return bool(self.params(sort="start_time", order="desc", next=""))


def encode_token(value: Any, recording_id: str) -> str:
    raw = json.dumps([value, recording_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value, recording_id = json.loads(raw)
    except (ValueError, TypeError):
        raise BadRequest("next is not a page token of this console") from None
    if not isinstance(recording_id, str) or not isinstance(value, int | float | str):
        raise BadRequest("next is not a page token of this console")
    return value, recording_id


@dataclass(frozen=True, slots=True)
class SqlQuery:
    """The FROM/WHERE of a calls query with its parameters."""

    where: str
    args: list[Any]


def build_where(query: CallQuery, columns: frozenset[str]) -> SqlQuery:
    """The filters as SQL over ``calls_idx c LEFT JOIN call_metrics m``."""
    clauses: list[str] = []
    args: list[Any] = []
    if query.q:
        clauses.append(
            "c.recording_id IN (SELECT recording_id FROM segments_idx "
            "WHERE text ILIKE ? ESCAPE '\\')"
        )
        args.append(f"%{_escape_like(query.q)}%")
    if query.call:
        clauses.append("c.call_id ILIKE ? ESCAPE '\\'")
        args.append(f"%{_escape_like(query.call)}%")
    if query.date_from:
        clauses.append("c.start_time >= ?::TIMESTAMPTZ")
        args.append(f"{query.date_from.isoformat()} 00:00:00+00")
    if query.date_to:
        clauses.append("c.start_time < ?::TIMESTAMPTZ")
        args.append(f"{(query.date_to + dt.timedelta(days=1)).isoformat()} 00:00:00+00")
    if query.number and all(c in columns for c in NUMBER_COLUMNS):
        clauses.append("(c.from_number = ? OR c.to_number = ?)")
        args += [query.number, query.number]
    if query.direction and DIRECTION_COLUMN in columns:
        clauses.append("c.direction = ?")
        args.append(query.direction)
    if query.complete:
        clauses.append("c.complete" if query.complete == "yes" else "NOT c.complete")
    if query.hold:
        clauses.append(
            ("" if query.hold == "yes" else "NOT ")
            + "c.recording_id IN (SELECT recording_id FROM holds_idx)"
        )
    for value, sql, scale in (
        (query.min_duration_s, "c.duration_ms >= ?", 1000),
        (query.max_duration_s, "c.duration_ms <= ?", 1000),
        (query.min_overtalk_s, "m.overtalk_ms >= ?", 1000),
        (query.min_interruptions, "m.interruptions >= ?", 1),
        (query.min_silence_s, "m.silence_ms >= ?", 1000),
        (query.min_clipping, "m.clipping_ratio >= ?", 1),
    ):
        if value is not None:
            clauses.append(sql)
            args.append(value * scale)
    return SqlQuery(" AND ".join(clauses) or "TRUE", args)


FROM = "calls_idx c LEFT JOIN call_metrics m USING (recording_id)"
LIST_COLUMNS = (
    "c.recording_id",
    "c.call_id",
    "c.part",
    "c.start_time",
    "c.duration_ms",
    "c.complete",
    "c.incomplete_reason",
    "c.tracks",
    "c.gaps",
    "c.duplicates",
    "m.talk_ms",
    "m.silence_ms",
    "m.overtalk_ms",
    "m.interruptions",
    "m.clipping_ratio",
)
OPTIONAL_COLUMNS = ("from_number", "to_number", "direction")


def page_sql(query: CallQuery, columns: frozenset[str], limit: int) -> tuple[str, list[Any]]:
    """One page's rows (``limit`` + 1, to know whether there is a next page); the sort
    value is the last column."""
    base = build_where(query, columns)
    sort = SORTS[query.sort]
    where, args = base.where, list(base.args)
    cmp = "<" if query.order == "desc" else ">"
    if query.next:
        value, recording_id = decode_token(query.next)
        where += f" AND ({sort} {cmp} ? OR ({sort} = ? AND c.recording_id {cmp} ?))"
        args += [value, value, recording_id]
    extra = [f"c.{c}" for c in OPTIONAL_COLUMNS if c in columns]
    select = ", ".join([*LIST_COLUMNS, *extra, f"{sort} AS sort_value"])
    direction = query.order.upper()
    sql = (
        f"SELECT {select} FROM {FROM} WHERE {where} "
        f"ORDER BY {sort} {direction}, c.recording_id {direction} LIMIT {int(limit) + 1}"
    )
    return sql, args


def count_sql(query: CallQuery, columns: frozenset[str]) -> tuple[str, list[Any]]:
    base = build_where(query, columns)
    return f"SELECT count(*) FROM {FROM} WHERE {base.where}", base.args


def snippets_sql(query: CallQuery, recording_ids: list[str]) -> tuple[str, list[Any]]:
    """The matching segments of the page's recordings, at most 3 per recording."""
    marks = ", ".join("?" for _ in recording_ids)
    sql = (
        "SELECT recording_id, start_ms, speaker, text FROM ("
        "SELECT recording_id, start_ms, speaker, text, row_number() OVER "
        "(PARTITION BY recording_id ORDER BY start_ms) AS n FROM segments_idx "
        f"WHERE recording_id IN ({marks}) AND text ILIKE ? ESCAPE '\\') WHERE n <= 3 "
        "ORDER BY recording_id, start_ms"
    )
    return sql, [*recording_ids, f"%{_escape_like(query.q)}%"]


def highlight(text: str, needle: str) -> list[tuple[str, bool]]:
    """``text`` cut into (piece, is_match) around every case-insensitive ``needle``; the
    template escapes each piece and wraps matches in <mark>."""
    if not needle:
        return [(text, False)]
    pieces: list[tuple[str, bool]] = []
    lower, low_needle = text.casefold(), needle.casefold()
    pos = 0
    if len(lower) != len(text):  # casefold changed lengths (ß...): no highlight, no guess
        return [(text, False)]
    while True:
        found = lower.find(low_needle, pos)
        if found < 0:
            break
        if found > pos:
            pieces.append((text[pos:found], False))
        pieces.append((text[found : found + len(needle)], True))
        pos = found + len(needle)
    if pos < len(text):
        pieces.append((text[pos:], False))
    return pieces
