"""The calls index: the archive's tables copied into one in-memory DuckDB database.

Why a copy: the archive holds one Parquet file per recording and table, and a
scan of 100,000 small files takes tens of seconds (S3: minutes), far too slow
for a page. The console loads the three tables once at start-up through the
same DuckDB views as ``callrec query`` (infra/tables.py), then every
``CALLREC_CONSOLE_INDEX_REFRESH_S`` lists the table folders and adds only the
files of recordings it has not seen (one object read per new file). Measured in
docs/benchmarks.md (console).

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

import logging
import threading
import time
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from compliance.holds import active_holds
from console import metrics
from infra.parquet import read_parquet
from infra.store import ObjectNotFoundError, ObjectStore
from infra.tables import connect
from schemas.layout import parse_table_key, table_prefix

if TYPE_CHECKING:
    from infra.settings import ArchiveSettings

log = logging.getLogger(__name__)

SEGMENT_COLUMNS = ("call_id", "recording_id", "track", "speaker", "segment", "start_ms",
                   "end_ms", "text", "date")
INDEXED = {"calls": "calls_idx", "segments": "segments_idx", "metrics": "metrics_idx"}


class CallIndex:
    """The archive's tables in memory; :meth:`load` once, then :meth:`refresh` now and then."""

    def __init__(self, store: ObjectStore, archive_uri: str,
                 settings: ArchiveSettings | None = None) -> None:
        self.store = store
        self.archive_uri = archive_uri
        self.settings = settings
        self.con = duckdb.connect(":memory:")
        self._lock = threading.Lock()
        self._seen: dict[str, set[str]] = {table: set() for table in INDEXED}
        self.loaded = False
        self.held: frozenset[str] = frozenset()
        """Recording ids under an active legal hold, as of the last refresh."""
        self.columns: frozenset[str] = frozenset()
        """Columns of ``calls_idx`` (the console shows number filters only when present)."""

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    def load(self) -> None:
        """Copy every table in (start-up); the views of infra/tables.py do the reading."""
        started = time.monotonic()
        with self._lock:
            con = self.con
            connect(self.archive_uri, self.settings, con=con, records=False)
            con.execute("CREATE TABLE calls_idx AS SELECT * FROM calls_files")
            con.execute(f"CREATE TABLE segments_idx AS SELECT {', '.join(SEGMENT_COLUMNS)} "
                        "FROM segments_files")
            con.execute("CREATE TABLE metrics_idx AS SELECT * FROM metrics_files")
            for name in ("calls", "segments", "metrics"):
                con.execute(f"DROP VIEW {name}")
                con.execute(f"DROP VIEW {name}_files")
            con.execute("CREATE VIEW call_metrics AS SELECT * FROM metrics_idx "
                        "WHERE track = 'call'")
            con.execute("CREATE TABLE holds_idx (recording_id VARCHAR PRIMARY KEY)")
            self._load_holds(con)
            for table, idx in INDEXED.items():
                self._seen[table] = {
                    row[0] for row in con.execute(f"SELECT DISTINCT recording_id FROM {idx}")
                    .fetchall()}
            self.columns = frozenset(
                row[0] for row in con.execute("DESCRIBE calls_idx").fetchall())
            self.loaded = True
            metrics.INDEX_CALLS.set(len(self._seen["calls"]))
        log.info("calls index: %d recordings, %d with segments, loaded in %.1fs",
                 len(self._seen["calls"]), len(self._seen["segments"]),
                 time.monotonic() - started)

    def refresh(self) -> int:
        """Add the files of recordings archived since; returns how many files were added."""
        started = time.monotonic()
        added = 0
        with self._lock:
            cur = self.con.cursor()
            for table, idx in INDEXED.items():
                for key in self.store.list_keys(table_prefix(table)):
                    parsed = parse_table_key(key)
                    if parsed is None or parsed.recording_id in self._seen[table]:
                        continue
                    try:
                        rows = read_parquet(self.store.get_bytes(key))
                    except (ObjectNotFoundError, pa.ArrowInvalid) as exc:
                        log.warning("calls index: skipping %s: %s", key, exc)
                        continue
                    self._insert(cur, idx, rows, parsed.date)
                    self._seen[table].add(parsed.recording_id)
                    added += 1
            self._load_holds(cur)
            metrics.INDEX_CALLS.set(len(self._seen["calls"]))
        metrics.INDEX_REFRESH.observe(time.monotonic() - started)
        if added:
            log.info("calls index: %d new table files", added)
        return added

    def _load_holds(self, cur: duckdb.DuckDBPyConnection) -> None:
        held = sorted(active_holds(self.store))
        cur.execute("DELETE FROM holds_idx")
        if held:
            cur.executemany("INSERT INTO holds_idx VALUES (?)", [[r] for r in held])
        self.held = frozenset(held)

    @staticmethod
    def _insert(cur: duckdb.DuckDBPyConnection, idx: str, rows: pa.Table, date: str) -> None:
        columns = [r[0] for r in cur.execute(f"DESCRIBE {idx}").fetchall()]
        present = [c for c in columns if c in rows.column_names]
        names = ", ".join(f'"{c}"' for c in present)
        cur.register("new_rows", rows.select(present))
        try:
            cur.execute(f"INSERT INTO {idx} ({names}, date) SELECT {names}, ?::DATE "
                        "FROM new_rows", [date])
        finally:
            cur.unregister("new_rows")

    def has(self, recording_id: str) -> bool:
        return recording_id in self._seen["calls"]

    def count(self) -> int:
        return len(self._seen["calls"])
