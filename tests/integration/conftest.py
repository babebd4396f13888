"""Real Kafka and MinIO for integration tests, started through deploy/local/stack.py.

Nothing here skips: if a server cannot be installed or started, the tests that
need it fail with the server's log tail. That is what CI must see.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.local import stack

log = logging.getLogger(__name__)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.KafkaServer]:
    stack.install(kafka=True, minio=False)
    server = stack.KafkaServer(tmp_path_factory.mktemp("kafka"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.MinioServer]:
    stack.install(kafka=False, minio=True)
    server = stack.MinioServer(tmp_path_factory.mktemp("minio"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.KafkaServer]:
    """A broker of the test's own, for a test that stops and restarts it.

    Started here and restarted by tests from worker threads (``asyncio.to_thread``),
    so it is not tied to a thread's life; stopped at the end whatever happened.
    """
    stack.install(kafka=True, minio=False)
    broker = stack.KafkaServer(tmp_path_factory.mktemp("kafka-own"), die_with_parent=False)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def create_topics(bootstrap: str, *names: str, partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        )
    finally:
        await admin.close()


@pytest.fixture
async def media_topic(kafka: stack.KafkaServer) -> AsyncIterator[str]:
    """A fresh media topic per test, so tests never see each other's records."""
    name = f"callrec.media.test-{uuid.uuid4().hex[:10]}"
    await create_topics(kafka.bootstrap, name)
    yield name
