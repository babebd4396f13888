"""The local bus of ``callrec up``: a durable log with Kafka's offsets and commits."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from infra.bus.local import LocalBus, LocalConsumer, LocalLog, LocalProducer, LocalPublisher


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


# -- the Publisher and Consumer protocol members (infra/bus/__init__.py) ----------------


async def test_the_publisher_always_has_room_and_acknowledges_on_append(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path)
    publisher = LocalPublisher(bus, "media")
    await publisher.start()
    assert await publisher.probe(within_s=0.1)
    assert publisher.has_room() and publisher.has_room(waiting=True) and publisher.failures == 0
    assert publisher.partition_for(b"call-1") == publisher.partition_for(b"call-2") == 0
    acks = [publisher.offer(0, b"call-1", b"frame %d" % i) for i in range(3)]
    assert all(ack.done() and ack.result() is None for ack in acks), "acknowledged as written"
    assert [(r.offset, r.value) for r in bus.log("media").read(0, 10)] == [
        (0, b"frame 0"), (1, b"frame 1"), (2, b"frame 2")
    ]
    assert publisher.has_room() and publisher.failures == 0
    await publisher.stop()


async def test_when_room_calls_back_once_each_in_the_order_asked(tmp_path: Path) -> None:
    publisher = LocalPublisher(LocalBus(tmp_path), "media")
    called: list[str] = []
    both = asyncio.Event()

    def callback(name: str) -> Callable[[], None]:
        def call() -> None:
            called.append(name)
            if len(called) == 2:
                both.set()
        return call

    publisher.when_room(callback("first"))
    publisher.when_room(callback("second"))
    assert called == [], "called back from the event loop, not from inside when_room"
    await asyncio.wait_for(both.wait(), 5)
    # A repeated call would have been scheduled with the first ones, and so have run.
    assert called == ["first", "second"]


async def test_end_offsets_and_highwater_follow_the_log_while_paused(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path)
    producer = LocalProducer(bus)
    consumer = LocalConsumer(bus, "g")
    consumer.subscribe(["t"])
    await consumer.start()
    [tp] = consumer.assignment()
    assert await consumer.end_offsets([tp]) == {tp: 0} and consumer.highwater(tp) == 0
    consumer.pause(tp)
    for i in range(3):
        assert await producer.send_and_wait("t", b"%d" % i) == i
    assert await consumer.end_offsets([tp]) == {tp: 3}, "asked of the log, paused or not"
    assert consumer.highwater(tp) == 3
    assert await consumer.getmany(timeout_ms=10) == {}
    consumer.resume(tp)
    assert [m.value for m in (await consumer.getmany(timeout_ms=10))[tp]] == [b"0", b"1", b"2"]


# -- durability -------------------------------------------------------------------------


def test_a_failed_commit_keeps_the_previous_offset(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    log = LocalLog(tmp_path / "t", "t")
    for _ in range(3):
        log.append(b"k", b"v")
    log.commit("recorder", 1)

    def disk_error(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", disk_error)
    with pytest.raises(OSError, match="Input/output"):
        log.commit("recorder", 3)
    monkeypatch.undo()
    assert log.committed("recorder") == 1
    assert os.listdir(tmp_path / "t" / "groups") == ["recorder.json"], "no temp file left"


def test_a_temp_file_left_by_a_crash_mid_commit_is_ignored(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "t", "t")
    log.append(b"k", b"v")
    log.commit("recorder", 1)
    log.close()
    (tmp_path / "t" / "groups" / "recorder.json.tmp").write_text('{"offs')  # killed here
    again = LocalLog(tmp_path / "t", "t")
    assert again.committed("recorder") == 1
    again.commit("recorder", 1)
    assert os.listdir(tmp_path / "t" / "groups") == ["recorder.json"]


async def test_a_group_past_the_end_after_a_power_loss_reads_the_next_records(
    tmp_path: Path,
) -> None:
    log = LocalLog(tmp_path / "t", "t")
    for i in range(5):
        log.append(b"k", b"old %d" % i)
    log.commit("recorder", 5)
    log.close()
    # The disk kept the group file but not the last two records (it lied about an fsync).
    [segment] = (tmp_path / "t").glob("*.log")
    frame = 12 + 1 + 5
    segment.write_bytes(segment.read_bytes()[: 3 * frame])
    bus = LocalBus(tmp_path)
    consumer = LocalConsumer(bus, "recorder")
    consumer.subscribe(["t"])
    await consumer.start()
    assert await LocalProducer(bus).send_and_wait("t", b"new", key=b"k") == 3
    [tp] = consumer.assignment()
    assert [m.value for m in (await consumer.getmany(timeout_ms=10))[tp]] == [b"new"]
    assert bus.log("t").committed("recorder") == 3


class SyscallLog:
    """fsync and rename calls with the paths they act on, in order (Linux /proc)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def replace(src: str | Path, dst: str | Path) -> None:
            self.events.append(("rename", f"{Path(src).name} -> {Path(dst).name}"))
            real_replace(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)


def test_a_commit_flushes_the_records_then_the_offset_then_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What survives a power loss depends on the order of fsync and rename, which a test
    cannot cut the power on: so the order itself is checked, on a real file system."""
    topic = tmp_path.resolve() / "t"
    log = LocalLog(topic, "t")
    log.append(b"k", b"v")
    syscalls = SyscallLog(monkeypatch)
    log.commit("recorder", 1)
    assert syscalls.events == [
        ("fsync", str(topic / "00000000000000000000.log")),  # the records below the offset
        ("fsync", str(topic / "groups" / "recorder.json.tmp")),
        ("rename", "recorder.json.tmp -> recorder.json"),
        ("fsync", str(topic / "groups")),
    ]
    syscalls.events.clear()
    log.commit("recorder", 1)
    assert syscalls.events[0][1].endswith("recorder.json.tmp"), "nothing new to flush"
    assert log.committed("recorder") == 1


@pytest.fixture
def real_tmp(tmp_path: Path) -> Path:
    """tmp_path without symbolic links, as /proc/self/fd names files."""
    return tmp_path.resolve()


async def test_an_appended_record_is_flushed_within_the_sync_interval(
    real_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = real_tmp / "t"
    log = LocalLog(topic, "t", sync_interval_s=0.05)
    syscalls = SyscallLog(monkeypatch)
    log.append(b"k", b"the last record before a quiet spell")
    segment = ("fsync", str(topic / "00000000000000000000.log"))
    async with asyncio.timeout(5):
        while segment not in syscalls.events:
            await asyncio.sleep(0.01)
    assert syscalls.events == [segment], "one fsync, with no further append to trigger it"
    log.close()


async def test_send_and_wait_returns_once_the_record_is_flushed(
    real_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = LocalBus(real_tmp)
    bus.log("recordings")
    syscalls = SyscallLog(monkeypatch)
    assert await LocalProducer(bus).send_and_wait("recordings", b"finished", key=b"c1") == 0
    assert syscalls.events == [
        ("fsync", str(real_tmp / "recordings" / "00000000000000000000.log"))
    ]
    bus.close()
