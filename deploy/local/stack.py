"""Local infrastructure for callrec: a real Kafka broker and a real MinIO server.

No Docker. Both servers run as plain child processes built from public
artifacts and cached under ``$CALLREC_CACHE_DIR`` (default ``~/.cache/callrec``).
This module is the entry point of the command line tool::

    python -m deploy.local.stack install|start|stop|status|env \
        [--kafka-port N] [--controller-port N] [--minio-port N] [--dir DIR]

and re-exports the Python API used by the pytest fixtures
(:class:`KafkaServer`, :class:`MinioServer`, :func:`install`,
:func:`settings_env`) from the modules beside it:

* deploy/local/install.py: pinned versions, cache paths, the installers;
* deploy/local/process.py: a server as a supervised child process, free ports;
* deploy/local/kafka.py and deploy/local/minio.py: the two servers;
* deploy/local/settings.py: the ``CALLREC_*`` settings pointing at them;
* deploy/local/cli.py: the commands and the detached stack they run;
* deploy/local/errors.py and deploy/local/files.py: errors, log tails.

All of it is standard-library only. The API never prints; it logs to the
loggers under ``deploy.local``.
"""

from __future__ import annotations

import sys

from deploy.local.cli import (
    DEFAULT_CONTROLLER_PORT,
    DEFAULT_KAFKA_PORT,
    DEFAULT_MINIO_CONSOLE_PORT,
    DEFAULT_MINIO_PORT,
    DetachedStack,
    main,
)
from deploy.local.errors import (
    InstallError,
    KafkaStartError,
    KafkaToolError,
    MinioStartError,
    NotInstalledError,
    ServerStartError,
    StackError,
    ToolMissingError,
)
from deploy.local.files import error_lines, tail
from deploy.local.install import (
    KAFKA_VERSION,
    LOG4J_VERSION,
    MINIO_MODULE,
    MINIO_VERSION,
    SCALA_BINARY_VERSION,
    cache_dir,
    go_env,
    install,
    install_kafka,
    install_lock,
    install_minio,
    java_executable,
    kafka_home,
    kafka_installed,
    kafka_libs_dir,
    minio_binary,
    minio_installed,
    require_tools,
)
from deploy.local.kafka import (
    KAFKA_JVM_FLAGS,
    KAFKA_MAIN_CLASS,
    KAFKA_READY_LINE,
    STORAGE_TOOL_CLASS,
    TOOL_JVM_FLAGS,
    TOPIC_COMMAND_CLASS,
    KafkaServer,
    kafka_classpath,
    new_cluster_id,
    run_kafka_tool,
)
from deploy.local.minio import (
    DEFAULT_MINIO_PASSWORD,
    DEFAULT_MINIO_USER,
    S3_REGION,
    MinioServer,
)
from deploy.local.process import free_ports, port_is_open, terminate_group
from deploy.local.settings import settings_env

__all__ = [
    "DEFAULT_CONTROLLER_PORT",
    "DEFAULT_KAFKA_PORT",
    "DEFAULT_MINIO_CONSOLE_PORT",
    "DEFAULT_MINIO_PASSWORD",
    "DEFAULT_MINIO_PORT",
    "DEFAULT_MINIO_USER",
    "KAFKA_JVM_FLAGS",
    "KAFKA_MAIN_CLASS",
    "KAFKA_READY_LINE",
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "MINIO_MODULE",
    "MINIO_VERSION",
    "S3_REGION",
    "SCALA_BINARY_VERSION",
    "STORAGE_TOOL_CLASS",
    "TOOL_JVM_FLAGS",
    "TOPIC_COMMAND_CLASS",
    "DetachedStack",
    "InstallError",
    "KafkaServer",
    "KafkaStartError",
    "KafkaToolError",
    "MinioServer",
    "MinioStartError",
    "NotInstalledError",
    "ServerStartError",
    "StackError",
    "ToolMissingError",
    "cache_dir",
    "error_lines",
    "free_ports",
    "go_env",
    "install",
    "install_kafka",
    "install_lock",
    "install_minio",
    "java_executable",
    "kafka_classpath",
    "kafka_home",
    "kafka_installed",
    "kafka_libs_dir",
    "main",
    "minio_binary",
    "minio_installed",
    "new_cluster_id",
    "port_is_open",
    "require_tools",
    "run_kafka_tool",
    "settings_env",
    "tail",
    "terminate_group",
]

if __name__ == "__main__":
    sys.exit(main())
