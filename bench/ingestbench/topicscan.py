"""Reading back a topic ingest wrote: what reached Kafka, and when.

With ``decode=False`` only the newest record of each partition is read (its broker
``LogAppendTime``: the last acknowledgement); with ``decode=True`` every record, to
check each (call, track, chunk) and measure append time minus ``received_ns``.
"""

from __future__ import annotations

import array
import asyncio
from dataclasses import dataclass, field

PARTITIONS = 4
"""Partitions of every topic the ingest benchmark makes."""


@dataclass
class TopicScan:
    """What was read back from a topic."""

    records: int = 0
    last_append_ms: int = 0
    media: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    seen: dict[tuple[str, str], bytearray] = field(default_factory=dict)
    duplicates: int = 0
    append_minus_received_ms: array.array[float] = field(
        default_factory=lambda: array.array("f")
    )
    media_items: list[tuple[str, int, int, int]] = field(default_factory=list)
    """(call_id, chunk, received_ns, append_ms) per media record, when asked for."""


async def scan_topic(bootstrap: str, topic: str, *, decode: bool, keep_media: bool = False,
                      within_s: float = 300) -> TopicScan:
    """Read the whole topic up to its end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from schemas import envelope

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
        # "earliest": assign() starts an offset reset of its own that may land after
        # seek_to_beginning(); with "latest" the scan could start at the end.
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    scan = TopicScan()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if not decode:
            # Only the newest record of each partition: its broker append time.
            for tp in tps:
                scan.records += ends[tp]
                if ends[tp]:
                    consumer.seek(tp, ends[tp] - 1)
            pending = {tp for tp in tps if ends[tp]}
            async with asyncio.timeout(within_s):
                while pending:
                    batches = await consumer.getmany(*pending, timeout_ms=500)
                    for tp, msgs in batches.items():
                        for m in msgs:  # normally just the last one (see above)
                            if m.offset + 1 >= ends[tp]:
                                scan.last_append_ms = max(scan.last_append_ms, m.timestamp)
                                pending.discard(tp)
            return scan
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp]}
        async with asyncio.timeout(within_s):
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500, max_records=20000)
                for tp, msgs in batches.items():
                    for m in msgs:
                        scan.records += 1
                        scan.last_append_ms = max(scan.last_append_ms, m.timestamp)
                        rec = envelope.decode(m.value)
                        if isinstance(rec, envelope.MediaChunk | envelope.MediaBatch):
                            # A MediaBatch (CALLREC_INGEST_COALESCE_MS) stands for its frames.
                            batch = (rec.chunks() if isinstance(rec, envelope.MediaBatch)
                                     else [rec])
                            for chunk in batch:
                                scan.media += 1
                                key = (chunk.call_id, chunk.track)
                                flags = scan.seen.get(key)
                                if flags is None:
                                    flags = scan.seen[key] = bytearray(64)
                                if chunk.chunk >= len(flags):
                                    flags.extend(bytes(chunk.chunk + 1 - len(flags) + 64))
                                if flags[chunk.chunk]:
                                    scan.duplicates += 1
                                flags[chunk.chunk] = 1
                                scan.append_minus_received_ms.append(
                                    m.timestamp - chunk.received_ns / 1e6
                                )
                                if keep_media:
                                    scan.media_items.append(
                                        (chunk.call_id, chunk.chunk, chunk.received_ns, m.timestamp)
                                    )
                        elif isinstance(rec, envelope.StreamClosed):
                            scan.closes[rec.reason] = scan.closes.get(rec.reason, 0) + 1
                        if m.offset + 1 >= ends[tp]:
                            pending.discard(tp)
    finally:
        await consumer.stop()
    return scan
