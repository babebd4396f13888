"""The message bus between ingest, recorder and analyzer, behind small interfaces.

Two backends implement them:

- Kafka (scale-out): ``infra.bus.kafka.KafkaPublisher`` for ingest, and
  aiokafka's own ``AIOKafkaConsumer``/``AIOKafkaProducer`` for the workers;
- a local log (``callrec up``): ``infra.bus.local``, an append-only file per
  topic with committed offsets per consumer group, in one process.

The services are written against these protocols only, so reassembly, archiving
and analysis have one implementation whatever the backend. The protocols are
the subset of aiokafka's API the services use, which is why aiokafka's clients
satisfy them as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any, Protocol

from aiokafka import TopicPartition

from infra.errors import InfraError


class BusError(InfraError):
    """Root of the bus errors."""

    retriable = False


class BusUnavailable(BusError):
    """The bus did not take a record within its timeout (Kafka down or too slow)."""

    retriable = True


class Publisher(Protocol):
    """Where ingest hands records (``callrec.media``), with flow control.

    Synchronous where ingest calls it per frame (from ``data_received``): a
    connection offers records while ``has_room()``; otherwise it stops reading
    its socket and asks ``when_room`` to be called back (backpressure).
    """

    async def start(self) -> None:
        """Connect; raise when the bus is unreachable (the caller retries)."""

    async def stop(self) -> None:
        """Wait for every record handed over to be acknowledged or given up, then close."""

    async def probe(self, within_s: float) -> bool:
        """True when the bus answered within ``within_s`` seconds."""

    def partition_for(self, key: bytes) -> int:
        """The partition of ``key`` (stable across processes)."""

    failures: int
    """Offers failed so far (monotonic): when it changes, connections look at their futures
    (cheaper than a callback per record)."""

    def has_room(self, waiting: bool = False) -> bool:
        """False while records in flight use the whole budget: stop reading for now.
        ``waiting``: asked by a connection that ``when_room`` is calling back."""

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when room is made, after the callbacks registered earlier."""

    def offer(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Queue one record now, never waiting; the future resolves on acknowledgement."""


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

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The log end of each partition, asked of the bus now (paused partitions too)."""
        ...


class Producer(Protocol):
    """Publishes worker output (the subset of ``AIOKafkaProducer`` the workers use)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Any: ...


def topic_partitions(topic: str, partitions: Collection[int]) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in partitions}
