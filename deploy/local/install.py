"""Installers of the local stack: Kafka from Maven Central, MinIO with ``go install``.

Both are pinned below and cached under ``$CALLREC_CACHE_DIR`` (default
``~/.cache/callrec``):

* Apache Kafka: the ``kafka_2.13`` and ``kafka-tools`` jars from Maven Central,
  fetched with ``mvn dependency:copy-dependencies`` into ``kafka_home()/libs``,
  with log4j2 configs in ``kafka_home()/config``.
* MinIO: built with ``go install`` from the Go module proxy at a pinned commit,
  into ``minio_binary()``; the Go caches live in ``<cache>/go`` (see
  :func:`go_env`, which deploy/tools.py shares for its Helm build).

Installs are idempotent, atomic (a staging directory renamed into place) and
serialised across processes by :func:`install_lock`. The servers that run what
is installed here are in kafka.py and minio.py; the CLI's ``install`` command
is in cli.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from deploy.local.errors import InstallError, ToolMissingError
from deploy.local.files import tail, write_if_changed

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

_INSTALL_MARKER = ".installed"


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
# Host tools
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
        write_log4j_configs(home / "config")
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
    write_log4j_configs(staging / "config")
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


def write_log4j_configs(config_dir: Path) -> None:
    """Write log4j2 configs: the broker logs to ``${kafka.logs.dir}/server.log``."""
    write_if_changed(config_dir / "log4j2.xml", _BROKER_LOG4J2)
    write_if_changed(config_dir / "tools-log4j2.xml", _TOOLS_LOG4J2)


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
