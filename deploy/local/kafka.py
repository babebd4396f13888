"""Kafka for the local stack: a single-node KRaft broker and its command line tools.

:class:`KafkaServer` runs the jars that install.py fetched, as one combined
broker + controller on 127.0.0.1 (a :class:`~deploy.local.process.ServerProcess`).
:func:`run_kafka_tool` runs ``StorageTool`` and ``TopicCommand`` from the same
jars. The integration-test fixtures in tests/integration/conftest.py use both.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

from deploy.local.errors import KafkaStartError, KafkaToolError, NotInstalledError
from deploy.local.files import error_lines, tail, write_if_changed
from deploy.local.install import (
    KAFKA_VERSION,
    kafka_home,
    kafka_installed,
    kafka_libs_dir,
    require_tools,
    write_log4j_configs,
)
from deploy.local.process import ServerProcess, free_ports

log = logging.getLogger(__name__)

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


class KafkaServer(ServerProcess):
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

    # -- ServerProcess hooks -------------------------------------------------
    def _prepare(self) -> None:
        _require_kafka()
        write_log4j_configs(kafka_home() / "config")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.server_log.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{key}={value}\n" for key, value in self.server_properties().items())
        write_if_changed(self.config_file, text)
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
