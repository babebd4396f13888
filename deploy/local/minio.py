"""MinIO for the local stack: a single-drive S3 server on 127.0.0.1.

:class:`MinioServer` runs the binary that install.py built, as a
:class:`~deploy.local.process.ServerProcess`, with its root user and region
set through the environment. The S3 store tests in
tests/integration/test_store_s3.py run against it.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from deploy.local.errors import MinioStartError, NotInstalledError, StackError
from deploy.local.install import MINIO_VERSION, minio_binary, minio_installed
from deploy.local.process import ServerProcess, free_ports

DEFAULT_MINIO_USER = "callrec"
DEFAULT_MINIO_PASSWORD = "callrec-secret"
S3_REGION = "us-east-1"


class MinioServer(ServerProcess):
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

    # -- ServerProcess hooks -------------------------------------------------
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
