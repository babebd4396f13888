"""Hands records to Kafka with ``acks=all`` and idempotence, in bounded memory.

Flow control, in one place:

1. Every record's bytes are taken from a process-wide :class:`ByteBudget`.
   A connection offers a record only while the budget ``has_room()``; when it is
   spent (Kafka slow or down) the connection stops reading its socket and
   queues itself with ``when_room()``, so the sender is slowed by TCP itself.
   Nothing is dropped and nothing buffers without bound. ``offer()`` never
   waits: the caller is a ``data_received`` callback.
2. Records are grouped per partition into batches of up to ``batch_bytes``,
   handed to aiokafka in order by one pump per partition (``_PartitionLane``):
   aiokafka's per-record ``send()`` costs more Python time than the whole rest
   of ingest, and a batch grows while the previous one is on its way.
   A batch that is not full waits for the next tick of a ``linger_ms`` grid
   shared by all partitions, so that at low load the partitions' batches leave
   together, in one produce request: a request costs ~0.2 ms of CPU in aiokafka
   and the broker whatever it carries, and without a linger each would carry a
   record or two (Kafka's own producer lingers 5 ms by default for the same reason;
   ours defaults to 10 ms, half a Wavix frame interval).
3. A batch that fails (broker down, timeout) is re-sent with backoff until
   ``produce_timeout_s``; only then does its future fail with
   ``BusUnavailable``, and ingest closes the connections waiting on it with 1013.
   A re-sent batch may duplicate records Kafka already had: the recorder drops
   duplicates by (stream, track, chunk).
4. The budget is released when Kafka acknowledges the batch (or it is given
   up), after the batch's future is resolved; waiting connections are then
   served in arrival order.

The future returned by ``offer()`` resolves when the record's batch is
acknowledged; a connection awaits all of its futures before it writes its
close record, so a close record always follows the stream's chunks.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import Counter, Gauge, Histogram

from infra.bus import BusUnavailable

log = logging.getLogger(__name__)


class ByteBudget:
    """Bytes in flight, with the connections waiting for room served in arrival order.

    Synchronous on purpose: connections take bytes from inside ``data_received``.
    A record is always taken whole, so ``used`` may pass ``limit`` by one record
    per connection that was reading when the budget ran out.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: collections.deque[Callable[[], None]] = collections.deque()

    def has_room(self) -> bool:
        """True when a connection that is not waiting may take bytes now."""
        return not self._waiters and self.used < self.limit

    @property
    def spent(self) -> bool:
        """True when nobody, not even a waiter being served, may take more."""
        return self.used >= self.limit

    def take(self, nbytes: int) -> None:
        self.used += nbytes

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, after the waiters before it, when bytes are released.

        The callback takes what it needs while ``spent`` is false and calls
        ``when_room`` again if it still waits (it then goes to the back).
        """
        self._waiters.append(callback)

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
        waiters = self._waiters
        while waiters and self.used < self.limit:
            waiters.popleft()()


def pace_metadata_retries(client: AIOKafkaClient, backoff_s: float) -> None:
    """Wait ``backoff_s`` after a failed metadata update before reporting it.

    While a partition's leader is unknown (the broker is away), aiokafka's sender
    asks for a metadata update, waits for it and asks again, and a failed update
    ends at once (connection refused): without a pause this spun a core and wrote
    ~12,000 aiokafka error lines a second per ingest pod for as long as Kafka was
    down (the reliability matrix's 10 s broker outage: 0.95 cores and 151,552 error
    lines; paced, 0.07 cores and 124 lines). The update itself is aiokafka's; only
    its failure is slowed down, so it is never later than ``backoff_s`` once Kafka
    is back.
    tests/integration/test_ingest.py counts the attempts during an outage.
    """
    update = client._metadata_update

    async def paced(cluster: object, topics: object) -> bool:
        ok: bool = await update(cluster, topics)
        if not ok:
            await asyncio.sleep(backoff_s)
        return ok

    client._metadata_update = paced


@dataclass(eq=False)
class _Batch:
    partition: int
    done: asyncio.Future[None]
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    nbytes: int = 0
    created: float = field(default_factory=time.perf_counter)
    deadline: float = 0.0
    """Monotonic time after which a failing batch is given up (set on first send)."""
    backoff: float = 0.1


class _PartitionLane:
    """Batches of one partition, handed to aiokafka strictly one after another.

    One pump task per partition is the only caller of ``send_batch`` for it:
    aiokafka keeps one pending batch per partition, and concurrent waiters for
    that slot both reorder records and shrink each other's timeouts. While the
    pump waits, new records fill the open batch, so batches grow with load.
    """

    __slots__ = ("open", "pump", "queued")

    def __init__(self) -> None:
        self.open: _Batch | None = None
        self.queued: collections.deque[_Batch] = collections.deque()
        self.pump: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class PublishMetrics:
    """The Prometheus series a publisher updates; the owning service names them."""

    latency: Histogram
    """From a record being offered to its Kafka acknowledgement, per batch."""
    records: Counter
    """Records acknowledged by Kafka."""
    retries: Counter
    """Batches re-sent after a Kafka error or timeout."""
    failures: Counter
    """Batches given up after the produce timeout."""
    inflight: Gauge
    """Bytes offered and not yet acknowledged (read from the budget at scrape time)."""


class KafkaPublisher:
    """Publishes callrec envelopes to one topic; see the module docstring."""

    def __init__(
        self,
        client_options: dict[str, object],
        topic: str,
        *,
        max_inflight_bytes: int,
        produce_timeout_s: float,
        metrics: PublishMetrics,
        linger_ms: float = 10.0,
        batch_bytes: int = 256 * 1024,
    ) -> None:
        self.metrics = metrics
        self._client_options = client_options
        self._produce_timeout_s = produce_timeout_s
        self.producer = self._create_producer()
        self.topic = topic
        self.budget = ByteBudget(max_inflight_bytes)
        self.produce_timeout_s = produce_timeout_s
        self.batch_bytes = batch_bytes
        self.linger_s = linger_ms / 1000
        self._partitioner = DefaultPartitioner()
        self._partitions: list[int] = []
        self._lanes: dict[int, _PartitionLane] = {}
        self._unacked: set[_Batch] = set()
        self.failures = 0
        """Batches given up so far (their futures failed): connections check theirs then."""
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.inflight.set_function(lambda: self.budget.used)

    def _create_producer(self) -> AIOKafkaProducer:
        # linger 0: batching happens here, per partition lane. max_batch_size above
        # batch_bytes so one of our batches always fits one Kafka batch.
        producer = AIOKafkaProducer(
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            max_batch_size=1024 * 1024,
            max_request_size=2 * 1024 * 1024,
            # aiokafka expires a batch it could not deliver within the request timeout; a
            # re-send is then a new batch that an idempotent broker refuses as out of
            # sequence. So aiokafka keeps retrying (same sequence) for as long as we would
            # wait for Kafka at all: CALLREC_INGEST_PRODUCE_TIMEOUT_S.
            request_timeout_ms=int(self._produce_timeout_s * 1000),
            retry_backoff_ms=200,
            **self._client_options,
        )
        pace_metadata_retries(producer.client, backoff_s=0.2)
        return producer

    async def start(self) -> None:
        """Connect; raises ``KafkaError`` when Kafka is unreachable (the caller retries)."""
        try:
            await self.producer.start()
            partitions = await self.producer.partitions_for(self.topic)
        except KafkaError:
            # An aiokafka producer cannot be started twice: the next try gets a new one.
            await self.producer.stop()
            self.producer = self._create_producer()
            raise
        self._partitions = sorted(partitions)

    async def stop(self) -> None:
        """Wait until every record handed to us is acknowledged or given up, then close."""
        await self._idle.wait()
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

    def has_room(self, waiting: bool = False) -> bool:
        """False while the in-flight budget is spent: stop reading, ask ``when_room``.

        ``waiting``: asked by a connection ``when_room`` is calling back, which may take
        while others still queue behind it, until the budget is spent again."""
        return not self.budget.spent if waiting else self.budget.has_room()

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when room is made (see ``ByteBudget.when_room``)."""
        self.budget.when_room(callback)

    def offer(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Queue one record now (never waits); the future resolves when Kafka has it."""
        size = len(value)
        self.budget.take(size)
        lane = self._lanes.get(partition)
        if lane is None:
            lane = self._lanes[partition] = _PartitionLane()
        batch = lane.open
        if batch is None:
            batch = lane.open = _Batch(partition, asyncio.get_running_loop().create_future())
            self._unacked.add(batch)
            self._idle.clear()
        batch.records.append((key, value))
        batch.nbytes += size
        if batch.nbytes >= self.batch_bytes:
            lane.queued.append(batch)
            lane.open = None
        if lane.pump is None:
            lane.pump = asyncio.get_running_loop().create_task(self._pump(lane))
        return batch.done

    def _wake(self, lane: _PartitionLane) -> None:
        if lane.pump is None:
            lane.pump = asyncio.get_running_loop().create_task(self._pump(lane))

    async def _pump(self, lane: _PartitionLane) -> None:
        """Hand the lane's batches to aiokafka, oldest first, one at a time."""
        linger = self.linger_s
        try:
            while True:
                if lane.queued:
                    batch = lane.queued.popleft()
                elif lane.open is not None:
                    if linger:
                        # The next tick of the shared grid after the batch began.
                        due = math.ceil(lane.open.created / linger) * linger
                        wait = due - time.perf_counter()
                        if wait > 0:
                            await asyncio.sleep(wait)
                            continue  # it may have filled up, or a retry came first
                    batch, lane.open = lane.open, None
                else:
                    return
                if not batch.deadline:
                    batch.deadline = time.monotonic() + self.produce_timeout_s
                try:
                    delivered = await self._send(batch)
                except KafkaError as exc:
                    self._retry(lane, batch, exc)
                    continue
                delivered.add_done_callback(functools.partial(self._on_delivery, lane, batch))
        finally:
            lane.pump = None

    async def _send(self, batch: _Batch) -> asyncio.Future[object]:
        builder = self.producer.create_batch()
        for key, value in batch.records:
            if builder.append(key=key, value=value, timestamp=None) is None:
                raise AssertionError("a callrec batch must fit one Kafka batch")
        delivered: asyncio.Future[object] = await self.producer.send_batch(
            builder, self.topic, partition=batch.partition
        )
        return delivered

    def _on_delivery(
        self, lane: _PartitionLane, batch: _Batch, fut: asyncio.Future[object]
    ) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or isinstance(exc, KafkaError):
            self._retry(lane, batch, exc or KafkaError("delivery cancelled"))
        elif exc is not None:
            self._finish(batch, BusUnavailable(repr(exc)))
        else:
            self.metrics.latency.observe(time.perf_counter() - batch.created)
            self.metrics.records.inc(len(batch.records))
            self._finish(batch, None)

    def _retry(self, lane: _PartitionLane, batch: _Batch, exc: BaseException) -> None:
        """Re-send a failed batch after a backoff, or give it up past its deadline.

        A re-sent batch may duplicate records Kafka already had, and lands after
        batches sent meanwhile: the recorder orders by chunk and drops duplicates.
        """
        if time.monotonic() + batch.backoff > batch.deadline:
            self.metrics.failures.inc()
            log.error("giving up on %d records for %s[%d] after %.0fs: %r",
                      len(batch.records), self.topic, batch.partition,
                      self.produce_timeout_s, exc)
            self._finish(batch, BusUnavailable(str(exc) or type(exc).__name__))
            return
        self.metrics.retries.inc()
        log.warning("re-sending %d records to %s[%d] in %.1fs: %r",
                    len(batch.records), self.topic, batch.partition, batch.backoff, exc)

        def requeue() -> None:
            lane.queued.appendleft(batch)
            self._wake(lane)

        asyncio.get_running_loop().call_later(batch.backoff, requeue)
        batch.backoff = min(batch.backoff * 2, 2.0)

    def _finish(self, batch: _Batch, error: BaseException | None) -> None:
        # Resolve first: connections served by the release below see their acks.
        if error is None:
            batch.done.set_result(None)
        else:
            batch.done.set_exception(error)
            self.failures += 1
        self._unacked.discard(batch)
        if not self._unacked:
            self._idle.set()
        self.budget.release(batch.nbytes)


def kafka_consumer(
    client_options: dict[str, object], group_id: str, *, session_timeout_ms: int,
    **tuning: Any,
) -> AIOKafkaConsumer:
    """A consumer-group member that commits by hand and starts at the earliest offset."""
    return AIOKafkaConsumer(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(1000, session_timeout_ms // 5),
        **tuning,
        **client_options,
    )


def kafka_producer(client_options: dict[str, object]) -> AIOKafkaProducer:
    """A producer whose records are acknowledged by every in-sync replica, never doubled."""
    return AIOKafkaProducer(acks="all", enable_idempotence=True, **client_options)
