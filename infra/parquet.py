"""Parquet encoding of table rows: pure, checked against the schema, byte-deterministic.

``rows_to_parquet`` turns a recording's rows of one table (``schemas.tables``)
into the bytes of one Parquet file; the store writes them at
``schemas.tables.table_key(...)``. Same rows, same bytes: a replay after a
crash rewrites the object identically (docs/architecture.md, "Guarantees"). That holds because
nothing in the file depends on the time or the machine: compression fixed by the
row count (zstd level 3; none for a file of at most ``SMALL_FILE_ROWS`` rows), one
row group, fixed writer options, and the only metadata are
the schema (with its ``callrec.*`` keys) and pyarrow's ``created_by`` string,
which names the pyarrow version: an upgrade may change bytes, never rows.

Rows are checked before encoding, because pyarrow silently drops unknown keys
and fills missing ones with null: a typo in a column name would otherwise
lose data without an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from infra.errors import InfraError
from schemas.tables import ALL_TABLES as TABLES

CONTENT_TYPE = "application/vnd.apache.parquet"
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
SMALL_FILE_ROWS = 16
"""Files of at most this many rows (a recording's ``calls`` row, its ``metrics``) are written
uncompressed and without dictionaries: a page of one value does not shrink, and starting
a zstd stream per column cost the recorder 1.1 ms of its ~20 ms per recording; the
file comes out smaller, too (12.1 vs 13.5 kB for a ``calls`` row)."""


class RowError(InfraError, ValueError):
    """A row does not match its table's schema (missing, unknown or null columns)."""


def rows_to_table(table_name: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows as an Arrow table of ``table_name``'s schema; raise :class:`RowError` if they differ."""
    try:
        schema = TABLES[table_name].schema
    except KeyError:
        raise RowError(f"unknown table {table_name!r}; known: {sorted(TABLES)}") from None
    names = set(schema.names)
    required = [f.name for f in schema if not f.nullable]
    for i, row in enumerate(rows):
        keys = set(row)
        if keys != names:
            missing, unknown = sorted(names - keys), sorted(keys - names)
            raise RowError(
                f"{table_name} row {i}: missing columns {missing}, unknown columns {unknown}"
            )
        nulls = [name for name in required if row[name] is None]
        if nulls:
            raise RowError(f"{table_name} row {i}: null in required columns {nulls}")
    try:
        return pa.Table.from_pylist(list(rows), schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise RowError(f"{table_name}: {exc}") from None


def rows_to_parquet(table_name: str, rows: Sequence[Mapping[str, Any]]) -> bytes:
    """One Parquet file holding ``rows`` of ``table_name``; deterministic bytes."""
    table = rows_to_table(table_name, rows)
    small = len(rows) <= SMALL_FILE_ROWS
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=max(len(rows), 1),
        version="2.6",
        compression=COMPRESSION if not small else "none",
        compression_level=COMPRESSION_LEVEL if not small else None,
        use_dictionary=not small,
        write_statistics=True,
        data_page_version="1.0",
        store_schema=True,
    )
    return bytes(sink.getvalue().to_pybytes())


def read_parquet(data: bytes) -> pa.Table:
    """Read back the bytes of one file (tests, and checking an object after upload)."""
    return pq.read_table(pa.BufferReader(data))
