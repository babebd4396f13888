"""Reading callrec records back from Kafka in tests, waiting on conditions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer

from schemas import envelope


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes
    record: envelope.Record


async def read_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Consumed]], bool],
    timeout: float = 60,
) -> list[Consumed]:
    """Read ``topic`` from the beginning until ``done(records)`` holds; fail after ``timeout``."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"test-reader-{uuid.uuid4().hex}",
        enable_auto_commit=False, auto_offset_reset="earliest",
    )
    await consumer.start()
    records: list[Consumed] = []
    try:
        async with asyncio.timeout(timeout):
            while not done(records):
                batches = await consumer.getmany(timeout_ms=200)
                for tp, messages in batches.items():
                    for m in messages:
                        assert m.key is not None and m.value is not None
                        records.append(
                            Consumed(tp.partition, m.offset, m.key, envelope.decode(m.value))
                        )
    except TimeoutError:
        raise AssertionError(
            f"condition not met after {timeout}s; {len(records)} records read"
        ) from None
    finally:
        await consumer.stop()
    return records


def closes(records: list[Consumed], call_id: str | None = None) -> list[envelope.StreamClosed]:
    return [
        c.record for c in records
        if isinstance(c.record, envelope.StreamClosed)
        and (call_id is None or c.record.call_id == call_id)
    ]


def chunks(records: list[Consumed], call_id: str) -> list[envelope.MediaChunk]:
    """The call's chunks in log order, a ``MediaBatch`` standing for its frames."""
    out: list[envelope.MediaChunk] = []
    for c in records:
        if c.record.call_id != call_id:
            continue
        if isinstance(c.record, envelope.MediaChunk):
            out.append(c.record)
        elif isinstance(c.record, envelope.MediaBatch):
            out.extend(c.record.chunks())
    return out
