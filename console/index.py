"""The calls index: the archive's tables copied into one DuckDB file, kept across restarts.

Why a copy: the archive holds one Parquet file per recording and table, and a
scan of 100,000 small files takes tens of seconds (S3: minutes), far too slow
for a page. Why not DuckDB's own ``read_parquet`` over them at each query
(infra/tables.py, the views of ``callrec query``): the same scan every page, and
on 60,000 files it held 680 MiB. So the console keeps its own copy (the tables and
columns: console/indexdb.py) and keeps it current: every
``CALLREC_CONSOLE_INDEX_REFRESH_S`` it lists the table folders and compares the
listing with the files it has read (in DuckDB, not in Python sets), then

- reads the new files (console/loader.py), and moves their rows in with their
  ``files`` entries in one transaction;
- deletes the rows of files that left the archive (retention, erasure), and of
  recordings with a tombstone (an erased recording's rows in a compacted file);
- re-reads the active legal holds (``holds/``).

Pages keep working meanwhile: DuckDB readers see the last committed state.

**Memory.** Reading a hundred thousand files leaves a process larger than the index
it built (366 MiB after 100,000 recordings, docs/benchmarks.md), so large loads run in
a short-lived child process (console/indexbuild.py) and leave with it: the first load
of an archive of :attr:`CallIndex.child_from` files or more builds the file in a child
before the console opens it (pages see an empty index and ``/readyz`` says 503
meanwhile), and a later catch-up of that many new files is read by a child into a
stage file that the console merges. DuckDB's memory is capped by
``CALLREC_CONSOLE_INDEX_MEMORY_MB``; the rest of the index is read back from the file.

**Kept across restarts** (``CALLREC_CONSOLE_INDEX_DIR`` set): a console that finds an
index built for the same tables (:func:`console.indexdb.fingerprint`) and completely
loaded once is ready at once and reads only what was archived since. Another
fingerprint, or a file DuckDB cannot open, is deleted and built again; a file another
process holds is an error (one console per directory, docs/console.md). Unset: a
temporary directory, removed at exit (built at each start).

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
from console.indexbuild import ChildBuild, store_spec
from console.indexdb import (
    INDEXED,
    IndexLockedError,
    connect,
    create_tables,
    delete_file,
    index_schema,
    open_index,
    read_meta,
    write_meta,
)
from console.loader import STAGED, LoadReport, PlannedFile, create_stage, drop_stage, load_files
from console.settings import ConsoleSettings
from infra.settings import ArchiveSettings
from infra.store import ObjectStore
from schemas.compliance import TOMBSTONES_PREFIX, recording_of_record
from schemas.layout import table_prefix

__all__ = ["CallIndex", "IndexLockedError"]

log = logging.getLogger(__name__)

FILE_NAME = "index.duckdb"
CHILD_FROM = 1000
"""Files to read from which the work goes to a child process."""
CHUNK = 20_000
"""Files read before their rows are merged (a long load keeps its progress)."""
_KEY_PATTERN = r"^tables/[^/]+/date=(\d{4}-\d{2}-\d{2})/[^/]+\.parquet$"


class CallIndex:
    """The archive's tables in a DuckDB file; :meth:`load` once, then :meth:`refresh`."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        directory: str | None = None,
        memory_mb: int = 96,
        archive: ArchiveSettings | None = None,
        build_memory_mb: int = 128,
        readers: int = 16,
        child_from: int = CHILD_FROM,
        spawn: bool = True,
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
        """Files to read from which the work goes to a child process."""
        self._child_store = store_spec(store, archive) if spawn else None
        self._child: ChildBuild | None = None
        self._lock = threading.Lock()
        self._holds_lock = threading.Lock()
        self._closing = threading.Event()
        self.last = LoadReport()
        """What the last refresh read."""
        self.columns = frozenset(index_schema("calls").names)
        """Columns of ``calls_idx`` (the console shows number filters only when present)."""
        self._stage_path().unlink(missing_ok=True)  # a catch-up interrupted by a stop
        if self._own_dir:
            delete_file(self.path)
        con = open_index(self.path, memory_mb)
        self.loaded = read_meta(con, "complete") is not None
        """Ready to serve (``/readyz``): loaded completely once, by this process or before."""
        self._detached = not self.loaded and self._child_store is not None
        if self._detached:
            # The first load may run in a child process, which needs the file: until it is
            # done the pages see an empty index (and /readyz answers 503).
            con.close()
            con = duckdb.connect(config={"memory_limit": "16MB"})
            create_tables(con)
        self.con = con
        self.held = self._read_held()
        """Recording ids under an active legal hold, as of the last refresh."""
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

    def _stage_path(self) -> Path:
        return self.directory / "stage.duckdb"

    def _read_held(self) -> frozenset[str]:
        with self.con.cursor() as cur:
            return frozenset(r for (r,) in cur.execute("SELECT * FROM holds_idx").fetchall())

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> int:
        """Catch up with the archive (start-up), trying again until it works or the index
        closes; ``loaded`` (``/readyz``) once done, if it was not already. Returns how many
        files were read."""
        started = time.monotonic()
        delay = 1.0
        while not self._closing.is_set():
            try:
                read = self._first_load() if self._detached else 0
                read += self.refresh()
                break
            except Exception:
                if self._closing.is_set():
                    return 0
                log.exception("calls index: loading failed; trying again in %.0fs", delay)
                self._closing.wait(delay)
                delay = min(delay * 2, 60.0)
        else:
            return 0
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

    def _first_load(self) -> int:
        """Build the file in a child process if the archive is large, then open it."""
        assert self._child_store is not None
        listed = sum(len(self.store.list_keys(table_prefix(table))) for table in INDEXED)
        read = 0
        if listed >= self.child_from:
            self._child = ChildBuild(
                {
                    "mode": "build",
                    "directory": str(self.directory),
                    "store": self._child_store,
                    "memory_mb": self.build_memory_mb,
                    "readers": self.readers,
                }
            )
            try:
                read = self._child.run().files
            finally:
                self._child = None
        with self._lock:
            if self._closing.is_set():
                raise RuntimeError("the console is stopping")
            self.con = connect(self.path, self.memory_mb)
            self._detached = False
            self.held = self._read_held()
        return read

    def refresh(self) -> int:
        """Add the files archived since, drop those gone; returns how many files were read."""
        if self._detached:
            return 0  # load() has not opened the file yet
        started = time.monotonic()
        with self._lock:
            cur = self.con.cursor()
            try:
                gone, new = self._compare(cur)
                if gone:
                    self._forget(cur, gone)
                if new >= self.child_from and self._child_store is not None:
                    self.last = self._read_in_child(cur, new)
                else:
                    self.last = self._read_here(cur, new) if new else LoadReport()
                self._apply_tombstones(cur)
            finally:
                cur.execute("DROP TABLE IF EXISTS temp.new")
                cur.execute("DROP TABLE IF EXISTS temp.gone")
                cur.close()
            self.reload_holds()
            metrics.INDEX_CALLS.set(self.count())
        metrics.INDEX_REFRESH.observe(time.monotonic() - started)
        if self.last.files or gone:
            log.info("calls index: %d new table files, %d gone", self.last.files, gone)
        return self.last.files

    def _compare(self, cur: duckdb.DuckDBPyConnection) -> tuple[int, int]:
        """List the table folders; the new files' keys into ``temp.new``, the numbers of
        the files gone into ``temp.gone``. Returns (files gone, files new).

        The listing is compared by the keys' MD5 (``files.h``) as DuckDB reads it from
        Arrow: holding 300,000 keys as DuckDB strings cost the console 90 MiB that
        DuckDB's allocator kept (docs/benchmarks.md)."""
        cur.execute("CREATE OR REPLACE TEMP TABLE new (tbl VARCHAR, key VARCHAR)")
        cur.execute("CREATE OR REPLACE TEMP TABLE gone (file_no BIGINT)")
        for table in INDEXED:
            keys = self.store.list_keys(table_prefix(table))
            listing = pa.table({"key": pa.array(keys, pa.string())})
            empty = not keys
            del keys
            cur.register("listing", listing)
            try:
                cur.execute(
                    "CREATE OR REPLACE TEMP TABLE listed AS "
                    "SELECT md5_number_lower(key) AS h FROM listing"
                )
                cur.execute(
                    "INSERT INTO temp.new SELECT ?, key FROM listing "
                    "WHERE regexp_matches(key, ?) AND md5_number_lower(key) NOT IN "
                    "(SELECT h FROM files WHERE tbl = ?)",
                    [table, _KEY_PATTERN, table],
                )
                if empty:
                    # An archive does not lose a whole table: more likely an unmounted
                    # volume or a wrong prefix. Keep what the index has.
                    if self.count():
                        log.warning("calls index: no %s files listed; kept as they are", table)
                else:
                    cur.execute(
                        "INSERT INTO temp.gone SELECT file_no FROM files "
                        "WHERE tbl = ? AND h NOT IN (SELECT h FROM temp.listed)",
                        [table],
                    )
            finally:
                cur.unregister("listing")
                cur.execute("DROP TABLE IF EXISTS temp.listed")
                del listing
                pa.default_memory_pool().release_unused()
        gone = cur.execute("SELECT count(*) FROM temp.gone").fetchall()
        new = cur.execute("SELECT count(*) FROM temp.new").fetchall()
        return int(gone[0][0]), int(new[0][0])

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

    def _plan_sql(self, chunk: int) -> str:
        """Chunk ``chunk`` of the new files (:data:`CHUNK` a chunk), numbered after the
        last file the index has."""
        return (
            "SELECT (SELECT coalesce(max(file_no), 0) FROM files) "
            "+ row_number() OVER (ORDER BY n.key) AS file_no, n.tbl, n.key, "
            f"CAST(regexp_extract(n.key, '{_KEY_PATTERN}', 1) AS DATE) AS date "
            f"FROM (SELECT * FROM temp.new ORDER BY key LIMIT {CHUNK} OFFSET {chunk * CHUNK}) n"
        )

    def _read_here(self, cur: duckdb.DuckDBPyConnection, count: int) -> LoadReport:
        """Read the ``count`` new files in this process, a chunk at a time (files that
        failed for now are left for the next refresh)."""
        total = LoadReport()
        for chunk in range(0, -(-count // CHUNK)):
            if self._closing.is_set():
                break
            rows = cur.execute(self._plan_sql(chunk)).fetchall()
            plan = [PlannedFile(no, table, key, date.isoformat()) for no, table, key, date in rows]
            create_stage(cur, temporary=True)
            try:
                total.add(load_files(cur, self.store, plan, readers=self.readers))
                self._merge(cur, "")
            finally:
                drop_stage(cur)
        return total

    def _read_in_child(self, cur: duckdb.DuckDBPyConnection, count: int) -> LoadReport:
        """Read ``count`` new files in child processes, :data:`CHUNK` a run, each merged
        before the next: the child writes a stage file, this process moves it in."""
        assert self._child_store is not None
        stage = self._stage_path()
        attach = "ATTACH '" + str(stage).replace("'", "''") + "' AS stage"
        total = LoadReport()
        for chunk in range(0, -(-count // CHUNK)):
            if self._closing.is_set():
                break
            stage.unlink(missing_ok=True)
            cur.execute(attach)
            try:
                cur.execute(f"CREATE TABLE stage.plan AS {self._plan_sql(chunk)}")
            finally:
                cur.execute("DETACH stage")
            self._child = ChildBuild(
                {
                    "mode": "stage",
                    "stage": str(stage),
                    "store": self._child_store,
                    "memory_mb": self.build_memory_mb,
                    "readers": self.readers,
                }
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
            total.add(report)
        return total

    def _merge(self, cur: duckdb.DuckDBPyConnection, source: str) -> None:
        """Move the stage's rows and files into the index, all or nothing."""
        cur.begin()
        try:
            for table, idx in INDEXED.items():
                cur.execute(f"INSERT INTO {idx} SELECT * FROM {source}{STAGED[table]}")
            cur.execute(
                "INSERT INTO files SELECT file_no, tbl, key, md5_number_lower(key) "
                f"FROM {source}new_files"
            )
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

    # -- the rest --------------------------------------------------------------------------

    def close(self) -> None:
        self._closing.set()
        # A refresh or first load may be waiting on a child process: end it, then it ends.
        while not self._lock.acquire(timeout=0.2):
            child = self._child
            if child is not None:
                child.stop()
        try:
            if not self._detached:
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


def build(store: ObjectStore, directory: str, memory_mb: int, readers: int) -> LoadReport:
    """The child's part of a first load: catch the index file up, in this process."""
    index = CallIndex(store, directory=directory, memory_mb=memory_mb, readers=readers, spawn=False)
    try:
        index.refresh()
        return index.last
    finally:
        index.close()
