"""Integration tests of the local infrastructure in ``deploy/local/stack.py``.

These start a real single-node Kafka (KRaft) and a real MinIO as processes
(installing them into the cache on first use, which takes minutes once) and
exercise start/stop/kill/restart the way the fault-injection tests will.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from botocore.config import Config

from deploy.local import stack

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed() -> None:
    """Install Kafka and MinIO into the cache (a no-op once cached)."""
    stack.install()


@pytest.fixture(scope="module")
def kafka(installed, tmp_path_factory) -> Iterator[stack.KafkaServer]:
    server = stack.KafkaServer(tmp_path_factory.mktemp("kafka"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def minio(installed, tmp_path_factory) -> Iterator[stack.MinioServer]:
    server = stack.MinioServer(tmp_path_factory.mktemp("minio"))
    server.start()
    yield server
    server.stop()


def pid_alive(pid: int | None) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid: int | None, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


async def produce(bootstrap: str, topic: str, *values: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, count: int, timeout: float = 60) -> list[bytes]:
    """Read ``count`` messages from the start of ``topic`` with a fresh group."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            received += [msg.value for msgs in batches.values() for msg in msgs]
    finally:
        await consumer.stop()
    return received


def s3_client(minio: stack.MinioServer):
    env = stack.settings_env(None, minio)
    return boto3.client(
        "s3",
        endpoint_url=env["CALLREC_S3_ENDPOINT_URL"],
        aws_access_key_id=env["CALLREC_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["CALLREC_S3_SECRET_ACCESS_KEY"],
        region_name=env["CALLREC_S3_REGION"],
        config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
    )


# --------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------


def test_kafka_produce_consume_and_restart_keeps_data(kafka: stack.KafkaServer) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, partitions=1, config={"retention.ms": 3_600_000})
    assert topic in kafka.list_topics()
    asyncio.run(produce(kafka.bootstrap, topic, b"one", b"two"))

    bootstrap, old_pid = kafka.bootstrap, kafka.pid
    kafka.restart()

    assert kafka.bootstrap == bootstrap
    assert (kafka.log_dir / "meta.properties").exists()  # formatted once, not again
    assert kafka.pid != old_pid and not pid_alive(old_pid)
    assert asyncio.run(consume(kafka.bootstrap, topic, 2)) == [b"one", b"two"]


def test_kafka_survives_sigkill(kafka: stack.KafkaServer) -> None:
    topic = f"auto-{uuid.uuid4().hex[:8]}"  # auto-created on first produce
    asyncio.run(produce(kafka.bootstrap, topic, b"before-crash"))

    old_pid = kafka.pid
    kafka.kill()
    assert not kafka.is_running() and kafka.pid is None
    assert wait_gone(old_pid)
    kafka.stop()  # stop and kill of a stopped server are no-ops
    kafka.kill()

    kafka.start()
    asyncio.run(produce(kafka.bootstrap, topic, b"after-crash"))
    # Auto-created with several partitions: no order across them.
    assert sorted(asyncio.run(consume(kafka.bootstrap, topic, 2))) == [
        b"after-crash",
        b"before-crash",
    ]


def test_kafka_start_failure_raises_with_log_tail(installed, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = stack.KafkaServer(tmp_path, port=busy.getsockname()[1])
        server.stop()  # never started: no-op
        with pytest.raises(stack.KafkaStartError) as excinfo:
            server.start(timeout=60)
    assert not server.is_running()
    assert "Address already in use" in str(excinfo.value)


# --------------------------------------------------------------------------
# MinIO
# --------------------------------------------------------------------------


def test_minio_object_lock_checksum_and_restart(minio: stack.MinioServer) -> None:
    bucket = f"locked-{uuid.uuid4().hex[:8]}"
    s3 = s3_client(minio)
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    put = s3.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello", ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"]
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"

    minio.restart()
    assert s3_client(minio).get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"

    minio.kill()
    minio.start()
    assert s3_client(minio).get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"


def test_settings_env(kafka: stack.KafkaServer, minio: stack.MinioServer) -> None:
    env = stack.settings_env(kafka, minio)
    assert env == {
        "CALLREC_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "CALLREC_S3_ENDPOINT_URL": minio.endpoint,
        "CALLREC_S3_ACCESS_KEY_ID": "callrec",
        "CALLREC_S3_SECRET_ACCESS_KEY": "callrec-secret",
        "CALLREC_S3_REGION": "us-east-1",
    }
    assert stack.settings_env(None, None) == {}


# --------------------------------------------------------------------------
# No orphans; CLI
# --------------------------------------------------------------------------


def test_server_dies_with_a_crashed_parent(installed, tmp_path: Path) -> None:
    """A test session killed with SIGKILL must not leave servers running."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from deploy.local.stack import MinioServer
        server = MinioServer({str(tmp_path)!r})
        server.start()
        print(server.pid, flush=True)
        time.sleep(600)
    """)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            server_pid = int(parent.stdout.readline())
            assert pid_alive(server_pid)
        finally:
            parent.send_signal(signal.SIGKILL)
    assert wait_gone(server_pid), "server outlived its parent"


def test_cli_start_status_env_stop(installed, tmp_path: Path) -> None:
    kafka_port, controller_port, minio_port, console_port = stack.free_ports(4)
    ports = [
        "--kafka-port",
        str(kafka_port),
        "--controller-port",
        str(controller_port),
        "--minio-port",
        str(minio_port),
        "--minio-console-port",
        str(console_port),
        "--dir",
        str(tmp_path),
    ]

    def cli(command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "deploy.local.stack", command, *ports],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            check=check,
        )

    pids: dict[str, int] = {}
    try:
        started = cli("start")
        assert f"export CALLREC_KAFKA_BOOTSTRAP=127.0.0.1:{kafka_port}" in started.stdout
        assert f"export CALLREC_S3_ENDPOINT_URL=http://127.0.0.1:{minio_port}" in started.stdout
        pids.update(
            {name: int((tmp_path / f"{name}.pid").read_text()) for name in ("kafka", "minio")}
        )
        assert all(pid_alive(pid) for pid in pids.values())  # outlived the CLI process

        assert "kafka: running" in cli("status").stdout
        assert cli("env").stdout == started.stdout
        assert json.loads((tmp_path / "stack.json").read_text())["kafka"]
    finally:
        cli("stop", check=False)
    assert all(wait_gone(pid) for pid in pids.values())
    assert cli("status", check=False).returncode == 3
