"""The calls index's database: its tables, their columns, and the fingerprint of both.

One DuckDB file holds the index (console/index.py keeps it, console/loader.py fills
it, docs/console.md describes it)::

    calls_idx      one row per recording (the calls table's columns)
    segments_idx   call_id, recording_id, track, speaker, segment, start_ms, end_ms, text
    metrics_idx    every metrics row; the view call_metrics keeps track = 'call'
    holds_idx      recording ids under an active legal hold (``holds/``, re-read each refresh)
    files          every table file read: file_no, tbl, key (the archive key)
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

import duckdb
import pyarrow as pa

from schemas.tables import PARTITION_COLUMN, TABLES

FORMAT = 2
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
    con.execute("CREATE TABLE files (file_no BIGINT, tbl VARCHAR, key VARCHAR)")
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
