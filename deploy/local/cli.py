"""The command line of the local stack: ``python -m deploy.local.stack COMMAND``.

Commands: ``install``, ``start`` (prints ``export CALLREC_*=...`` lines),
``stop``, ``status`` (exit code 0 if something runs, 3 if not) and ``env``.
deploy/local/stack.py is the entry point and deploy/local/stack.sh its shell
wrapper. Unlike the fixtures' servers, the CLI's servers outlive it: a
:class:`DetachedStack` keeps their pids, ports and credentials in a state
directory (default ``<cache>/stack``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from deploy.local.errors import StackError
from deploy.local.files import write_if_changed
from deploy.local.install import (
    KAFKA_VERSION,
    MINIO_VERSION,
    cache_dir,
    install,
    kafka_home,
    minio_binary,
)
from deploy.local.kafka import KAFKA_MAIN_CLASS, KafkaServer
from deploy.local.minio import MinioServer
from deploy.local.process import pid_alive, pid_cmdline, terminate_group
from deploy.local.settings import settings_env

log = logging.getLogger(__name__)

#: Default ports of the CLI stack (the API picks free ports by default).
DEFAULT_KAFKA_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_MINIO_PORT = 19000
DEFAULT_MINIO_CONSOLE_PORT = 19001

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
        if pid_alive(pid) and _CMDLINE_MARKERS[name] in pid_cmdline(pid):
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
        write_if_changed(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")


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
