"""The calls index: the archive's tables copied into one DuckDB database file.

Why a copy: the archive holds one Parquet file per recording and table, and a
scan of 100,000 small files takes tens of seconds (S3: minutes), far too slow
for a page. Why not DuckDB's own ``read_parquet`` over them (infra/tables.py, the
views of ``callrec query``): measured on 60,000 files it held 680 MiB after the
load and peaked at 1.6 GiB (per-file metadata outside DuckDB's memory limit), so
the console reads the files itself, a batch at a time, through the store
(several at once: S3 latency), conforms each to the table's current schema
(``schemas.tables``: columns added later read as null) and appends the batch.
The same code picks up new recordings: every ``CALLREC_CONSOLE_INDEX_REFRESH_S``
it lists the table folders and reads only files of recordings it has not seen.
Measured in docs/benchmarks.md (review console).

The database is a file (rebuilt at each start, in ``CALLREC_CONSOLE_INDEX_DIR``) with
DuckDB's memory limited to ``CALLREC_CONSOLE_INDEX_MEMORY_MB``: the console's memory
stays bounded however large the archive; the rest is read back from the file.

Tables (the stored columns plus the partition ``date``)::

    calls_idx      one row per recording
    segments_idx   call_id, recording_id, track, speaker, segment, start_ms, end_ms, text
    metrics_idx    every metrics row; the view call_metrics keeps track = 'call'
    holds_idx      recording ids under an active legal hold (``holds/``, re-read each refresh)

A recording analysed again (``callrec analyzer --backfill --force``) keeps its
old segments and metrics in the index until the console restarts.
Thread-safety: each caller takes its own :meth:`cursor`; a lock serialises refreshes.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa

from compliance.holds import active_holds
from console import metrics
from infra.parquet import read_parquet
from infra.store import ObjectNotFoundError, ObjectStore, StoreError
from schemas.layout import TableFile, parse_table_key, table_prefix
from schemas.tables import PARTITION_COLUMN, TABLES

log = logging.getLogger(__name__)

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
BATCH_FILES = 500
"""Files read before one append: bounds the memory of a load."""
READERS = 4
"""Files read at once (S3 round trips overlap)."""


def index_schema(table: str) -> pa.Schema:
    """The columns the index keeps of ``table``, with the partition ``date``."""
    schema = TABLES[table].schema.remove_metadata()
    if table == "segments":
        schema = pa.schema([schema.field(name) for name in SEGMENT_COLUMNS])
    return schema.append(pa.field(PARTITION_COLUMN, pa.date32()))


def conform(rows: pa.Table, schema: pa.Schema, date: str) -> pa.Table:
    """``rows`` with exactly ``schema``'s columns: missing ones null, others dropped."""
    day = dt.date.fromisoformat(date)
    arrays = []
    for field in schema:
        if field.name == PARTITION_COLUMN:
            arrays.append(pa.array([day] * rows.num_rows, pa.date32()))
        elif field.name in rows.column_names:
            arrays.append(rows.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(rows.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _batches(items: Sequence[tuple[str, TableFile]]) -> Iterator[Sequence[tuple[str, TableFile]]]:
    for start in range(0, len(items), BATCH_FILES):
        yield items[start : start + BATCH_FILES]


class CallIndex:
    """The archive's tables in a DuckDB file; :meth:`load` once, then :meth:`refresh`."""

    def __init__(
        self, store: ObjectStore, *, directory: str | None = None, memory_mb: int = 96
    ) -> None:
        self.store = store
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="callrec-console-index-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "index.duckdb"
        for stale in (path, path.with_name(path.name + ".wal")):
            stale.unlink(missing_ok=True)
        self.con = duckdb.connect(
            str(path),
            config={
                "memory_limit": f"{memory_mb}MB",
                "temp_directory": str(self.directory / "spill"),
                # Rows need no order in the index; without it scans and appends use less memory.
                "preserve_insertion_order": False,
            },
        )
        self.con.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()
        self._holds_lock = threading.Lock()
        self._seen: dict[str, set[str]] = {table: set() for table in INDEXED}
        self.loaded = False
        self.held: frozenset[str] = frozenset()
        """Recording ids under an active legal hold, as of the last refresh."""
        self.columns = frozenset(index_schema("calls").names)
        """Columns of ``calls_idx`` (the console shows number filters only when present)."""
        for table, idx in INDEXED.items():
            self.con.register("empty_rows", index_schema(table).empty_table())
            self.con.execute(f"CREATE TABLE {idx} AS SELECT * FROM empty_rows")
            self.con.unregister("empty_rows")
        self.con.execute(
            "CREATE VIEW call_metrics AS SELECT * FROM metrics_idx WHERE track = 'call'"
        )
        self.con.execute("CREATE TABLE holds_idx (recording_id VARCHAR PRIMARY KEY)")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    def load(self) -> None:
        """Read every table file in (start-up); ``loaded`` (``/readyz``) once done."""
        started = time.monotonic()
        self.refresh()
        self.loaded = True
        log.info(
            "calls index: %d recordings, %d with segments, loaded in %.1fs",
            len(self._seen["calls"]),
            len(self._seen["segments"]),
            time.monotonic() - started,
        )

    def refresh(self) -> int:
        """Add the files of recordings archived since; returns how many files were added."""
        started = time.monotonic()
        added = 0
        with self._lock, ThreadPoolExecutor(READERS, thread_name_prefix="index") as pool:
            cur = self.con.cursor()
            for table, idx in INDEXED.items():
                schema = index_schema(table)
                new = []
                for key in self.store.list_keys(table_prefix(table)):
                    parsed = parse_table_key(key)
                    if parsed is not None and parsed.recording_id not in self._seen[table]:
                        new.append((key, parsed))
                for batch in _batches(new):
                    read = functools.partial(self._read, schema)
                    frames = [f for f in pool.map(read, batch) if f is not None]
                    if frames:
                        cur.register("new_rows", pa.concat_tables(frames))
                        try:
                            cur.execute(f"INSERT INTO {idx} SELECT * FROM new_rows")
                        finally:
                            cur.unregister("new_rows")
                    self._seen[table].update(parsed.recording_id for _, parsed in batch)
                    added += len(frames)
                    del frames
                    # Arrow's allocator keeps freed buffers for reuse; a load reads
                    # hundreds of thousands of small files: give them back each batch.
                    pa.default_memory_pool().release_unused()
            self.reload_holds()
            metrics.INDEX_CALLS.set(len(self._seen["calls"]))
        metrics.INDEX_REFRESH.observe(time.monotonic() - started)
        if added:
            log.info("calls index: %d new table files", added)
        return added

    def _read(self, schema: pa.Schema, item: tuple[str, TableFile]) -> pa.Table | None:
        key, parsed = item
        try:
            return conform(read_parquet(self.store.get_bytes(key)), schema, parsed.date)
        except (
            ObjectNotFoundError,
            pa.ArrowInvalid,
            pa.ArrowNotImplementedError,
            ValueError,
        ) as exc:
            log.warning("calls index: skipping %s: %s", key, exc)
            return None
        except StoreError as exc:  # retriable: left unseen, the next refresh tries again
            log.warning("calls index: %s not read (%s); trying again later", key, exc)
            raise

    def reload_holds(self) -> None:
        """Re-read the active holds (each refresh, and at once after the console set or
        cleared one, so its pages show the change)."""
        held = sorted(active_holds(self.store))
        with self._holds_lock:
            cur = self.con.cursor()
            cur.execute("BEGIN TRANSACTION")
            cur.execute("DELETE FROM holds_idx")
            if held:
                cur.executemany("INSERT INTO holds_idx VALUES (?)", [[r] for r in held])
            cur.execute("COMMIT")
            self.held = frozenset(held)

    def close(self) -> None:
        self.con.close()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def has(self, recording_id: str) -> bool:
        return recording_id in self._seen["calls"]

    def count(self) -> int:
        return len(self._seen["calls"])
