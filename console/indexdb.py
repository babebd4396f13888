"""The calls index's database: its tables, their columns, and the fingerprint of both.

One DuckDB file holds the index (console/index.py keeps it, console/loader.py fills
it, docs/console.md describes it)::

    calls_idx      one row per recording (the calls table's columns)
    segments_idx   call_id, recording_id, track, speaker, segment, start_ms, end_ms, text
    metrics_idx    every metrics row; the view call_metrics keeps track = 'call'
    holds_idx      recording ids under an active legal hold (``holds/``, re-read each refresh)
    files          every table file read: file_no, tbl, key (the archive key), and h, the
                   key's 64-bit MD5 (the listing is compared by h: no strings to hold)
    erased         recording ids whose tombstone was applied (their rows deleted)
    meta           name -> value: the fingerprint, and ``complete`` once a first load ended

Each data row carries the partition ``date`` and the ``file_no`` of the file it came
from, so a file that leaves the archive (retention, erasure) takes exactly its rows
with it, even a compacted file holding several recordings.

The fingerprint names :data:`FORMAT` and every column with its type: a console whose
tables differ (a column added to ``schemas.tables``, a new layout here) finds another
fingerprint in the file and builds the index again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from console.errors import ConsoleError
from schemas.tables import PARTITION_COLUMN, TABLES

log = logging.getLogger(__name__)

FORMAT = 3
"""Bump when the layout of this file changes in a way the columns do not show."""

SEGMENT_COLUMNS = (
    "call_id",
    "recording_id",
    "track",
    "speaker",
    "segment",
    "start_ms",
    "end_ms",
    "text",
)
INDEXED = {"calls": "calls_idx", "segments": "segments_idx", "metrics": "metrics_idx"}
"""Archive table -> index table."""
FILE_COLUMN = "file_no"
LOCK_WAIT_S = 10.0
"""How long an index file held by another process is waited for (a console's build
process that has not yet noticed its parent is gone) before giving up."""


class IndexLockedError(ConsoleError):
    """Another process has the index file open (two consoles on one directory)."""


def index_schema(table: str) -> pa.Schema:
    """The columns the index keeps of ``table``, with the partition ``date`` and
    ``file_no``."""
    schema = TABLES[table].schema.remove_metadata()
    if table == "segments":
        schema = pa.schema([schema.field(name) for name in SEGMENT_COLUMNS])
    return schema.append(pa.field(PARTITION_COLUMN, pa.date32())).append(
        pa.field(FILE_COLUMN, pa.int64())
    )


def fingerprint() -> str:
    """What an index file must have been built with to be used as it is."""
    text = f"format {FORMAT}\n" + "\n".join(
        f"{table}: " + ", ".join(f"{f.name} {f.type}" for f in index_schema(table))
        for table in INDEXED
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def create_data_tables(con: duckdb.DuckDBPyConnection, prefix: str = "") -> None:
    """The three index tables (empty), in the database ``prefix`` names (``stage.``)."""
    for table, idx in INDEXED.items():
        con.register("empty_rows", index_schema(table).empty_table())
        try:
            con.execute(f"CREATE TABLE {prefix}{idx} AS SELECT * FROM empty_rows")
        finally:
            con.unregister("empty_rows")


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """A new index: every table, and the fingerprint."""
    create_data_tables(con)
    con.execute("CREATE VIEW call_metrics AS SELECT * FROM metrics_idx WHERE track = 'call'")
    con.execute("CREATE TABLE holds_idx (recording_id VARCHAR PRIMARY KEY)")
    con.execute("CREATE TABLE files (file_no BIGINT, tbl VARCHAR, key VARCHAR, h UBIGINT)")
    con.execute("CREATE TABLE erased (recording_id VARCHAR)")
    con.execute("CREATE TABLE meta (name VARCHAR, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('fingerprint', ?)", [fingerprint()])


def read_meta(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    row = con.execute("SELECT max(value) FROM meta WHERE name = ?", [name]).fetchall()
    return row[0][0] if row else None


def write_meta(con: duckdb.DuckDBPyConnection, name: str, value: str) -> None:
    con.execute("DELETE FROM meta WHERE name = ?", [name])
    con.execute("INSERT INTO meta VALUES (?, ?)", [name, value])


def column_types(con: duckdb.DuckDBPyConnection, idx: str) -> list[tuple[str, str]]:
    """``(name, DuckDB type)`` of an index table's columns, in order."""
    return [(name, kind) for name, kind, *_ in con.execute(f"DESCRIBE {idx}").fetchall()]


def connect(path: Path, memory_mb: int) -> duckdb.DuckDBPyConnection:
    """The DuckDB file at ``path`` with its memory capped (spilling beside it)."""
    con = duckdb.connect(
        str(path),
        config={
            "memory_limit": f"{memory_mb}MB",
            "temp_directory": str(path.parent / "spill"),
            # Rows need no order in the index; without it scans and appends use less memory.
            "preserve_insertion_order": False,
        },
    )
    con.execute("SET TimeZone = 'UTC'")
    return con


def delete_file(path: Path) -> None:
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)


def open_index(path: Path, memory_mb: int) -> duckdb.DuckDBPyConnection:
    """The index file at ``path`` if it was built for these tables, else a new one (the
    old one deleted); :class:`IndexLockedError` when another process holds it."""
    con: duckdb.DuckDBPyConnection | None = None
    found: str | None = None
    if path.exists():
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                con = connect(path, memory_mb)
                found = read_meta(con, "fingerprint")
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    log.warning(
                        "calls index: %s cannot be opened (%s); building it again", path, exc
                    )
                    break
                if time.monotonic() > deadline:
                    raise IndexLockedError(
                        f"the calls index {path} is open in another process: {exc}"
                    ) from None
                time.sleep(0.5)
            except duckdb.Error as exc:
                log.warning("calls index: %s cannot be read (%s); building it again", path, exc)
                break
        if found != fingerprint():
            if found is not None:
                log.warning(
                    "calls index: %s was built for other tables (%s, now %s); building it again",
                    path,
                    found,
                    fingerprint(),
                )
            if con is not None:
                con.close()
                con = None
            delete_file(path)
    if con is None:
        con = connect(path, memory_mb)
        create_tables(con)
    return con
