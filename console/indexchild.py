"""The index build process (``python -m console.indexchild``), started by the console.

console/indexbuild.py starts it and says why; stdin names the mode (``build``: catch
the index file up, before the console opens it; ``stage``: read the files of a stage
file's ``plan`` into its stage tables), the archive and the memory to use. It prints
its report (console/loader.py's ``LoadReport``) as one JSON line on stdout, and exits
when its console is gone (so that no orphan keeps the index file locked).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from console.index import build
from console.indexdb import connect
from console.loader import LoadReport, PlannedFile, create_stage, load_files
from infra.settings import ArchiveSettings
from infra.store import LocalStore, ObjectStore


def _open_store(spec: dict[str, Any]) -> ObjectStore:
    if "local" in spec:
        return LocalStore(Path(spec["local"]))
    return ArchiveSettings(**spec["archive"]).open_store()


def _stop_with_parent() -> None:
    """Exit when the console that started this process is gone (killed without a chance
    to stop it): the index file must not stay locked by an orphan."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _stage(spec: dict[str, Any], store: ObjectStore) -> LoadReport:
    con = connect(Path(spec["stage"]), spec["memory_mb"])
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
    return report


def main() -> int:
    """The child: what stdin says, then its report on stdout."""
    spec = json.loads(sys.stdin.read())
    logging.basicConfig(
        level=spec.get("log_level", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _stop_with_parent()
    store = _open_store(spec["store"])
    if spec["mode"] == "build":
        report = build(store, spec["directory"], spec["memory_mb"], spec["readers"])
    else:
        report = _stage(spec, store)
    print(json.dumps(asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
