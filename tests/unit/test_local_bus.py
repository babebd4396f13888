"""The local bus of ``callrec up``: a durable log with Kafka's offsets and commits."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiokafka import TopicPartition

from callrec.bus.local import LocalBus, LocalConsumer, LocalLog, LocalProducer, LocalPublisher


def test_records_come_back_in_order_with_offsets_after_reopening(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "t", "t")
    assert [log.append(b"k%d" % i, b"v" * i) for i in range(5)] == [0, 1, 2, 3, 4]
    log.close()
    again = LocalLog(tmp_path / "t", "t")
    records = again.read(2, 10)
    assert [(r.offset, r.key, r.value) for r in records] == [
        (2, b"k2", b"vv"), (3, b"k3", b"vvv"), (4, b"k4", b"vvvv")
    ]
    assert again.append(b"k5", b"") == 5


def test_a_torn_last_record_is_cut_and_the_rest_kept(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "t", "t")
    log.append(b"a", b"first")
    log.append(b"b", b"second")
    log.close()
    [segment] = (tmp_path / "t").glob("*.log")
    data = segment.read_bytes()
    segment.write_bytes(data[:-3])  # the process died in the middle of a write
    again = LocalLog(tmp_path / "t", "t")
    assert [r.value for r in again.read(0, 10)] == [b"first"]
    assert again.append(b"c", b"third") == 1


def test_a_corrupted_record_ends_the_log_there(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "t", "t")
    log.append(b"a", b"first")
    log.append(b"b", b"second")
    log.close()
    [segment] = (tmp_path / "t").glob("*.log")
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert [r.value for r in LocalLog(tmp_path / "t", "t").read(0, 10)] == [b"first"]


def test_segments_roll_and_are_dropped_once_every_group_committed_past(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "t", "t", segment_bytes=100)
    for i in range(10):
        log.append(b"k", bytes(40) + bytes([i]))
    segments = sorted((tmp_path / "t").glob("*.log"))
    assert len(segments) == 5
    log.commit("analyzer", 2)
    log.commit("recorder", 7)
    assert len(list((tmp_path / "t").glob("*.log"))) == 4, "analyzer still needs offset 2"
    log.commit("analyzer", 7)
    assert log.start_offset == 6
    assert [r.offset for r in log.read(0, 100)] == [6, 7, 8, 9]


async def test_a_starting_consumer_protects_what_it_has_not_read(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path, segment_bytes=50)
    producer = LocalProducer(bus)
    for _ in range(4):
        await producer.send_and_wait("t", bytes(40))
    slow = LocalConsumer(bus, "slow")
    slow.subscribe(["t"])
    await slow.start()
    bus.log("t").commit("fast", 4)
    assert bus.log("t").start_offset == 0


async def test_consumer_resumes_from_its_committed_offset(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path)
    publisher = LocalPublisher(bus, "media")
    for i in range(3):
        done = publisher.offer(0, b"c", b"%d" % i)
        assert done.done()
    consumer = LocalConsumer(bus, "g")
    consumer.subscribe(["media"])
    await consumer.start()
    batch = await consumer.getmany(timeout_ms=10)
    tp = TopicPartition("media", 0)
    assert [m.value for m in batch[tp]] == [b"0", b"1", b"2"]
    await consumer.commit({tp: 2})
    bus.close()

    bus = LocalBus(tmp_path)
    consumer = LocalConsumer(bus, "g")
    consumer.subscribe(["media"])
    await consumer.start()
    assert [m.value for m in (await consumer.getmany(timeout_ms=10))[tp]] == [b"2"]
    assert consumer.highwater(tp) == 3


async def test_getmany_wakes_up_when_a_record_is_appended(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path)
    consumer = LocalConsumer(bus, "g")
    consumer.subscribe(["recordings"])
    await consumer.start()
    waiting = asyncio.create_task(consumer.getmany(timeout_ms=5000))
    await asyncio.sleep(0.05)
    await LocalProducer(bus).send_and_wait("recordings", b"event", key=b"c1")
    batch = await asyncio.wait_for(waiting, 1)
    assert [m.value for m in batch[TopicPartition("recordings", 0)]] == [b"event"]


async def test_a_paused_consumer_reads_nothing(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path)
    await LocalProducer(bus).send_and_wait("t", b"x")
    consumer = LocalConsumer(bus, "g")
    consumer.subscribe(["t"])
    await consumer.start()
    consumer.pause(*consumer.assignment())
    assert await consumer.getmany(timeout_ms=10) == {}
    consumer.resume(*consumer.assignment())
    assert await consumer.getmany(timeout_ms=10)


def test_the_log_is_plain_files_in_the_data_dir(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "media", "media")
    log.append(b"k", b"v")
    log.commit("recorder", 1)
    assert sorted(os.listdir(tmp_path / "media")) == ["00000000000000000000.log", "groups"]
    assert (tmp_path / "media" / "groups" / "recorder.json").read_text() == '{"offset": 1}'
