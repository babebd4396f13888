"""Errors of the local stack (deploy/local/), one root for the package::

    StackError
    ├── ToolMissingError        java, mvn or go not on PATH (install.py)
    ├── InstallError            mvn or go install failed (install.py)
    ├── NotInstalledError       a server started before install() (kafka.py, minio.py)
    ├── ServerStartError        a server exited or was not ready in time (process.py)
    │   ├── KafkaStartError     (kafka.py)
    │   └── MinioStartError     (minio.py)
    └── KafkaToolError          StorageTool or TopicCommand failed (kafka.py)

The CLI (cli.py) prints any of them as ``error: ...`` and exits with 1.
"""

from __future__ import annotations


class StackError(Exception):
    """Base class of every error raised by deploy/local/."""


class ToolMissingError(StackError):
    """A required host tool (java, mvn, go) is not on PATH."""


class InstallError(StackError):
    """Downloading or building Kafka or MinIO failed."""


class NotInstalledError(StackError):
    """A server was started before ``install()`` (install.py) had been run."""


class ServerStartError(StackError):
    """A server exited or did not become ready in time."""


class KafkaStartError(ServerStartError):
    """The Kafka broker did not start."""


class MinioStartError(ServerStartError):
    """The MinIO server did not start."""


class KafkaToolError(StackError):
    """A Kafka command line tool (StorageTool, TopicCommand) failed."""
