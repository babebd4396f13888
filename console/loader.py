"""Reading archive table files into the calls index's stage tables.

The rows of a load go first into stage tables (``new_calls``, ``new_segments``,
``new_metrics``, and ``new_files``: the files read), which console/index.py then moves
into the index in one transaction: a failed read leaves the index as it was, and a
file's rows and its ``files`` entry arrive together. The stage is a temporary table of
the console's own connection for a few files, or a separate DuckDB file written by a
child process (console/indexbuild.py) for many.

Two readers, the same rows (the index's columns, console/indexdb.py: columns a file
lacks read as null, others are dropped; each row gets its file's ``date`` and
``file_no``):

- **local archive**: DuckDB's ``read_parquet`` over :data:`LOCAL_BATCH` files a
  statement, by path: 0.3 to 0.6 ms a file on the shared benchmark machine, against 0.8
  to 1.2 ms through pyarrow one file at a time (docs/benchmarks.md, review console).
- **any store (S3)**: ``readers`` threads fetch the objects through the store (the
  round trips overlap) and pyarrow decodes them; :data:`FETCH_BATCH` files an append.

A file that cannot be read for good (gone since the listing, not Parquet, a column of
another type) is logged and recorded with no rows: it is not tried again while it stays
in the archive. A store error that may pass (S3 unavailable, a local I/O error) leaves
the file out of ``new_files``: the next refresh tries it again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import duckdb
import pyarrow as pa

from console.indexdb import FILE_COLUMN, INDEXED, column_types, index_schema
from infra.store import LocalStore, ObjectNotFoundError, ObjectStore, StoreError
from schemas.tables import PARTITION_COLUMN

log = logging.getLogger(__name__)

STAGED = {table: f"new_{table}" for table in INDEXED}
"""Archive table -> stage table."""
LOCAL_BATCH = 500
"""Local files one ``read_parquet`` statement reads (2,000 took more memory and time)."""
FETCH_BATCH = 500
"""Files fetched through the store before one append: bounds the memory of a load."""


class PlannedFile(NamedTuple):
    """A table file to read and the number its rows will carry."""

    file_no: int
    table: str
    key: str
    date: str
    """``YYYY-MM-DD``, the file's ``date=`` partition."""


@dataclass
class LoadReport:
    files: int = 0
    """Files recorded in ``new_files`` (read, or skipped for good)."""
    rows: int = 0
    skipped: int = 0
    """Files that cannot be read (recorded with no rows)."""
    retry: int = 0
    """Files left for the next refresh (a store error that may pass)."""

    def add(self, other: LoadReport) -> None:
        self.files += other.files
        self.rows += other.rows
        self.skipped += other.skipped
        self.retry += other.retry


def create_stage(con: duckdb.DuckDBPyConnection, *, temporary: bool) -> None:
    """Empty stage tables: temporary ones (this connection only) or in the main database."""
    temp = "TEMP " if temporary else ""
    for table, staged in STAGED.items():
        con.register("empty_rows", index_schema(table).empty_table())
        try:
            con.execute(f"CREATE OR REPLACE {temp}TABLE {staged} AS SELECT * FROM empty_rows")
        finally:
            con.unregister("empty_rows")
    con.execute(
        f"CREATE OR REPLACE {temp}TABLE new_files (file_no BIGINT, tbl VARCHAR, key VARCHAR)"
    )


def drop_stage(con: duckdb.DuckDBPyConnection) -> None:
    for staged in [*STAGED.values(), "new_files"]:
        con.execute(f"DROP TABLE IF EXISTS {staged}")


def load_files(
    con: duckdb.DuckDBPyConnection,
    store: ObjectStore,
    files: Sequence[PlannedFile],
    *,
    readers: int,
) -> LoadReport:
    """Read ``files`` into the stage tables of ``con`` (made by :func:`create_stage`)."""
    report = LoadReport()
    for table in INDEXED:
        mine = [f for f in files if f.table == table]
        if not mine:
            continue
        if isinstance(store, LocalStore):
            _LocalReader(con, store.root, table, report).read(mine)
        else:
            _FetchReader(con, store, table, report, readers).read(mine)
    return report


def _chunks(items: Sequence[PlannedFile], size: int) -> Iterator[Sequence[PlannedFile]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _record(con: duckdb.DuckDBPyConnection, done: Sequence[PlannedFile]) -> None:
    if not done:
        return
    con.register(
        "done_files",
        pa.table(
            {
                "file_no": pa.array([f.file_no for f in done], pa.int64()),
                "tbl": [f.table for f in done],
                "key": [f.key for f in done],
            }
        ),
    )
    try:
        con.execute("INSERT INTO new_files SELECT * FROM done_files")
    finally:
        con.unregister("done_files")


def _dates(files: Sequence[PlannedFile]) -> pa.Array:
    return pa.array([dt.date.fromisoformat(f.date) for f in files], pa.date32())


class _LocalReader:
    """DuckDB's ``read_parquet`` over the files' paths, many a statement."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, root: Path, table: str, report: LoadReport
    ) -> None:
        self.con, self.root, self.table, self.report = con, root, table, report
        self.staged = STAGED[table]
        self.columns = [
            (name, kind)
            for name, kind in column_types(con, self.staged)
            if name not in (PARTITION_COLUMN, FILE_COLUMN)
        ]

    def read(self, files: Sequence[PlannedFile]) -> None:
        for batch in _chunks(files, LOCAL_BATCH):
            self._batch(batch)

    def _batch(self, batch: Sequence[PlannedFile]) -> None:
        try:
            self.report.rows += self._insert(batch)
        except duckdb.Error as exc:
            if len(batch) > 1:  # one bad file fails the statement: find it
                for one in batch:
                    self._batch([one])
                return
            self._failed(batch[0], exc)
            return
        _record(self.con, batch)
        self.report.files += len(batch)

    def _failed(self, file: PlannedFile, exc: duckdb.Error) -> None:
        if isinstance(exc, duckdb.IOException) and (self.root / file.key).exists():
            log.warning("calls index: %s not read (%s); trying again later", file.key, exc)
            self.report.retry += 1
            return
        log.warning("calls index: skipping %s: %s", file.key, exc)
        _record(self.con, [file])
        self.report.files += 1
        self.report.skipped += 1

    def _insert(self, batch: Sequence[PlannedFile]) -> int:
        paths = [str(self.root / f.key) for f in batch]
        source = "read_parquet(?, union_by_name = true, hive_partitioning = false"
        # The columns of these files: an older schema lacks the newer ones (null here).
        present = {
            row[0]
            for row in self.con.execute(f"DESCRIBE SELECT * FROM {source})", [paths]).fetchall()
        }
        select = ", ".join(
            f'CAST(r."{name}" AS {kind})' if name in present else f"CAST(NULL AS {kind})"
            for name, kind in self.columns
        )
        self.con.register(
            "batch_files",
            pa.table(
                {
                    "path": paths,
                    "date": _dates(batch),
                    "file_no": pa.array([f.file_no for f in batch], pa.int64()),
                }
            ),
        )
        try:
            inserted = self.con.execute(
                f"INSERT INTO {self.staged} SELECT {select}, b.date, b.file_no "
                f"FROM {source}, filename = '_callrec_path') r "
                "JOIN batch_files b ON r._callrec_path = b.path",
                [paths],
            ).fetchall()
            return int(inserted[0][0])
        finally:
            self.con.unregister("batch_files")


_SKIP = "skip"
_RETRY = "retry"


class _FetchReader:
    """Objects fetched through the store by ``readers`` threads, decoded by pyarrow."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        store: ObjectStore,
        table: str,
        report: LoadReport,
        readers: int,
    ) -> None:
        self.con, self.store, self.table, self.report = con, store, table, report
        self.readers = readers
        self.staged = STAGED[table]
        self.schema = index_schema(table)

    def read(self, files: Sequence[PlannedFile]) -> None:
        with ThreadPoolExecutor(self.readers, thread_name_prefix="index-read") as pool:
            for batch in _chunks(files, FETCH_BATCH):
                results = list(pool.map(self._fetch, batch))
                frames = [frame for frame in results if isinstance(frame, pa.Table)]
                if frames:
                    rows = pa.concat_tables(frames).combine_chunks()
                    self.con.register("new_rows", rows)
                    try:
                        self.con.execute(f"INSERT INTO {self.staged} SELECT * FROM new_rows")
                    finally:
                        self.con.unregister("new_rows")
                    self.report.rows += rows.num_rows
                    del rows
                done = [f for f, got in zip(batch, results, strict=True) if got is not _RETRY]
                _record(self.con, done)
                self.report.files += len(done)
                self.report.skipped += sum(1 for got in results if got is _SKIP)
                self.report.retry += len(batch) - len(done)
                del frames, results
                # Arrow keeps freed buffers for reuse; a load reads thousands of small
                # files: give them back each batch.
                pa.default_memory_pool().release_unused()

    def _fetch(self, file: PlannedFile) -> pa.Table | str:
        """The file's rows, or :data:`_SKIP` (for good) or :data:`_RETRY` (later)."""
        import pyarrow.parquet as pq

        try:
            data = self.store.get_bytes(file.key)
            rows = pq.ParquetFile(pa.BufferReader(data)).read()
            return conform(rows, self.schema, file)
        except (
            ObjectNotFoundError,
            FileNotFoundError,
            pa.ArrowInvalid,
            pa.ArrowNotImplementedError,
            ValueError,
        ) as exc:
            log.warning("calls index: skipping %s: %s", file.key, exc)
            return _SKIP
        except StoreError as exc:
            log.warning("calls index: %s not read (%s); trying again later", file.key, exc)
            return _RETRY


def conform(rows: pa.Table, schema: pa.Schema, file: PlannedFile) -> pa.Table:
    """``rows`` with exactly ``schema``'s columns: missing ones null, others dropped; the
    file's ``date`` and ``file_no`` on every row."""
    count = rows.num_rows
    arrays = []
    for field in schema:
        if field.name == PARTITION_COLUMN:
            arrays.append(pa.array([dt.date.fromisoformat(file.date)] * count, pa.date32()))
        elif field.name == FILE_COLUMN:
            arrays.append(pa.array([file.file_no] * count, pa.int64()))
        elif field.name in rows.column_names:
            arrays.append(rows.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(count, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
