"""The calls index: the archive's tables copied into one DuckDB file, kept across restarts.

Why a copy: the archive holds one Parquet file per recording and table, and a
scan of 100,000 small files takes tens of seconds (S3: minutes), far too slow
for a page. Why not DuckDB's own ``read_parquet`` over them at each query
(infra/tables.py, the views of ``callrec query``): the same scan every page, and
on 60,000 files it held 680 MiB. So the console keeps its own copy (the tables and
columns: console/indexdb.py) and keeps it current: every
``CALLREC_CONSOLE_INDEX_REFRESH_S`` it lists the table folders and compares the
listing with the files it has read (in DuckDB, not in Python sets), then

- reads the new files (console/loader.py): a few in this process, more than
  :attr:`CallIndex.child_from` in a short-lived child process
  (console/indexbuild.py), so the memory of a large load never stays with the
  server; the rows arrive in one transaction with their ``files`` entries;
- deletes the rows of files that left the archive (retention, erasure), and of
  recordings with a tombstone (an erased recording's rows in a compacted file);
- re-reads the active legal holds (``holds/``).

Pages keep working meanwhile: DuckDB readers see the last committed state.

**Kept across restarts** (``CALLREC_CONSOLE_INDEX_DIR`` set): the file stays, and a
console that finds one built with the same tables (:func:`console.indexdb.fingerprint`)
and completely loaded once is ready (``/readyz``) at once and reads only what was
archived since. Another fingerprint, or a file DuckDB cannot open, is deleted and
built again; a file locked by another process is an error (two consoles must not share
a directory: give each its own, or a Recreate rollout with a volume, docs/console.md).
Unset: a temporary directory, removed at exit (built at each start).

DuckDB's memory is limited to ``CALLREC_CONSOLE_INDEX_MEMORY_MB``: the rest of the
index is read back from the file as pages need it. Measured in docs/benchmarks.md.

A recording analysed again (``callrec analyzer --backfill --force``) rewrites its
files under the same keys: the index keeps its old segments and metrics until it is
built again (delete the index file). Thread-safety: each caller takes its own
:meth:`cursor`; a lock serialises refreshes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from compliance.holds import active_holds
from console import metrics
from console.errors import ConsoleError
from console.indexbuild import ChildBuild, store_spec
from console.indexdb import (
    INDEXED,
    create_tables,
    fingerprint,
    index_schema,
    read_meta,
    write_meta,
)
from console.loader import STAGED, PlannedFile, create_stage, drop_stage, load_files
from console.settings import ConsoleSettings
from infra.settings import ArchiveSettings
from infra.store import ObjectStore
from schemas.compliance import TOMBSTONES_PREFIX, recording_of_record
from schemas.layout import table_prefix

log = logging.getLogger(__name__)

FILE_NAME = "index.duckdb"
CHILD_FROM = 1000
"""New files from which a refresh loads them in a child process."""
CHILD_CHUNK = 50_000
"""Files one child run reads (then merged: a long first load keeps its progress)."""
_KEY_PATTERN = r"^tables/[^/]+/date=(\d{4}-\d{2}-\d{2})/[^/]+\.parquet$"


class IndexLockedError(ConsoleError):
    """Another process has the index file open (two consoles on one directory)."""


class CallIndex:
    """The archive's tables in a DuckDB file; :meth:`load` once, then :meth:`refresh`."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        directory: str | None = None,
        memory_mb: int = 96,
        archive: ArchiveSettings | None = None,
        build_memory_mb: int = 256,
        readers: int = 16,
        child_from: int = CHILD_FROM,
    ) -> None:
        self.store = store
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="callrec-console-index-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / FILE_NAME
        self.memory_mb = memory_mb
        self.build_memory_mb = build_memory_mb
        self.readers = readers
        self.child_from = child_from
        """New files from which a refresh reads them in a child process."""
        self._child_store = store_spec(store, archive)
        self._child: ChildBuild | None = None
        self._lock = threading.Lock()
        self._holds_lock = threading.Lock()
        self._closing = threading.Event()
        self.held: frozenset[str] = frozenset()
        """Recording ids under an active legal hold, as of the last refresh."""
        self.columns = frozenset(index_schema("calls").names)
        """Columns of ``calls_idx`` (the console shows number filters only when present)."""
        self._stage_path().unlink(missing_ok=True)  # a build interrupted by a stop
        self.con = self._open()
        self.held = frozenset(r for (r,) in self.con.execute("SELECT * FROM holds_idx").fetchall())
        self.loaded = read_meta(self.con, "complete") is not None
        """Ready to serve (``/readyz``): loaded completely once, by this process or before."""
        if self.loaded:
            log.info(
                "calls index: %s kept from before (%d recordings); reading what is new",
                self.path,
                self.count(),
            )

    @classmethod
    def for_console(cls, store: ObjectStore, settings: ConsoleSettings) -> CallIndex:
        return cls(
            store,
            directory=settings.console_index_dir,
            memory_mb=settings.console_index_memory_mb,
            archive=settings,
            build_memory_mb=settings.console_index_build_memory_mb,
            readers=settings.console_index_readers,
        )

    def _connect(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(
            str(self.path),
            config={
                "memory_limit": f"{self.memory_mb}MB",
                "temp_directory": str(self.directory / "spill"),
                # Rows need no order in the index; without it scans and appends use less memory.
                "preserve_insertion_order": False,
            },
        )

    def _open(self) -> duckdb.DuckDBPyConnection:
        """The index file if it fits this console, else a new one."""
        con: duckdb.DuckDBPyConnection | None = None
        if self._own_dir:
            self._delete_file()
        elif self.path.exists():
            try:
                con = self._connect()
                found = read_meta(con, "fingerprint")
            except duckdb.IOException as exc:
                if "lock" in str(exc).lower():
                    raise IndexLockedError(
                        f"the calls index {self.path} is open in another process: {exc}"
                    ) from None
                found = None
                log.warning(
                    "calls index: %s cannot be opened (%s); building it again", self.path, exc
                )
            except duckdb.Error as exc:
                found = None
                log.warning(
                    "calls index: %s cannot be read (%s); building it again", self.path, exc
                )
            if found != fingerprint():
                if found is not None:
                    log.warning(
                        "calls index: %s was built for other tables (%s, now %s); building it "
                        "again",
                        self.path,
                        found,
                        fingerprint(),
                    )
                if con is not None:
                    con.close()
                    con = None
                self._delete_file()
        if con is None:
            con = self._connect()
            create_tables(con)
        con.execute("SET TimeZone = 'UTC'")
        return con

    def _delete_file(self) -> None:
        for stale in (self.path, self.path.with_name(self.path.name + ".wal")):
            stale.unlink(missing_ok=True)

    def _stage_path(self) -> Path:
        return self.directory / "stage.duckdb"

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    def load(self) -> int:
        """Catch up with the archive (start-up), trying again until it works or the index
        closes; ``loaded`` (``/readyz``) once done, if it was not already. Returns how many
        files were read."""
        started = time.monotonic()
        delay = 1.0
        read = 0
        while not self._closing.is_set():
            try:
                read = self.refresh()
                break
            except Exception:
                if self._closing.is_set():
                    return read
                log.exception("calls index: loading failed; trying again in %.0fs", delay)
                self._closing.wait(delay)
                delay = min(delay * 2, 60.0)
        else:
            return read
        if not self.loaded:
            with self._lock, self.con.cursor() as cur:
                write_meta(cur, "complete", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                cur.execute("CHECKPOINT")
            self.loaded = True
        log.info(
            "calls index: %d recordings, caught up in %.1fs (%d files read)",
            self.count(),
            time.monotonic() - started,
            read,
        )
        return read

    def refresh(self) -> int:
        """Add the files archived since, drop those gone; returns how many files were read."""
        started = time.monotonic()
        with self._lock:
            cur = self.con.cursor()
            try:
                gone, new = self._compare(cur)
                if gone:
                    self._forget(cur, gone)
                added = self._read_new(cur, new) if new else 0
                self._apply_tombstones(cur)
            finally:
                cur.execute("DROP TABLE IF EXISTS temp.listed")
                cur.execute("DROP TABLE IF EXISTS temp.gone")
                cur.close()
            self.reload_holds()
            metrics.INDEX_CALLS.set(self.count())
        metrics.INDEX_REFRESH.observe(time.monotonic() - started)
        if added or gone:
            log.info("calls index: %d new table files, %d gone", added, gone)
        return added

    def _compare(self, cur: duckdb.DuckDBPyConnection) -> tuple[int, int]:
        """List the table folders into ``temp.listed`` and the files gone since into
        ``temp.gone``. Returns (files gone, files new)."""
        cur.execute("CREATE OR REPLACE TEMP TABLE listed (tbl VARCHAR, key VARCHAR)")
        skip_gone: list[str] = []
        for table in INDEXED:
            keys = self.store.list_keys(table_prefix(table))
            if not keys:
                # An archive does not lose a whole table: more likely an unmounted
                # volume or a wrong prefix. Keep what the index has.
                skip_gone.append(table)
            cur.register("listing", pa.table({"key": pa.array(keys, pa.string())}))
            del keys
            try:
                cur.execute(
                    "INSERT INTO temp.listed SELECT ?, key FROM listing "
                    "WHERE regexp_matches(key, ?)",
                    [table, _KEY_PATTERN],
                )
            finally:
                cur.unregister("listing")
        cur.execute(
            "CREATE OR REPLACE TEMP TABLE gone AS SELECT file_no FROM files f "
            "WHERE f.tbl NOT IN (SELECT unnest(?::VARCHAR[])) "
            "AND NOT EXISTS (SELECT 1 FROM temp.listed l WHERE l.key = f.key)",
            [skip_gone],
        )
        gone_rows = cur.execute("SELECT count(*) FROM temp.gone").fetchall()
        new_rows = cur.execute(
            "SELECT count(*) FROM temp.listed l "
            "WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.key = l.key)"
        ).fetchall()
        if skip_gone and self.count():
            log.warning("calls index: no files listed for %s; kept as they are", skip_gone)
        return int(gone_rows[0][0]), int(new_rows[0][0])

    def _forget(self, cur: duckdb.DuckDBPyConnection, count: int) -> None:
        """Delete the rows of the files in ``temp.gone``, with their entries."""
        cur.begin()
        try:
            for idx in INDEXED.values():
                cur.execute(f"DELETE FROM {idx} WHERE file_no IN (SELECT file_no FROM temp.gone)")
            cur.execute("DELETE FROM files WHERE file_no IN (SELECT file_no FROM temp.gone)")
            cur.commit()
        except BaseException:
            cur.rollback()
            raise
        log.info("calls index: %d table files left the archive; their rows are gone", count)

    def _new_files_sql(self) -> str:
        """The new files, numbered after the last one the index has."""
        return (
            "SELECT (SELECT coalesce(max(file_no), 0) FROM files) "
            "+ row_number() OVER (ORDER BY l.key) AS file_no, l.tbl, l.key, "
            f"CAST(regexp_extract(l.key, '{_KEY_PATTERN}', 1) AS DATE) AS date "
            "FROM temp.listed l WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.key = l.key)"
        )

    def _read_new(self, cur: duckdb.DuckDBPyConnection, count: int) -> int:
        if count >= self.child_from and self._child_store is not None:
            return self._read_in_child(cur, count)
        rows = cur.execute(self._new_files_sql()).fetchall()
        plan = [PlannedFile(no, table, key, date.isoformat()) for no, table, key, date in rows]
        create_stage(cur, temporary=True)
        try:
            report = load_files(cur, self.store, plan, readers=self.readers)
            self._merge(cur, "")
        finally:
            drop_stage(cur)
        return report.files

    def _read_in_child(self, cur: duckdb.DuckDBPyConnection, count: int) -> int:
        """Read ``count`` new files in child processes, :data:`CHILD_CHUNK` a run, each
        merged before the next (a long first load keeps what it did)."""
        assert self._child_store is not None
        stage = self._stage_path()
        attach = "ATTACH '" + str(stage).replace("'", "''") + "' AS stage"
        added = 0
        for _ in range(0, count, CHILD_CHUNK):
            if self._closing.is_set():
                break
            stage.unlink(missing_ok=True)
            cur.execute(attach)
            try:
                cur.execute(
                    f"CREATE TABLE stage.plan AS {self._new_files_sql()} "
                    f"ORDER BY file_no LIMIT {CHILD_CHUNK}"
                )
            finally:
                cur.execute("DETACH stage")
            self._child = ChildBuild(
                stage, self._child_store, memory_mb=self.build_memory_mb, readers=self.readers
            )
            try:
                report = self._child.run()
                cur.execute(attach + " (READ_ONLY)")
                try:
                    self._merge(cur, "stage.")
                finally:
                    cur.execute("DETACH stage")
            finally:
                self._child = None
                stage.unlink(missing_ok=True)
            added += report.files
            if report.files == 0:
                break  # nothing readable now: the next refresh tries again
        return added

    def _merge(self, cur: duckdb.DuckDBPyConnection, source: str) -> None:
        """Move the stage's rows and files into the index, all or nothing."""
        cur.begin()
        try:
            for table, idx in INDEXED.items():
                cur.execute(f"INSERT INTO {idx} SELECT * FROM {source}{STAGED[table]}")
            cur.execute(f"INSERT INTO files SELECT * FROM {source}new_files")
            cur.commit()
        except BaseException:
            cur.rollback()
            raise

    def _apply_tombstones(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Delete the rows of recordings erased since (their tombstones): a compacted file
        that held them was rewritten under the same key, which the listing cannot see."""
        erased = [
            rec
            for key in self.store.list_keys(TOMBSTONES_PREFIX)
            if (rec := recording_of_record(key)) is not None
        ]
        if not erased:
            return
        cur.register("tombstones", pa.table({"recording_id": pa.array(erased, pa.string())}))
        try:
            cur.execute(
                "CREATE OR REPLACE TEMP TABLE newly_erased AS SELECT recording_id FROM tombstones "
                "WHERE recording_id NOT IN (SELECT recording_id FROM erased)"
            )
        finally:
            cur.unregister("tombstones")
        try:
            count = cur.execute("SELECT count(*) FROM temp.newly_erased").fetchall()[0][0]
            if not count:
                return
            cur.begin()
            try:
                for idx in INDEXED.values():
                    cur.execute(
                        f"DELETE FROM {idx} WHERE recording_id IN "
                        "(SELECT recording_id FROM temp.newly_erased)"
                    )
                cur.execute("INSERT INTO erased SELECT recording_id FROM temp.newly_erased")
                cur.commit()
            except BaseException:
                cur.rollback()
                raise
            log.info("calls index: rows of %d erased recordings deleted", count)
        finally:
            cur.execute("DROP TABLE IF EXISTS temp.newly_erased")

    def reload_holds(self) -> None:
        """Re-read the active holds (each refresh, and at once after the console set or
        cleared one, so its pages show the change)."""
        held = sorted(active_holds(self.store))
        with self._holds_lock, self.con.cursor() as cur:
            if frozenset(held) == self.held:
                return
            cur.begin()
            try:
                cur.execute("DELETE FROM holds_idx")
                if held:
                    cur.executemany("INSERT INTO holds_idx VALUES (?)", [[r] for r in held])
                cur.commit()
            except BaseException:
                cur.rollback()
                raise
            self.held = frozenset(held)

    def close(self) -> None:
        self._closing.set()
        # A refresh may be waiting on a child build: end it, then the refresh ends.
        while not self._lock.acquire(timeout=0.2):
            child = self._child
            if child is not None:
                child.stop()
        try:
            self.con.execute("CHECKPOINT")
        except duckdb.Error as exc:
            log.warning("calls index: checkpoint at exit failed: %s", exc)
        finally:
            self.con.close()
            self._lock.release()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def has(self, recording_id: str) -> bool:
        with self.con.cursor() as cur:
            sql = "SELECT count(*) FROM calls_idx WHERE recording_id = ?"
            return bool(cur.execute(sql, [recording_id]).fetchall()[0][0])

    def count(self) -> int:
        """Recordings in the index."""
        with self.con.cursor() as cur:
            return int(cur.execute("SELECT count(*) FROM calls_idx").fetchall()[0][0])
