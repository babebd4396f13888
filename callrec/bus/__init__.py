"""The message bus between ingest, recorder and analyzer, behind small interfaces.

Two backends implement them:

- Kafka (scale-out): ``ingest.publisher.KafkaPublisher`` for ingest, and
  aiokafka's own ``AIOKafkaConsumer``/``AIOKafkaProducer`` for the workers;
- a local log (``callrec up``): ``callrec.bus.local``, an append-only file per
  topic with committed offsets per consumer group, in one process.

The services are written against these protocols only, so reassembly, archiving
and analysis have one implementation whatever the backend. The protocols are
the subset of aiokafka's API the services use, which is why aiokafka's clients
satisfy them as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any, Protocol

from aiokafka import TopicPartition


class Publisher(Protocol):
    """Where ingest hands records (``callrec.media``), with flow control."""

    async def start(self) -> None:
        """Connect; raise when the bus is unreachable (the caller retries)."""

    async def stop(self) -> None:
        """Wait for every record handed over to be acknowledged or given up, then close."""

    async def probe(self, within_s: float) -> bool:
        """True when the bus answered within ``within_s`` seconds."""

    def partition_for(self, key: bytes) -> int:
        """The partition of ``key`` (stable across processes)."""

    async def publish(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Queue one record; may wait (backpressure). The future resolves on acknowledgement."""


class Message(Protocol):
    offset: int
    key: bytes | None
    value: bytes | None


class Consumer(Protocol):
    """A consumer-group member (the subset of ``AIOKafkaConsumer`` the workers use)."""

    def subscribe(self, topics: list[str], listener: Any = None) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...


class Producer(Protocol):
    """Publishes worker output (the subset of ``AIOKafkaProducer`` the workers use)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Any: ...


def topic_partitions(topic: str, partitions: Collection[int]) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in partitions}
