"""Hands records to Kafka with ``acks=all`` and idempotence, in bounded memory.

Flow control, in one place:

1. ``publish()`` first takes the record's bytes from a process-wide
   :class:`ByteBudget`. When the budget is spent (Kafka slow or down) it waits,
   so the connection stops reading its socket; websockets then stops reading
   the TCP stream and the sender is slowed by TCP itself. Nothing is dropped and
   nothing buffers without bound.
2. Records are grouped per partition and sent as one batch per event-loop
   iteration (or when a batch reaches ``batch_bytes``): aiokafka's per-record
   ``send()`` costs more Python time than the whole rest of ingest.
3. A batch that fails (broker down, timeout) is re-sent with backoff until
   ``produce_timeout_s``; only then does its future fail with
   ``KafkaUnavailable``, and the connections waiting on it are closed with 1013.
   A re-sent batch may duplicate records Kafka already had: the recorder drops
   duplicates by (stream, track, chunk).
4. The budget is released when Kafka acknowledges the batch.

The future returned by ``publish()`` resolves when the record's batch is
acknowledged; a connection awaits all of its futures before it writes its
close record, so a close record always follows the stream's chunks.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from ingest import metrics
from ingest.errors import KafkaUnavailable

log = logging.getLogger(__name__)


class ByteBudget:
    """A counting semaphore over bytes, fair in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, nbytes: int) -> None:
        nbytes = min(nbytes, self.limit)
        if not self._waiters and self.used + nbytes <= self.limit:
            self.used += nbytes
            return
        waited_since = time.perf_counter()
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((nbytes, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(nbytes)  # granted just as we were cancelled
            else:
                self._waiters.remove((nbytes, fut))
            raise
        finally:
            metrics.BACKPRESSURE.inc(time.perf_counter() - waited_since)

    def release(self, nbytes: int) -> None:
        self.used -= min(nbytes, self.limit)
        while self._waiters and self.used + self._waiters[0][0] <= self.limit:
            size, fut = self._waiters.popleft()
            if not fut.cancelled():
                self.used += size
                fut.set_result(None)


@dataclass(eq=False)
class _Batch:
    partition: int
    done: asyncio.Future[None]
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    nbytes: int = 0
    created: float = field(default_factory=time.perf_counter)


class KafkaPublisher:
    """Publishes callrec envelopes to one topic; see the module docstring."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        max_inflight_bytes: int,
        produce_timeout_s: float,
        batch_bytes: int = 256 * 1024,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.budget = ByteBudget(max_inflight_bytes)
        self.produce_timeout_s = produce_timeout_s
        self.batch_bytes = batch_bytes
        self._partitioner = DefaultPartitioner()
        self._partitions: list[int] = []
        self._open: dict[int, _Batch] = {}
        self._flush_scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    @staticmethod
    def create_producer(client_options: dict[str, object]) -> AIOKafkaProducer:
        # linger 0: batching happens here, per loop iteration. max_batch_size above
        # batch_bytes so one of our batches always fits one Kafka batch.
        return AIOKafkaProducer(
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            max_batch_size=1024 * 1024,
            max_request_size=2 * 1024 * 1024,
            request_timeout_ms=30000,
            retry_backoff_ms=200,
            **client_options,
        )

    async def start(self) -> None:
        """Connect; raises ``KafkaError`` when Kafka is unreachable (the caller retries)."""
        await self.producer.start()
        partitions = await self.producer.partitions_for(self.topic)
        self._partitions = sorted(partitions)

    async def stop(self) -> None:
        """Flush what is open, wait for every batch, then close the producer."""
        self._flush()
        if self._sending:
            await asyncio.wait(set(self._sending))
        await self.producer.stop()

    async def probe(self, within_s: float) -> bool:
        """True when Kafka answered a metadata request within ``within_s`` seconds."""
        try:
            async with asyncio.timeout(within_s):
                return bool(await self.producer.client.force_metadata_update())
        except (TimeoutError, KafkaError):
            return False

    def partition_for(self, key: bytes) -> int:
        """The Java client's murmur2 partition of ``key``, so every pod agrees."""
        parts = self._partitions
        return int(self._partitioner(key, parts, parts))

    async def publish(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Queue one record; waits while the in-flight budget is spent (backpressure)."""
        size = len(value)
        await self.budget.acquire(size)
        metrics.INFLIGHT_BYTES.set(self.budget.used)
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = _Batch(
                partition, asyncio.get_running_loop().create_future()
            )
        batch.records.append((key, value))
        batch.nbytes += size
        if batch.nbytes >= self.batch_bytes:
            self._send(self._open.pop(partition))
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return batch.done

    def _flush(self) -> None:
        self._flush_scheduled = False
        open_batches, self._open = self._open, {}
        for batch in open_batches.values():
            self._send(batch)

    def _send(self, batch: _Batch) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, batch: _Batch) -> None:
        deadline = time.monotonic() + self.produce_timeout_s
        backoff = 0.1
        try:
            while True:
                try:
                    await self._send_once(batch)
                    break
                except KafkaError as exc:
                    if time.monotonic() + backoff > deadline:
                        metrics.PRODUCE_FAILURES.inc()
                        log.error(
                            "giving up on %d records for %s[%d] after %.0fs: %r",
                            len(batch.records), self.topic, batch.partition,
                            self.produce_timeout_s, exc,
                        )
                        batch.done.set_exception(KafkaUnavailable(str(exc)))
                        return
                    metrics.PRODUCE_RETRIES.inc()
                    log.warning(
                        "re-sending %d records to %s[%d] in %.1fs: %r",
                        len(batch.records), self.topic, batch.partition, backoff, exc,
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
            metrics.PRODUCE_LATENCY.observe(time.perf_counter() - batch.created)
            metrics.RECORDS.inc(len(batch.records))
            batch.done.set_result(None)
        finally:
            self.budget.release(batch.nbytes)
            metrics.INFLIGHT_BYTES.set(self.budget.used)
            if not batch.done.done():  # cancelled while stopping
                batch.done.set_exception(KafkaUnavailable("publisher stopped"))

    async def _send_once(self, batch: _Batch) -> None:
        builder = self.producer.create_batch()
        for key, value in batch.records:
            if builder.append(key=key, value=value, timestamp=None) is None:
                raise AssertionError("a callrec batch must fit one Kafka batch")
        delivered = await self.producer.send_batch(builder, self.topic, partition=batch.partition)
        await delivered
