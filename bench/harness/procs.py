"""Child processes of a benchmark: started, read line by line, always stopped.

- :class:`Child`: any command; a thread reads its stdout, into a queue of lines
  (:meth:`Child.readline`, :meth:`Child.result`) or into a callback; stderr (and,
  with ``tee``, stdout too) goes to a log file.
- :class:`Children`: every process a benchmark started, so that ``finally`` stops them all.
- :class:`Service`: one ``callrec`` service process (``CALLREC_*`` environment, log
  file, probes/metrics port; ingest prints its port on its first stdout line).

Every child gets the highest open-file limit allowed (a load generator holds a
socket per call) and dies with the thread that started it (``PR_SET_PDEATHSIG``),
so a crashed benchmark leaves nothing running: start them from the main thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from bench.harness.promstats import Samples, http_get, parse_metrics

REPO = Path(__file__).resolve().parents[2]

_libc = ctypes.CDLL(None, use_errno=True)


def log(msg: str, prefix: str | None = None) -> None:
    """One progress line on stderr: ``[HH:MM:SS] msg``, or ``[prefix] msg``."""
    print(f"[{prefix or time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile() -> None:
    """Raise this process's open-file limit to the hard limit (65536 when unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """SIGKILL this child when the thread that forked it ends."""
    _libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _child_setup() -> None:  # pragma: no cover - runs in the forked child
    raise_nofile()
    die_with_parent()


class Child:
    """A child process whose stdout lines are read by a thread."""

    def __init__(self, cmd: list[str], *, env: dict[str, str] | None = None,
                 log_path: Path | None = None, stdin: bool = False, tee: bool = False,
                 on_line: Callable[[bytes], None] | None = None) -> None:
        """``log_path`` takes stderr (appended), and stdout too with ``tee``; ``on_line``
        gets each stdout line instead of the queue."""
        self.cmd = cmd
        self._log: IO[bytes] | None = log_path.open("ab") if log_path else None
        self._tee = tee
        self._on_line = on_line
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log or None,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=env, cwd=REPO, preexec_fn=_child_setup,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed under us: we are done
            for raw in self.proc.stdout:
                if self._tee and self._log is not None and not self._log.closed:
                    self._log.write(raw)
                if self._on_line is not None:
                    self._on_line(raw)
                else:
                    self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def readline(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no output from {self.cmd[-1][:60]} in {timeout}s") from None
        if line is None:
            raise RuntimeError(f"{' '.join(self.cmd)[:120]} exited with {self.proc.wait()}")
        return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        """The JSON object on the last stdout line, once the process exited."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"load generator still running after {timeout}s") from None
            if line is None:
                break
            last = line
        code = self.proc.wait()
        if code != 0 or last is None:
            raise RuntimeError(f"load generator exited with {code}")
        result: dict[str, Any] = json.loads(last)
        return result

    def wait(self, timeout: float) -> int | None:
        """Exit status, or None when still running after ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20, sig: int = signal.SIGTERM) -> None:
        """``sig``, then SIGKILL after ``timeout``; close its pipes and log."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if self.wait(timeout) is None:
                self.proc.kill()
                self.wait(10)
        self._pump.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self._log is not None:
            self._log.close()


class Stoppable(Protocol):
    def stop(self, timeout: float = ...) -> None: ...


class Children:
    """Every child process started, so that ``finally`` can stop them all."""

    def __init__(self) -> None:
        self.live: list[Stoppable] = []

    def start(self, cmd: list[str], **kwargs: Any) -> Child:
        child = Child(cmd, **kwargs)
        self.live.append(child)
        return child

    def add(self, child: Stoppable) -> None:
        self.live.append(child)

    def stop(self, child: Stoppable, timeout: float = 20) -> None:
        child.stop(timeout)
        if child in self.live:
            self.live.remove(child)

    def stop_all(self) -> None:
        for child in reversed(self.live):
            with contextlib.suppress(Exception):
                child.stop(5)
        self.live.clear()


class Service:
    """One ``callrec`` service process (ingest, recorder, analyzer)."""

    def __init__(self, kind: str, name: str, env: dict[str, str], log_dir: Path,
                 port: int | None = None, cmd: list[str] | None = None) -> None:
        """``cmd`` defaults to ``python -m callrec.cli <kind>`` with this checkout first on
        ``PYTHONPATH``; ``env`` is added to this process's environment."""
        self.kind = kind
        self.name = name
        self.env = env
        self.cmd = cmd
        self.log_path = log_dir / f"{name}.log"
        self.port = port
        self.started_at = 0.0
        self.draining = False
        """Set when it was sent SIGTERM: not expected to be ready any more."""
        self.child: Child | None = None

    def start(self, timeout: float = 60) -> None:
        """Start the process; for ingest, wait for its port line."""
        self.started_at = time.time()
        env = {**os.environ, **self.env}
        cmd = self.cmd
        if cmd is None:
            cmd = [sys.executable, "-m", "callrec.cli", self.kind]
            env["PYTHONPATH"] = str(REPO)
        self.child = Child(cmd, env=env, log_path=self.log_path, tee=True)
        if self.kind == "ingest":
            self.port = self._read_port(timeout)

    def _read_port(self, timeout: float) -> int:
        assert self.child is not None
        try:
            first = self.child.readline(timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no port line in {timeout}s; see "
                               f"{self.log_path}") from None
        match = re.search(r"listening on port (\d+)", first)
        if not match:
            raise RuntimeError(f"{self.name}: unexpected first line {first!r}")
        return int(match.group(1))

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.running

    def ready(self) -> bool:
        return self.alive and self.port is not None and http_get(self.port, "/readyz")[0] == 200

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds from the process start until /readyz answered 200."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self.alive:
                code = self.child.proc.poll() if self.child else None
                raise RuntimeError(f"{self.name} exited with {code}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout}s; see {self.log_path}")
            time.sleep(0.05)
        return time.time() - self.started_at

    def metrics(self) -> Samples | None:
        if self.port is None or not self.alive:
            return None
        status, body = http_get(self.port, "/metrics")
        return parse_metrics(body) if status == 200 else None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.child is not None
            self.child.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        return self.child.wait(timeout) if self.child is not None else None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; close the log."""
        if self.child is not None:
            self.child.stop(timeout)
