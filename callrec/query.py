"""``callrec query "SQL"``: DuckDB over the archive's tables and its audit trail.

The archive is a local directory (embedded mode, or a copy of the bucket) or
``s3://bucket/prefix`` (S3, MinIO). The views are those of infra/tables.py (shared
with the review console): ``calls``, ``segments`` and ``metrics`` over the Parquet
tables with the Hive partition column ``date`` (read by DuckDB locally and through
pyarrow's S3 filesystem on S3, so it works offline), ``audit`` (the audit trail),
``holds`` and ``tombstones`` (docs/compliance.md). ``calls`` adds ``recording_uri``
and ``manifest_uri``, so the links follow the archive wherever it is queried from.

Times are shown in UTC. Output: an aligned text table (long cells cut to
``max_width``), CSV (RFC 4180, header row) or JSON (an array of objects).
docs/analytics.md has example queries.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from callrec.errors import CommandError
from infra import tables
from infra.tables import s3_filesystem

if TYPE_CHECKING:
    import duckdb

    from infra.settings import ArchiveSettings

OutputFormat = Literal["table", "csv", "json"]
FORMATS: tuple[OutputFormat, ...] = ("table", "csv", "json")


__all__ = ["FORMATS", "OutputFormat", "QueryError", "connect", "query", "render", "run",
           "s3_filesystem"]


class QueryError(CommandError):
    """The SQL failed, or the archive could not be opened; the message says which."""


def connect(archive_uri: str, settings: ArchiveSettings | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the archive's views (infra/tables.py)."""
    try:
        return tables.connect(archive_uri, settings)
    except tables.TablesError as exc:
        raise QueryError(str(exc)) from None


def run(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql``; :class:`QueryError` with DuckDB's message if it fails."""
    import duckdb

    try:
        relation = con.sql(sql)
        if relation is None:  # a statement without a result (SET, CREATE...)
            return [], []
        # Through Arrow: DuckDB's own row conversion needs pytz for TIMESTAMPTZ.
        table = relation.to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    columns = list(table.column_names)
    values = [column.to_pylist() for column in table.columns]  # keeps duplicate names
    return columns, list(zip(*values, strict=True)) if values else []


# -- output ------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A value as JSON has it: times as ISO-8601, decimals as floats, lists and maps kept."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # intervals, UUIDs...


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, list | tuple | dict):
        return json.dumps(_plain(value), ensure_ascii=False)
    plain = _plain(value)
    return plain if isinstance(plain, str) else str(plain)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 80
                 ) -> str:
    """An aligned text table, numbers right-aligned, with a row count."""
    def cut(text: str) -> str:
        text = " ".join(text.splitlines())
        return text if max_width <= 0 or len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cut(_cell(v)) for v in row] for row in rows]
    numeric = [
        all(isinstance(row[i], int | float | decimal.Decimal) and not isinstance(row[i], bool)
            for row in rows if row[i] is not None)
        for i in range(len(columns))
    ]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if num else v.ljust(w)
                  for v, w, num in zip(values, widths, numeric, strict=True))
        return "  ".join(padded).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def format_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV with a header row; NULL is an empty field, lists are JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else _cell(v) for v in row])
    return buffer.getvalue()


def format_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A JSON array with one object per row."""
    records = [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]
    return json.dumps(records, ensure_ascii=False, indent=2) + "\n"


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: OutputFormat = "table",
           max_width: int = 80) -> str:
    if fmt == "table":
        return format_table(columns, rows, max_width)
    if fmt == "csv":
        return format_csv(columns, rows)
    return format_json(columns, rows)


def query(archive_uri: str, sql: str, fmt: OutputFormat = "table",
          settings: ArchiveSettings | None = None, max_width: int = 80) -> str:
    """Run ``sql`` against the archive's tables and render the result."""
    con = connect(archive_uri, settings)
    try:
        columns, rows = run(con, sql)
    finally:
        con.close()
    return render(columns, rows, fmt, max_width)
