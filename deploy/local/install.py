"""Local infrastructure for callrec: a real Kafka broker and a real MinIO server.

No Docker. Both servers run as plain child processes built from public
artifacts and cached under ``$CALLREC_CACHE_DIR`` (default ``~/.cache/callrec``):

* Apache Kafka (KRaft, one combined broker+controller node) from the Maven
  Central jars, fetched with ``mvn dependency:copy-dependencies``.
* MinIO, built with ``go install`` from the Go module proxy at a pinned commit.

This module is standard-library only. It is both the Python API used by the
pytest fixtures (:class:`KafkaServer`, :class:`MinioServer`, :func:`install`,
:func:`settings_env`) and a command line tool::

    python -m deploy.local.stack install|start|stop|status|env \
        [--kafka-port N] [--controller-port N] [--minio-port N] [--dir DIR]

The API never prints; it logs to the ``deploy.local.stack`` logger.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------
# Pinned versions
# --------------------------------------------------------------------------

#: Newest 4.1.x release of ``org.apache.kafka:kafka_2.13`` on Maven Central.
KAFKA_VERSION = "4.1.2"
SCALA_BINARY_VERSION = "2.13"
#: Log4j 2 backend for Kafka's slf4j 1.7 logging (SLF4J-1 binding).
LOG4J_VERSION = "2.25.3"

MINIO_MODULE = "github.com/minio/minio"
#: MinIO tags are not semver, so pin a commit pseudo-version: the newest one on
#: the Go module proxy (``go list -m github.com/minio/minio@latest``), 2026-02-12.
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"

#: Default ports of the CLI stack (the API picks free ports by default).
DEFAULT_KAFKA_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_MINIO_PORT = 19000
DEFAULT_MINIO_CONSOLE_PORT = 19001

DEFAULT_MINIO_USER = "callrec"
DEFAULT_MINIO_PASSWORD = "callrec-secret"
S3_REGION = "us-east-1"

KAFKA_READY_LINE = "Kafka Server started"
KAFKA_MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
TOPIC_COMMAND_CLASS = "org.apache.kafka.tools.TopicCommand"

#: JVM flags tuned for a fast start of a small test broker on few cores.
KAFKA_JVM_FLAGS = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
    # Kafka logs while its own shutdown hook runs; keep log4j alive for that.
    "-Dlog4j2.shutdownHookEnabled=false",
)
TOOL_JVM_FLAGS = ("-Xmx256m", *KAFKA_JVM_FLAGS)

_INSTALL_MARKER = ".installed"


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class StackError(Exception):
    """Base class of every error raised by this module."""


class ToolMissingError(StackError):
    """A required host tool (java, mvn, go) is not on PATH."""


class InstallError(StackError):
    """Downloading or building Kafka or MinIO failed."""


class NotInstalledError(StackError):
    """A server was started before :func:`install` had been run."""


class ServerStartError(StackError):
    """A server exited or did not become ready in time."""


class KafkaStartError(ServerStartError):
    """The Kafka broker did not start."""


class MinioStartError(ServerStartError):
    """The MinIO server did not start."""


class KafkaToolError(StackError):
    """A Kafka command line tool (StorageTool, TopicCommand) failed."""


# --------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------


def cache_dir() -> Path:
    """Return the cache root: ``$CALLREC_CACHE_DIR`` or ``~/.cache/callrec``."""
    configured = os.environ.get("CALLREC_CACHE_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path.home() / ".cache" / "callrec"


def kafka_home() -> Path:
    """Directory holding the pinned Kafka version (``libs/`` and ``config/``)."""
    return cache_dir() / f"kafka-{KAFKA_VERSION}"


def kafka_libs_dir() -> Path:
    """Directory of the Kafka jars."""
    return kafka_home() / "libs"


def minio_binary() -> Path:
    """Path of the pinned MinIO executable."""
    return cache_dir() / "minio" / MINIO_VERSION / "minio"


def go_env() -> dict[str, str]:
    """Environment for ``go``: module and build caches live under the cache dir.

    Keeping them there makes one directory enough to cache in CI; ``-modcacherw``
    keeps the module cache deletable with a plain ``rm -rf``.
    """
    go_root = cache_dir() / "go"
    env = dict(os.environ)
    env.setdefault("GOMODCACHE", str(go_root / "mod"))
    env.setdefault("GOCACHE", str(go_root / "build"))
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -modcacherw").strip()
    env.setdefault("GOTOOLCHAIN", "local")
    return env


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def require_tools(*names: str) -> dict[str, str]:
    """Return the absolute path of each tool, or raise :class:`ToolMissingError`."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        path = java_executable() if name == "java" else shutil.which(name)
        if path:
            found[name] = path
        else:
            missing.append(name)
    if missing:
        raise ToolMissingError(
            f"required tool(s) not found on PATH: {', '.join(missing)}. "
            "The local stack needs a JDK 17+ (java), Apache Maven (mvn) to "
            "fetch Kafka and Go 1.24+ (go) to build MinIO."
        )
    return found


def java_executable() -> str | None:
    """Return ``$JAVA_HOME/bin/java`` if it exists, else ``java`` from PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("java")


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


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def error_lines(path: Path, offset: int = 0, limit: int = 20) -> str:
    """ERROR/FATAL lines of a log4j log after byte ``offset``, each with its exception line."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return ""
    found: list[str] = []
    for index, line in enumerate(lines):
        if "] ERROR " in line or "] FATAL " in line:
            found.append(line)
            following = lines[index + 1] if index + 1 < len(lines) else ""
            if following and not following.startswith(("[", "\t")):
                found.append("    " + following)
    return "\n".join(found[:limit])


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it already holds exactly that."""
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name, delete=False) as tmp:
        tmp.write(text)
    Path(tmp.name).replace(path)


@contextlib.contextmanager
def install_lock() -> Iterator[None]:
    """Serialise installs across processes (pytest workers, deploy/tools.py)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".install.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(
    cmd: Sequence[str],
    log_path: Path,
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run an install command with its output in ``log_path``; raise on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("%s: %s (log: %s)", what, " ".join(cmd), log_path)
    with log_path.open("w") as out:
        result = subprocess.run(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            check=False,
        )
    if result.returncode != 0:
        raise InstallError(
            f"{what} failed with exit code {result.returncode}; log {log_path}:\n{tail(log_path)}"
        )


# --------------------------------------------------------------------------
# Install
# --------------------------------------------------------------------------


def install(kafka: bool = True, minio: bool = True) -> None:
    """Install the pinned Kafka and/or MinIO into the cache (idempotent).

    A second call is a cheap no-op. Raises :class:`ToolMissingError` if
    ``java``/``mvn``/``go`` are missing and :class:`InstallError` on failure.
    """
    needed = []
    if kafka and not kafka_installed():
        needed += ["java", "mvn"]
    if minio and not minio_installed():
        needed += ["go"]
    require_tools(*needed)  # report every missing tool at once, before any work
    with install_lock():
        if kafka:
            install_kafka()
        if minio:
            install_minio()


def kafka_installed() -> bool:
    """True if the pinned Kafka jars are in the cache."""
    return (kafka_home() / _INSTALL_MARKER).is_file()


def minio_installed() -> bool:
    """True if the pinned MinIO binary is in the cache."""
    return os.access(minio_binary(), os.X_OK)


def install_kafka() -> None:
    """Fetch the Kafka jars from Maven Central into ``kafka_home()/libs``."""
    home = kafka_home()
    if kafka_installed():
        _write_log4j_configs(home / "config")
        log.debug("Kafka %s already installed in %s", KAFKA_VERSION, home)
        return
    mvn = require_tools("java", "mvn")["mvn"]
    started = time.monotonic()
    staging = home.with_name(home.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pom = staging / "pom.xml"
    pom.write_text(_kafka_pom())
    _run_logged(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging / 'libs'}",
        ],
        cache_dir() / "logs" / f"kafka-{KAFKA_VERSION}-install.log",
        what=f"fetching Kafka {KAFKA_VERSION} jars with Maven",
    )
    _write_log4j_configs(staging / "config")
    (staging / _INSTALL_MARKER).write_text(f"kafka_{SCALA_BINARY_VERSION}:{KAFKA_VERSION}\n")
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    log.info("installed Kafka %s in %s (%.1fs)", KAFKA_VERSION, home, time.monotonic() - started)


def install_minio() -> None:
    """Build the pinned MinIO with ``go install`` into ``minio_binary()``."""
    target = minio_binary()
    if minio_installed():
        log.debug("MinIO %s already installed at %s", MINIO_VERSION, target)
        return
    go = require_tools("go")["go"]
    started = time.monotonic()
    gobin = Path(tempfile.mkdtemp(prefix="gobin-", dir=cache_dir()))
    try:
        env = go_env()
        env["GOBIN"] = str(gobin)
        _run_logged(
            [go, "install", f"{MINIO_MODULE}@{MINIO_VERSION}"],
            cache_dir() / "logs" / f"minio-{MINIO_VERSION}-install.log",
            env=env,
            cwd=cache_dir(),
            what=f"building MinIO {MINIO_VERSION} with go install (takes minutes)",
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        (gobin / "minio").replace(target)
    finally:
        shutil.rmtree(gobin, ignore_errors=True)
    log.info("installed MinIO %s at %s (%.1fs)", MINIO_VERSION, target, time.monotonic() - started)


def _kafka_pom() -> str:
    """A throwaway POM whose runtime dependencies are the Kafka server + tools."""
    log4j = "".join(
        _pom_dependency("org.apache.logging.log4j", artifact, LOG4J_VERSION)
        for artifact in ("log4j-api", "log4j-core", "log4j-slf4j-impl")
    )
    # TopicCommand lives in kafka-tools; its Connect REST dependencies are not needed.
    tools_exclusions = """
      <exclusions>
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
        <exclusion><groupId>com.fasterxml.jackson.jakarta.rs</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>"""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.callrec</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
{_pom_dependency("org.apache.kafka", f"kafka_{SCALA_BINARY_VERSION}", KAFKA_VERSION)}\
{_pom_dependency("org.apache.kafka", "kafka-tools", KAFKA_VERSION, tools_exclusions)}\
{log4j}  </dependencies>
</project>
"""


def _pom_dependency(group: str, artifact: str, version: str, extra: str = "") -> str:
    return (
        f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version}</version>{extra}</dependency>\n"
    )


def _write_log4j_configs(config_dir: Path) -> None:
    """Write log4j2 configs: the broker logs to ``${kafka.logs.dir}/server.log``."""
    _write_if_changed(config_dir / "log4j2.xml", _BROKER_LOG4J2)
    _write_if_changed(config_dir / "tools-log4j2.xml", _TOOLS_LOG4J2)


_BROKER_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders>
    <RollingFile name="server" fileName="${sys:kafka.logs.dir}/server.log"
                 filePattern="${sys:kafka.logs.dir}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="50 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="warn"/>
    <Root level="info"><AppenderRef ref="server"/></Root>
  </Loggers>
</Configuration>
"""

_TOOLS_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers><Root level="warn"><AppenderRef ref="stderr"/></Root></Loggers>
</Configuration>
"""


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


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def _pid_cmdline(pid: int) -> str:
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
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class _ServerProcess:
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


# --------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------


def kafka_classpath() -> str:
    """Java class path of the installed Kafka jars."""
    return str(kafka_libs_dir() / "*")


def run_kafka_tool(main_class: str, *args: str, timeout: float = 120) -> str:
    """Run a Kafka command line tool class and return its stdout.

    Raises :class:`KafkaToolError` with the tool's output if it fails.
    """
    _require_kafka()
    java = require_tools("java")["java"]
    cmd = [
        java,
        *TOOL_JVM_FLAGS,
        f"-Dlog4j2.configurationFile={kafka_home() / 'config' / 'tools-log4j2.xml'}",
        "-cp",
        kafka_classpath(),
        main_class,
        *args,
    ]
    log.debug("running %s", " ".join(cmd))
    try:
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaToolError(f"{main_class} timed out after {timeout}s") from exc
    if result.returncode != 0:
        raise KafkaToolError(
            f"{main_class} {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def _require_kafka() -> None:
    if not kafka_installed():
        raise NotInstalledError(
            f"Kafka {KAFKA_VERSION} is not installed in {kafka_home()}; "
            "run `python -m deploy.local.stack install` (or stack.install())"
        )


def new_cluster_id() -> str:
    """A random KRaft cluster id (22 base64url chars, like ``kafka-storage random-uuid``)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaServer(_ServerProcess):
    """A single-node KRaft Kafka (combined broker + controller) on 127.0.0.1.

    ``port``/``controller_port`` 0 pick free loopback ports once, at
    construction, so :attr:`bootstrap` is known before :meth:`start` and stays
    the same across restarts. Storage is formatted on the first start only;
    data in ``data_dir`` survives :meth:`stop`, :meth:`kill` and :meth:`restart`.
    """

    name = "kafka"
    start_error = KafkaStartError

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        controller_port: int = 0,
        *,
        num_partitions: int = 4,
        heap: str = "512m",
        extra_config: Mapping[str, object] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        super().__init__(data_dir, die_with_parent=die_with_parent)
        port, controller_port = self._choose_ports(port, controller_port)
        self.port = port
        self.controller_port = controller_port
        self.num_partitions = num_partitions
        self.heap = heap
        self.extra_config = dict(extra_config or {})
        self._log_offset = 0

    @staticmethod
    def _choose_ports(port: int, controller_port: int) -> tuple[int, int]:
        free = iter(free_ports(2))
        port = port or next(free)
        controller_port = controller_port or next(p for p in free if p != port)
        return port, controller_port

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string for clients, ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        """Where the partition data (and KRaft metadata log) live."""
        return self.data_dir / "data"

    @property
    def server_log(self) -> Path:
        """The broker's log4j log file."""
        return self.data_dir / "logs" / "server.log"

    def start(self, timeout: float = 90) -> None:
        """Format storage on first use, start the broker, wait for ``Kafka Server started``."""
        super().start(timeout=timeout)

    def restart(self, timeout: float = 90) -> None:
        super().restart(timeout=timeout)

    def create_topic(
        self, name: str, partitions: int | None = None, config: Mapping[str, object] | None = None
    ) -> None:
        """Create a topic (replication factor 1); no error if it already exists."""
        args = [
            "--bootstrap-server",
            self.bootstrap,
            "--create",
            "--if-not-exists",
            "--topic",
            name,
            "--partitions",
            str(partitions or self.num_partitions),
            "--replication-factor",
            "1",
        ]
        for key, value in (config or {}).items():
            args += ["--config", f"{key}={value}"]
        run_kafka_tool(TOPIC_COMMAND_CLASS, *args)

    def delete_topic(self, name: str) -> None:
        """Delete a topic."""
        run_kafka_tool(
            TOPIC_COMMAND_CLASS, "--bootstrap-server", self.bootstrap, "--delete", "--topic", name
        )

    def list_topics(self) -> list[str]:
        """Names of the topics in the cluster (internal ones excluded)."""
        out = run_kafka_tool(TOPIC_COMMAND_CLASS, "--bootstrap-server", self.bootstrap, "--list")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def server_properties(self) -> dict[str, str]:
        """The broker configuration written to ``server.properties``."""
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": str(self.num_partitions),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "5",
            "group.initial.rebalance.delay.ms": "0",
            # After a SIGKILL the restarted node must wait for its old broker
            # session to expire before it may register again: keep that short.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "2",
            "background.threads": "4",
        }
        props.update({key: str(value) for key, value in self.extra_config.items()})
        return props

    # -- _ServerProcess hooks -------------------------------------------------
    def _prepare(self) -> None:
        _require_kafka()
        _write_log4j_configs(kafka_home() / "config")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.server_log.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{key}={value}\n" for key, value in self.server_properties().items())
        _write_if_changed(self.config_file, text)
        if not (self.log_dir / "meta.properties").exists():
            self._format_storage()
        self._log_offset = self.server_log.stat().st_size if self.server_log.exists() else 0

    def _format_storage(self) -> None:
        cluster_id = new_cluster_id()
        log.info("formatting Kafka storage in %s (cluster id %s)", self.log_dir, cluster_id)
        try:
            run_kafka_tool(
                STORAGE_TOOL_CLASS, "format", "-t", cluster_id, "-c", str(self.config_file)
            )
        except KafkaToolError as exc:
            raise KafkaStartError(f"formatting Kafka storage failed: {exc}") from exc

    def _command(self) -> list[str]:
        java = require_tools("java")["java"]
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{_half_heap(self.heap)}",
            *KAFKA_JVM_FLAGS,
            f"-Dkafka.logs.dir={self.server_log.parent}",
            f"-Dlog4j2.configurationFile={kafka_home() / 'config' / 'log4j2.xml'}",
            "-cp",
            kafka_classpath(),
            KAFKA_MAIN_CLASS,
            str(self.config_file),
        ]

    def _is_ready(self) -> bool:
        try:
            with self.server_log.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                # The log rolled over during start-up: scan the new file whole.
                handle.seek(self._log_offset if size >= self._log_offset else 0)
                return KAFKA_READY_LINE.encode() in handle.read()
        except FileNotFoundError:
            return False

    def _diagnostics(self) -> str:
        errors = error_lines(self.server_log, self._log_offset)
        return "\n".join(
            [
                f"--- errors in {self.server_log}:\n{errors}",
                f"--- tail of {self.server_log}:\n{tail(self.server_log, 15)}",
                f"--- {self.stdout_log}:\n{tail(self.stdout_log, 15)}",
            ]
        )


def _half_heap(heap: str) -> str:
    """Initial heap: half of ``heap`` (e.g. ``512m`` -> ``256m``)."""
    digits, unit = heap[:-1], heap[-1]
    if digits.isdigit() and unit.lower() in "kmg":
        return f"{max(1, int(digits) // 2)}{unit}"
    return heap


# --------------------------------------------------------------------------
# MinIO
# --------------------------------------------------------------------------


class MinioServer(_ServerProcess):
    """A single-drive MinIO server on 127.0.0.1 (S3 API incl. Object Lock).

    Ports 0 pick free loopback ports at construction. Ready when
    ``GET {endpoint}/minio/health/ready`` answers 200.
    """

    name = "minio"
    start_error = MinioStartError

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        console_port: int = 0,
        user: str = DEFAULT_MINIO_USER,
        password: str = DEFAULT_MINIO_PASSWORD,
        *,
        die_with_parent: bool = True,
    ) -> None:
        super().__init__(data_dir, die_with_parent=die_with_parent)
        if len(user) < 3 or len(password) < 8:
            raise StackError("MinIO needs a user of 3+ and a password of 8+ characters")
        free = iter(free_ports(2))
        self.port = port or next(free)
        self.console_port = console_port or next(p for p in free if p != self.port)
        self.access_key = user
        self.secret_key = password

    @property
    def endpoint(self) -> str:
        """S3 endpoint URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "data"

    def start(self, timeout: float = 60) -> None:
        """Start MinIO and wait until its readiness probe answers 200."""
        super().start(timeout=timeout)

    # -- _ServerProcess hooks -------------------------------------------------
    def _prepare(self) -> None:
        if not minio_installed():
            raise NotInstalledError(
                f"MinIO {MINIO_VERSION} is not installed at {minio_binary()}; "
                "run `python -m deploy.local.stack install` (or stack.install())"
            )
        self.storage_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        return [
            str(minio_binary()),
            "server",
            str(self.storage_dir),
            "--address",
            f"127.0.0.1:{self.port}",
            "--console-address",
            f"127.0.0.1:{self.console_port}",
            "--certs-dir",
            str(self.data_dir / "certs"),
            "--quiet",
        ]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "MINIO_ROOT_USER": self.access_key,
                "MINIO_ROOT_PASSWORD": self.secret_key,
                "MINIO_REGION": S3_REGION,
                "MINIO_UPDATE": "off",
                # MinIO creates ~/.minio even with --certs-dir: keep it in data_dir.
                "HOME": str(self.data_dir),
            }
        )
        return env

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False


# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------


def settings_env(kafka: KafkaServer | None, minio: MinioServer | None) -> dict[str, str]:
    """The ``CALLREC_*`` environment variables pointing the app at these servers."""
    env: dict[str, str] = {}
    if kafka is not None:
        env["CALLREC_KAFKA_BOOTSTRAP"] = kafka.bootstrap
    if minio is not None:
        env.update(
            {
                "CALLREC_S3_ENDPOINT_URL": minio.endpoint,
                "CALLREC_S3_ACCESS_KEY_ID": minio.access_key,
                "CALLREC_S3_SECRET_ACCESS_KEY": minio.secret_key,
                "CALLREC_S3_REGION": S3_REGION,
            }
        )
    return env


# --------------------------------------------------------------------------
# CLI: a detached stack tracked by pid files
# --------------------------------------------------------------------------

#: Substring of each server's command line, checked before signalling a pid file's pid.
_CMDLINE_MARKERS = {"kafka": KAFKA_MAIN_CLASS, "minio": "minio server"}


class DetachedStack:
    """The CLI's stack: servers in ``state_dir`` that outlive the CLI process.

    Ports and credentials are kept in ``state_dir/stack.json``, pids in
    ``state_dir/<name>.pid``.
    """

    def __init__(
        self,
        state_dir: Path,
        kafka_port: int,
        controller_port: int,
        minio_port: int,
        minio_console_port: int,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.kafka = KafkaServer(
            self.state_dir / "kafka", kafka_port, controller_port, die_with_parent=False
        )
        self.minio = MinioServer(
            self.state_dir / "minio", minio_port, minio_console_port, die_with_parent=False
        )

    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    def pid_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"

    def running_pid(self, name: str) -> int | None:
        """Pid from ``<name>.pid`` if that process is alive and is the server."""
        try:
            pid = int(self.pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None
        if _pid_alive(pid) and _CMDLINE_MARKERS[name] in _pid_cmdline(pid):
            return pid
        return None

    def start(self) -> None:
        """Start whichever server is not running yet; record its pid and settings."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = self._read_state()
        for server in (self.kafka, self.minio):
            if self.running_pid(server.name) and server.name in state:
                log.info("%s already running", server.name)
                continue
            server.start()
            self.pid_file(server.name).write_text(f"{server.pid}\n")
            state[server.name] = self._server_settings(server.name)
            self._write_state(state)

    def _server_settings(self, name: str) -> dict[str, str]:
        if name == "kafka":
            return settings_env(self.kafka, None)
        return settings_env(None, self.minio)

    def stop(self, timeout: float = 30) -> list[str]:
        """Stop the servers named in the pid files; return the names stopped."""
        stopped = []
        for name in ("minio", "kafka"):
            pid = self.running_pid(name)
            if pid:
                terminate_group(pid, timeout)
                stopped.append(name)
            self.pid_file(name).unlink(missing_ok=True)
        return stopped

    def settings(self) -> dict[str, str]:
        """The app's ``CALLREC_*`` environment for the servers last started."""
        env: dict[str, str] = {}
        for server_env in self._read_state().values():
            env.update(server_env)
        return env

    def status(self) -> dict[str, int | None]:
        """Pid of each running server, None for a stopped one."""
        return {name: self.running_pid(name) for name in ("kafka", "minio")}

    def _read_state(self) -> dict[str, dict[str, str]]:
        try:
            state: dict[str, dict[str, str]] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state

    def _write_state(self, state: Mapping[str, Mapping[str, str]]) -> None:
        _write_if_changed(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")


def _export_lines(env: Mapping[str, str]) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local.stack",
        description="Install and run callrec's local Kafka + MinIO (no Docker).",
    )
    parser.add_argument("command", choices=["install", "start", "stop", "status", "env"])
    parser.add_argument("--kafka-port", type=int, default=DEFAULT_KAFKA_PORT)
    parser.add_argument("--controller-port", type=int, default=DEFAULT_CONTROLLER_PORT)
    parser.add_argument("--minio-port", type=int, default=DEFAULT_MINIO_PORT)
    parser.add_argument("--minio-console-port", type=int, default=DEFAULT_MINIO_CONSOLE_PORT)
    parser.add_argument(
        "--dir", type=Path, default=None, help="state directory (default: <cache>/stack)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point. Progress goes to stderr; ``export`` lines to stdout."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    stack = DetachedStack(
        args.dir or cache_dir() / "stack",
        args.kafka_port,
        args.controller_port,
        args.minio_port,
        args.minio_console_port,
    )
    try:
        return _run_command(args.command, stack)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run_command(command: str, stack: DetachedStack) -> int:
    if command == "install":
        started = time.monotonic()
        install()
        print(f"Kafka {KAFKA_VERSION}: {kafka_home()}", file=sys.stderr)
        print(f"MinIO {MINIO_VERSION}: {minio_binary()}", file=sys.stderr)
        print(f"install done in {time.monotonic() - started:.1f}s", file=sys.stderr)
    elif command == "start":
        install()
        stack.start()
        sys.stdout.write(_export_lines(stack.settings()))
    elif command == "stop":
        stopped = stack.stop()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
    elif command == "status":
        running = False
        for name, pid in stack.status().items():
            running = running or pid is not None
            print(f"{name}: {f'running (pid {pid})' if pid else 'stopped'}")
        print(f"state dir: {stack.state_dir}")
        return 0 if running else 3
    elif command == "env":
        if not stack.state_file.exists():
            print("error: stack never started; run `start` first", file=sys.stderr)
            return 1
        sys.stdout.write(_export_lines(stack.settings()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
