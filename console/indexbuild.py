"""Loading many table files in a child process: the console's own memory stays small.

Reading a hundred thousand Parquet files leaves a process larger than the index it
built (allocator fragmentation, per-file metadata: 366 MiB after loading 100,000
recordings, docs/benchmarks.md), and the console runs for weeks. So the first load,
and any catch-up of more than ``CallIndex.child_from`` files, runs in a short-lived
child (``python -m console.indexbuild``) that writes the rows into a stage file
beside the index; the console then moves them in with one ``INSERT ... SELECT``
(console/index.py) and the child's memory is gone with it.

The exchange is the stage file itself: the console writes the ``plan`` table (the
files to read, numbered) and detaches; the child reads the plan, fills the stage
tables (console/loader.py), and prints a JSON report on stdout. What to read from comes
on stdin (the archive's settings, S3 keys included: never on a command line).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from console.errors import ConsoleError
from console.loader import LoadReport
from infra.settings import ArchiveSettings
from infra.store import LocalStore, ObjectStore

log = logging.getLogger(__name__)


class IndexBuildError(ConsoleError):
    """The child process that loads table files failed (its stderr says why)."""


def store_spec(store: ObjectStore, archive: ArchiveSettings | None) -> dict[str, Any] | None:
    """How the child opens the same archive; None when it cannot (no settings for a
    store other than a local directory)."""
    if isinstance(store, LocalStore):
        return {"local": str(store.root)}
    if archive is None:
        return None
    values: dict[str, Any] = {}
    for name in ArchiveSettings.model_fields:
        value = getattr(archive, name)
        values[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    values["s3_create_bucket"] = False  # reading only
    return {"archive": values}


class ChildBuild:
    """One child run over a stage file whose ``plan`` the caller wrote."""

    def __init__(
        self,
        stage: Path,
        store: dict[str, Any],
        *,
        memory_mb: int,
        readers: int,
    ) -> None:
        self.stage = stage
        self.spec = {
            "stage": str(stage),
            "store": store,
            "memory_mb": memory_mb,
            "readers": readers,
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self) -> LoadReport:
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console.indexbuild"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        out, _ = self.proc.communicate(json.dumps(self.spec).encode())
        if self.proc.returncode != 0:
            raise IndexBuildError(
                f"the index build process exited with {self.proc.returncode} (its log is above)"
            )
        try:
            report = LoadReport(**json.loads(out.decode().strip().splitlines()[-1]))
        except (ValueError, TypeError, IndexError) as exc:
            raise IndexBuildError(f"the index build process answered {out[-200:]!r}") from exc
        log.info(
            "calls index: a build process read %d files (%d rows, %d skipped, %d left) in %.1fs",
            report.files,
            report.rows,
            report.skipped,
            report.retry,
            time.monotonic() - started,
        )
        return report

    def stop(self) -> None:
        """End the child (the console is stopping); the stage is thrown away."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _open_store(spec: dict[str, Any]) -> ObjectStore:
    if "local" in spec:
        return LocalStore(Path(spec["local"]))
    return ArchiveSettings(**spec["archive"]).open_store()


def main() -> int:
    """The child: read the plan's files into the stage file named on stdin."""
    import duckdb

    from console.loader import PlannedFile, create_stage, load_files

    spec = json.loads(sys.stdin.read())
    logging.basicConfig(
        level=spec.get("log_level", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stage = Path(spec["stage"])
    store = _open_store(spec["store"])
    con = duckdb.connect(
        str(stage),
        config={
            "memory_limit": f"{spec['memory_mb']}MB",
            "temp_directory": str(stage.parent / "spill"),
            "preserve_insertion_order": False,
        },
    )
    con.execute("SET TimeZone = 'UTC'")
    plan = [
        PlannedFile(file_no, table, key, date.isoformat())
        for file_no, table, key, date in con.execute(
            "SELECT file_no, tbl, key, date FROM plan ORDER BY file_no"
        ).fetchall()
    ]
    create_stage(con, temporary=False)
    report = load_files(con, store, plan, readers=spec["readers"])
    con.execute("DROP TABLE plan")
    con.execute("CHECKPOINT")
    con.close()
    print(json.dumps(asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
