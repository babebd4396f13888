"""A load generator (or hostile-client) process of a run, and what it reports.

It is started as ``python -m MODULE CONFIG.json`` (bench/loadharness/loadgen.py,
bench/loadharness/hostile.py), prints a JSON status line every half second (frames
owed, calls active) and writes its result to ``config["result"]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness.procs import REPO, Child


class LoadProcess:
    """One load process; its status lines are read by a thread."""

    def __init__(self, name: str, module: str, conf: dict[str, Any], workdir: Path) -> None:
        self.name = name
        self.conf_path = workdir / f"{name}.conf.json"
        self.conf_path.write_text(json.dumps(conf))
        self.result_path = Path(conf["result"])
        self.owed = 0
        """Frames due but not yet sent, at the last status line (backpressure)."""
        self.active = 0
        self.child = Child([sys.executable, "-m", module, str(self.conf_path)],
                           env={**os.environ, "PYTHONPATH": str(REPO)},
                           log_path=workdir / f"{name}.log", on_line=self._status)

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def running(self) -> bool:
        return self.child.running

    def _status(self, raw: bytes) -> None:
        with contextlib.suppress(ValueError, KeyError):
            status = json.loads(raw)
            self.owed, self.active = int(status["owed"]), int(status["active"])

    def result(self, deadline: float) -> Any:
        code = self.child.wait(max(1.0, deadline - time.time()))
        if code is None:
            self.stop()
            raise TimeoutError(f"{self.name} still running at its deadline")
        if code != 0 or not self.result_path.exists():
            raise RuntimeError(f"{self.name} exited with {code}; see its log in "
                               f"{self.conf_path.parent}")
        return json.loads(self.result_path.read_text())

    def stop(self) -> None:
        self.child.stop(10, sig=signal.SIGKILL)
