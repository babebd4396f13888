"""The local bus of ``callrec up``: Kafka's model, one process, one directory.

Each topic is a directory of append-only segment files (one partition, 0)::

    <root>/<topic>/<base offset, 20 digits>.log     records from that offset on
    <root>/<topic>/groups/<group id>.json          committed offset of a consumer group

A record is framed as ``key length (4) | value length (4) | CRC-32 (4) | key |
value`` (big-endian lengths; the CRC-32 covers key and value) and written with
one ``write()``. On open, a torn last record (short or with a bad CRC) is cut
off. Segments roll at ``segment_bytes``; a segment whose records every consumer
group has committed past is deleted. A group file holds ``{"offset": N}``, the
next offset the group reads, replaced atomically (temp file, fsync, rename,
fsync of the directory).

What survives (docs/architecture.md):

- a process crash (``kill -9``, OOM): every appended record (the bytes are in
  the OS page cache once ``write()`` returns) and every committed offset;
- power loss or a kernel crash: records fsynced, which every record is within
  ``sync_interval_s`` of its append (a timer, not the next append); whatever a
  ``LocalProducer.send_and_wait`` returned for (it fsyncs, like ``acks=all``);
  and every committed offset, which is never durable before the records below
  it: ``commit`` fsyncs the log first.

Because offsets, commits and replays behave as in Kafka, the recorder's
exactly-once rules and crash recovery are the same code in both modes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from infra.bus import BusError
from infra.durable import fsync_dir, make_dirs, replace_durably

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">III")
SEGMENT_BYTES = 64 * 1024 * 1024


class LocalLogError(BusError):
    """The local log on disk is unreadable, or its directory is in use."""


@dataclass(frozen=True, slots=True)
class Message:
    """A record read back, shaped like aiokafka's ``ConsumerRecord`` where it matters."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class _Segment:
    __slots__ = ("base", "fd", "path", "positions", "size")

    def __init__(self, path: Path, base: int) -> None:
        self.path = path
        self.base = base
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.positions = array("Q")
        """File position of each record: record ``base + i`` starts at ``positions[i]``."""
        self.size = 0

    def scan(self) -> None:
        """Index the records; cut a torn tail left by a crash in the middle of a write."""
        data = os.pread(self.fd, os.fstat(self.fd).st_size, 0)
        pos = 0
        while pos + _HEADER.size <= len(data):
            key_len, value_len, crc = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + key_len + value_len
            if end > len(data) or zlib.crc32(data[pos + _HEADER.size:end]) != crc:
                break
            self.positions.append(pos)
            pos = end
        if pos != len(data):
            log.warning("%s: cutting %d bytes of a torn record", self.path, len(data) - pos)
            os.ftruncate(self.fd, pos)
        self.size = pos

    @property
    def end(self) -> int:
        return self.base + len(self.positions)

    def read(self, offset: int) -> tuple[bytes, bytes]:
        pos = self.positions[offset - self.base]
        key_len, value_len, _ = _HEADER.unpack(os.pread(self.fd, _HEADER.size, pos))
        body = os.pread(self.fd, key_len + value_len, pos + _HEADER.size)
        return body[:key_len], body[key_len:]

    def close(self) -> None:
        os.close(self.fd)


class LocalLog:
    """One topic: append, read by offset, wait for new records, drop what all consumed."""

    def __init__(self, directory: Path, topic: str, segment_bytes: int = SEGMENT_BYTES,
                 sync_interval_s: float = 1.0) -> None:
        self.topic = topic
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.sync_interval_s = sync_interval_s
        make_dirs(directory / "groups")
        self._segments: list[_Segment] = []
        for path in sorted(directory.glob("*.log")):
            segment = _Segment(path, int(path.stem))
            segment.scan()
            self._segments.append(segment)
        if not self._segments:
            self._segments.append(self._new_segment(0))
        self._waiters: list[asyncio.Future[None]] = []
        self._unsynced = False
        """Records were appended to the active segment since its last fsync."""
        self._sync_timer: asyncio.TimerHandle | None = None

    def _new_segment(self, base: int) -> _Segment:
        segment = _Segment(self.directory / f"{base:020d}.log", base)
        fsync_dir(self.directory)  # the new file's name survives power loss too
        return segment

    @property
    def start_offset(self) -> int:
        return self._segments[0].base

    @property
    def end_offset(self) -> int:
        return self._segments[-1].end

    def append(self, key: bytes, value: bytes) -> int:
        """Append one record; returns its offset.

        Once this returns the record survives a process crash; it survives power
        loss once fsynced, within ``sync_interval_s`` (or at :meth:`sync`).
        """
        segment = self._segments[-1]
        if segment.size >= self.segment_bytes:
            self.sync()  # only the active segment is ever left unsynced
            segment = self._new_segment(segment.end)
            self._segments.append(segment)
        body = key + value
        frame = _HEADER.pack(len(key), len(value), zlib.crc32(body)) + body
        written = os.write(segment.fd, frame)
        if written != len(frame):
            raise LocalLogError(f"short write to {segment.path}")
        segment.positions.append(segment.size)
        segment.size += len(frame)
        self._unsynced = True
        if self._sync_timer is None:
            self._schedule_sync()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        return segment.end - 1

    def _schedule_sync(self) -> None:
        # A timer rather than "on the next append after the interval": the last records
        # before a quiet spell would otherwise stay in the page cache indefinitely.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (tools, tests): synced on commit, roll or close
        self._sync_timer = loop.call_later(self.sync_interval_s, self._sync_due)

    def _sync_due(self) -> None:
        self._sync_timer = None
        self.sync()

    def read(self, offset: int, max_records: int) -> list[Message]:
        """Records from ``offset`` on (at most ``max_records``)."""
        out: list[Message] = []
        for segment in self._segments:
            for o in range(max(offset, segment.base), segment.end):
                if len(out) >= max_records:
                    return out
                key, value = segment.read(o)
                out.append(Message(self.topic, 0, o, key, value))
        return out

    async def wait_beyond(self, offset: int, timeout_s: float) -> None:
        """Return once a record at ``offset`` exists, or after ``timeout_s``."""
        if self.end_offset > offset:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await asyncio.wait({waiter}, timeout=timeout_s)
        if not waiter.done():
            waiter.cancel()
            self._waiters.remove(waiter)

    # -- consumer groups -----------------------------------------------------------------

    def committed(self, group: str) -> int | None:
        path = self.directory / "groups" / f"{group}.json"
        try:
            return int(json.loads(path.read_text())["offset"])
        except FileNotFoundError:
            return None

    def commit(self, group: str, offset: int) -> None:
        """Store ``group``'s offset, durably once this returns."""
        # The records below the offset first: a group file that survived a power loss
        # without them would point past the log's end.
        self.sync()
        path = self.directory / "groups" / f"{group}.json"
        replace_durably(path, json.dumps({"offset": offset}).encode())
        self._drop_consumed()

    def _drop_consumed(self) -> None:
        """Delete segments every known group has committed past.

        Not made durable: a deleted segment that comes back after a power loss holds
        only records every group had committed past, and is deleted again.
        """
        groups = list((self.directory / "groups").glob("*.json"))
        if not groups:
            return
        low = min(self.committed(p.stem) or 0 for p in groups)
        while len(self._segments) > 1 and self._segments[1].base <= low:
            segment = self._segments.pop(0)
            segment.close()
            segment.path.unlink(missing_ok=True)
            log.info("%s: dropped segment %s (consumed by every group)", self.topic,
                     segment.path.name)

    def sync(self) -> None:
        """fsync the records appended so far (a no-op when there are none)."""
        if self._unsynced:
            os.fsync(self._segments[-1].fd)
            self._unsynced = False

    def close(self) -> None:
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        self.sync()
        for segment in self._segments:
            segment.close()


class LocalBus:
    """The topics of one ``callrec up`` data directory."""

    def __init__(self, root: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.root = root
        self.segment_bytes = segment_bytes
        self._logs: dict[str, LocalLog] = {}

    def log(self, topic: str) -> LocalLog:
        if topic not in self._logs:
            self._logs[topic] = LocalLog(self.root / topic, topic, self.segment_bytes)
        return self._logs[topic]

    def close(self) -> None:
        for topic_log in self._logs.values():
            topic_log.close()
        self._logs.clear()


class LocalPublisher:
    """Ingest's publisher on the local bus: a disk append is the acknowledgement.

    There is never anything in flight, so there is always room.
    """

    failures = 0

    def __init__(self, bus: LocalBus, topic: str) -> None:
        self._log = bus.log(topic)
        self._acked: asyncio.Future[None] | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._log.sync()

    async def probe(self, within_s: float) -> bool:
        return True

    def partition_for(self, key: bytes) -> int:
        return 0

    def has_room(self, waiting: bool = False) -> bool:
        return True

    def when_room(self, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(callback)

    def offer(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        self._log.append(key, value)
        if self._acked is None:
            # Acknowledged as written: one resolved future serves every record.
            self._acked = asyncio.get_running_loop().create_future()
            self._acked.set_result(None)
        return self._acked


class LocalProducer:
    """Worker output on the local bus (``send_and_wait`` like aiokafka's)."""

    def __init__(self, bus: LocalBus) -> None:
        self._bus = bus

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send_and_wait(self, topic: str, value: bytes | None = None,
                            key: bytes | None = None) -> int:
        """Append and fsync: returns once the record survives power loss, as aiokafka's
        returns once ``acks=all`` replicated it. One fsync per record is affordable here:
        workers send one record per recording, not per frame."""
        topic_log = self._bus.log(topic)
        offset = topic_log.append(key or b"", value or b"")
        topic_log.sync()
        return offset


class LocalConsumer:
    """A consumer group of one member on the local bus (like ``AIOKafkaConsumer``)."""

    def __init__(self, bus: LocalBus, group_id: str) -> None:
        self._bus = bus
        self.group_id = group_id
        self._log: LocalLog | None = None
        self._tp: TopicPartition | None = None
        self._listener: Any = None
        self._position = 0
        self._paused = False

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        [topic] = topics
        self._log = self._bus.log(topic)
        self._tp = TopicPartition(topic, 0)
        self._listener = listener

    async def start(self) -> None:
        assert self._log is not None and self._tp is not None, "subscribe first"
        committed = self._log.committed(self.group_id)
        if committed is not None and committed > self._log.end_offset:
            # Cannot happen while commit() syncs the log first, unless the disk lied
            # about an fsync: reading on from the offset would skip the records appended
            # next under the lost offsets.
            log.warning("%s: group %s committed offset %d is past the end of the log (%d): "
                        "its last records were lost; reading from the end", self._log.topic,
                        self.group_id, committed, self._log.end_offset)
            committed = self._log.end_offset
            self._log.commit(self.group_id, committed)
        self._position = max(committed or 0, self._log.start_offset)
        if committed is None:
            # Registers the group: segments it has not read are kept from now on.
            self._log.commit(self.group_id, self._position)
        if self._listener is not None:
            await self._listener.on_partitions_assigned({self._tp})

    async def stop(self) -> None:
        return None

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Message]]:
        assert self._log is not None and self._tp is not None
        if self._paused:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        await self._log.wait_beyond(self._position, timeout_ms / 1000)
        records = self._log.read(self._position, max_records or 500)
        if not records:
            return {}
        self._position = records[-1].offset + 1
        return {self._tp: records}

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        assert self._log is not None and self._tp is not None
        offset = self._position if offsets is None else offsets[self._tp]
        self._log.commit(self.group_id, offset)

    def assignment(self) -> set[TopicPartition]:
        return {self._tp} if self._tp is not None else set()

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused = True

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused = False

    def highwater(self, partition: TopicPartition) -> int | None:
        return self._log.end_offset if self._log is not None else None

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self._log is not None
        return dict.fromkeys(partitions, self._log.end_offset)
