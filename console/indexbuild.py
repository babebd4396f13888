"""Loading many table files in a child process: the console's own memory stays small.

Reading a hundred thousand Parquet files leaves a process larger than the index it
built (allocator fragmentation, per-file metadata: 366 MiB after loading 100,000
recordings, docs/benchmarks.md), and the console runs for weeks. So large loads run in
a short-lived child (console/indexchild.py, ``python -m console.indexchild``), in one of
two modes (console/index.py decides):

- ``build``: the first load. The console has not opened the index file yet; the child
  opens it, reads every table file in (as a console would, a chunk at a time) and
  closes it; then the console opens it.
- ``stage``: a catch-up of many files while the console serves from the index. The
  console writes the files to read (the ``plan`` table) into a stage file beside the
  index and detaches it; the child reads them into the stage tables
  (console/loader.py); the console merges them in one transaction.

Either way the child prints a JSON report on stdout and exits, and its memory with it.
What to read from comes on stdin (the archive's settings, S3 keys included: never on a
command line). This module is the console's side of it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

from pydantic import SecretStr

from console.errors import ConsoleError
from console.loader import LoadReport
from infra.settings import ArchiveSettings
from infra.store import LocalStore, ObjectStore

log = logging.getLogger(__name__)


class IndexBuildError(ConsoleError):
    """The child process that loads table files failed (its log says why)."""


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
    """One run of the child; ``spec``: its mode and what it needs (module docstring)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        level = logging.getLogger().getEffectiveLevel()
        self.spec = {**spec, "log_level": logging.getLevelName(level)}
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self) -> LoadReport:
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console.indexchild"],
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
        """End the child (the console is stopping); what it did not finish is redone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
