"""Server processes of the local stack: start, wait until ready, stop, kill.

:class:`ServerProcess` runs one server as a child process in its own session
(process group) and is the base of ``KafkaServer`` (kafka.py) and
``MinioServer`` (minio.py). :func:`terminate_group` stops a detached server
found through a pid file, as the CLI (cli.py) does. :func:`free_ports` picks
the loopback ports the servers listen on.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

from deploy.local.errors import ServerStartError
from deploy.local.files import tail

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------


def free_ports(count: int = 1) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """Return True if something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_prctl = None


def _load_prctl() -> None:
    """Resolve libc's ``prctl`` in the parent, so the forked child only calls it."""
    global _prctl
    if _prctl is None:
        with contextlib.suppress(OSError, AttributeError):
            _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGKILL this child when the thread that forked it dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def pid_cmdline(pid: int) -> str:
    """The command line of ``pid`` joined by spaces ('' if gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace")


def _signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to a process group, ignoring a group that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate_group(pid: int, timeout: float = 30) -> None:
    """SIGTERM the detached process group led by ``pid``; SIGKILL it after ``timeout``.

    For processes found through a pid file (not children of this process).
    """
    _signal_group(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return
    log.warning("process %d ignored SIGTERM for %.0fs; sending SIGKILL", pid, timeout)
    _signal_group(pid, signal.SIGKILL)
    _wait_gone(pid, 10)


def _wait_gone(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is gone; return False if it still runs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class ServerProcess:
    """A server run as a child process in its own session (process group).

    Subclasses provide :meth:`_command`, :meth:`_environment`, :meth:`_is_ready`
    and :attr:`start_error`.

    ``die_with_parent`` (default True) sets ``PR_SET_PDEATHSIG`` so Linux kills
    the server when the Python process that started it dies, even by SIGKILL:
    a crashed test session leaves nothing behind. Linux ties this to the
    *thread* that forked, so call :meth:`start`/:meth:`restart` from a
    long-lived thread (the main thread, as pytest fixtures do), not from a
    short-lived worker thread, or pass ``die_with_parent=False``. The CLI
    passes False to detach.
    """

    name = "server"
    start_error: type[ServerStartError] = ServerStartError

    def __init__(self, data_dir: Path, *, die_with_parent: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None

    # -- subclass hooks -----------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Called before each start (write configs, format storage, ...)."""

    def _diagnostics(self) -> str:
        return tail(self.stdout_log)

    # -- public API -----------------------------------------------------------
    @property
    def stdout_log(self) -> Path:
        """File receiving the process's stdout and stderr."""
        return self.data_dir / f"{self.name}.out"

    @property
    def pid(self) -> int | None:
        """Pid of the running process (also its process group id), else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def is_running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60) -> None:
        """Start the process and wait until it is ready (no-op if running)."""
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        started = time.monotonic()
        proc = self._spawn()
        self._wait_ready(proc, started + timeout)
        log.info("%s ready in %.1fs (pid %d)", self.name, time.monotonic() - started, proc.pid)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the process group, SIGKILL it if it outlives ``timeout``."""
        if self._proc is None:
            return
        started = time.monotonic()
        _signal_group(self._proc.pid, signal.SIGTERM)
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0fs; sending SIGKILL", self.name, timeout)
            self.kill()
            return
        log.info("%s stopped in %.1fs (exit code %s)", self.name, time.monotonic() - started, code)
        self._finish()

    def kill(self) -> None:
        """SIGKILL the process group at once (simulates a crash)."""
        if self._proc is None:
            return
        _signal_group(self._proc.pid, signal.SIGKILL)
        log.info("%s killed", self.name)
        self._finish()

    def restart(self, timeout: float = 60) -> None:
        """Stop then start again with the same data and ports."""
        self.stop()
        self.start(timeout=timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------
    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = self._command()
        if self.die_with_parent:
            _load_prctl()
        log.info("starting %s: %s", self.name, " ".join(cmd))
        with self.stdout_log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self._environment(),
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        return self._proc

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        while True:
            code = proc.poll()
            if code is not None:
                self._finish()
                raise self.start_error(
                    f"{self.name} exited with code {code} during start-up:\n{self._diagnostics()}"
                )
            if self._is_ready():
                return
            if time.monotonic() > deadline:
                diagnostics = self._diagnostics()
                self.kill()
                raise self.start_error(f"{self.name} not ready in time; log tail:\n{diagnostics}")
            time.sleep(0.1)

    def _finish(self) -> None:
        """Reap the process and forget it."""
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
        self._proc = None
