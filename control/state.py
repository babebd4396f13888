"""The controller's per-call state: the compacted topic ``callrec.control``, read back.

Each record is the whole latest :class:`~schemas.envelope.ControlState` of one call
(key = call id), so compaction keeps exactly what a controller needs after a restart
or a rebalance. Only the owner of a call's ``callrec.calls`` partition writes its state;
a new owner reads the topic to its end before it handles any event (docs/control.md,
"Idempotence").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer

from infra.bus.local import LocalBus
from schemas import envelope
from schemas.errors import EnvelopeError

log = logging.getLogger(__name__)

StateLoader = Callable[[], Awaitable[dict[str, envelope.ControlState]]]


def _take(states: dict[str, envelope.ControlState], value: bytes | None, where: str) -> None:
    if not value:
        return
    try:
        record = envelope.decode(value)
    except EnvelopeError as exc:
        log.error("%s: skipping undecodable control state: %s", where, exc)
        return
    if isinstance(record, envelope.ControlState):
        states[record.call_id] = record


def kafka_loader(client_options: dict[str, object], topic: str) -> StateLoader:
    """Read every partition of ``topic`` from its start to its current end."""

    async def load() -> dict[str, envelope.ControlState]:
        # No group: subscribing assigns every partition of the topic, read from its start.
        consumer = AIOKafkaConsumer(
            topic,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
            **client_options,
        )
        await consumer.start()
        states: dict[str, envelope.ControlState] = {}
        try:
            async with asyncio.timeout(30):
                while not consumer.assignment():
                    await consumer.getmany(timeout_ms=100)
            tps = sorted(consumer.assignment())
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            todo = {tp for tp in tps if ends[tp] > 0}
            while todo:
                batches = await consumer.getmany(*todo, timeout_ms=500)
                for tp, messages in batches.items():
                    for message in messages:
                        _take(states, message.value, f"{tp.topic}[{tp.partition}]@{message.offset}")
                for tp in list(todo):
                    if await consumer.position(tp) >= ends[tp]:
                        todo.discard(tp)
        finally:
            await consumer.stop()
        log.info("control state of %d calls read from %s", len(states), topic)
        return states

    return load


def local_loader(bus: LocalBus, topic: str) -> StateLoader:
    async def load() -> dict[str, envelope.ControlState]:
        states: dict[str, envelope.ControlState] = {}
        topic_log = bus.log(topic)
        offset = topic_log.start_offset
        while offset < topic_log.end_offset:
            records = topic_log.read(offset, 1000)
            if not records:
                break
            for message in records:
                _take(states, message.value, f"{topic}@{message.offset}")
            offset = records[-1].offset + 1
        return states

    return load
