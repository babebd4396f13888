"""``callrec recorder``: consume ``callrec.media``, archive finished recordings.

The loop, and the order in which things become durable (docs/architecture.md, "Guarantees")::

    poll records ─▶ RecordingTracker (assemble, spill to disk)
                      │ a recording is over
                      ▼
    archive (thread) : WAV ─▶ calls Parquet row ─▶ manifest (last: "done" marker)
                      ▼
    publish RecordingFinished on callrec.recordings (acks=all)
                      ▼
    tracker.done(recording) ─▶ next commit may pass its first offset

Offsets are committed every ``recorder_commit_interval_s`` at
``RecordingTracker.safe_offsets()``: never past a record whose recording is not yet
durable. A crash between any two steps replays the recording; archiving skips
a recording whose manifest exists, so a replay writes nothing twice.

When the archive fails (S3 down, Kafka away, a local disk error), the recording is
retried with backoff and every partition is paused, so no more audio piles up on
local disk; nothing is committed past it. Partitions resume once the archive works
again. Any other error fails the same way on every attempt (a corrupt manifest in
the archive, spool files the disk lost after an error inside finalize, a bug): the
recording is then *failed* (workers.recorder.failures: ERROR log line, metric,
failure note in the archive) and done, so commits move past it. No archive task
ends without one of these outcomes (docs/operations.md, "A failed recording").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from infra.bus import Consumer, Producer
from infra.logsafe import safe
from infra.store import ObjectStore, StoreError
from schemas import envelope
from schemas.errors import EnvelopeError
from workers.recorder import failures, metrics
from workers.recorder.archive import ArchivedRecording, archive_recording
from workers.recorder.reassembly import RecordingAssembler
from workers.recorder.tracker import Assembler, Recording, RecordingTracker

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0


class RecorderService:
    """One recorder process: a member of the recorder consumer group."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: Producer,
        store: ObjectStore,
        media_topic: str,
        recordings_topic: str,
        spill_dir: Path,
        make_assembler: Callable[[str, Path], Assembler],
        grace_ms: int,
        idle_timeout_s: float,
        commit_interval_s: float = 1.0,
        max_parallel_archives: int = 4,
        shutdown_grace_s: float = 20.0,
        cut_open_on_restart: bool = False,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.store = store
        self.media_topic = media_topic
        self.recordings_topic = recordings_topic
        self.spill_dir = spill_dir
        self.commit_interval_s = commit_interval_s
        self.shutdown_grace_s = shutdown_grace_s
        self.tracker = RecordingTracker(
            lambda call_id: make_assembler(call_id, spill_dir),
            grace_ms=grace_ms,
            idle_timeout_s=idle_timeout_s,
        )
        self._archives: dict[Recording, asyncio.Task[None]] = {}
        self._archive_slots = asyncio.Semaphore(max_parallel_archives)
        self._failing: set[Recording] = set()
        self._committed: dict[int, int] = {}
        self.started = False
        self.cut_open_on_restart = cut_open_on_restart
        """Single-process mode: recordings left open by the previous process are ended as
        incomplete once the replay reached the log end seen at start-up."""
        self._restart_ends: dict[int, int] | None = None

    @staticmethod
    def assembler_factory(window_ms: int) -> Callable[[str, Path], Assembler]:
        """Assemblers that keep ``window_ms`` of audio per track in RAM for reordering."""

        def make_assembler(call_id: str, spill_dir: Path) -> RecordingAssembler:
            # One spool directory per recording: parts of one call never share files.
            return RecordingAssembler(call_id, spill_dir / uuid.uuid4().hex, window_ms=window_ms)

        return make_assembler

    @property
    def ready(self) -> bool:
        return self.started

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then hand partitions back cleanly."""
        if self.spill_dir.exists():
            # Spill files of a previous life belong to recordings that will be replayed.
            shutil.rmtree(self.spill_dir)
        self.spill_dir.mkdir(parents=True)
        await self.producer.start()
        self.consumer.subscribe([self.media_topic], listener=_RecorderRebalance(self))
        await self.consumer.start()
        self.started = True
        if self.cut_open_on_restart:
            self._restart_ends = {tp.partition: self.consumer.highwater(tp) or 0
                                  for tp in self.consumer.assignment()}
        last_commit = time.monotonic()
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=100, max_records=4000)
                now = time.monotonic()
                for tp, messages in batches.items():
                    for message in messages:
                        self._take(tp, message.offset, message.value, now)
                    metrics.RECORDS.inc(len(messages))
                self._cut_open_after_replay()
                if not self._failing:
                    # While paused we read nothing: our clock must not end calls meanwhile.
                    self._start_archives(now)
                if now - last_commit >= self.commit_interval_s:
                    await self.commit()
                    await self._report_lag()
                    last_commit = now
        finally:
            self.started = False
            await self._shutdown()

    async def _shutdown(self) -> None:
        pending = list(self._archives.values())
        if pending:
            log.info("waiting up to %.0fs for %d recordings being archived",
                     self.shutdown_grace_s, len(pending))
            await asyncio.wait(pending, timeout=self.shutdown_grace_s)
        for task in self._archives.values():
            task.cancel()
        try:
            await self.commit()
        except KafkaError as exc:
            log.warning("final commit failed (the next owner replays a little more): %r", exc)
        # Recordings still open are replayed by the next owner; this process lets go of them.
        for rec in self.tracker.forget_all():
            rec.assembler.discard()
        await self.consumer.stop()
        await self.producer.stop()

    # -- consuming ---------------------------------------------------------------------

    def _take(self, tp: TopicPartition, offset: int, value: bytes | None, now: float) -> None:
        try:
            record = envelope.decode(value or b"")
        except EnvelopeError as exc:
            metrics.BAD_RECORDS.inc()
            log.error(
                "%s[%d]@%d: skipping undecodable record: %s", tp.topic, tp.partition, offset, exc
            )
            self.tracker.add_nothing(tp.partition, offset)
            return
        late_before = self.tracker.late
        self.tracker.add(tp.partition, offset, record, now)
        if self.tracker.late != late_before:
            metrics.LATE_RECORDS.inc()
            log.warning(
                "call_id=%s: %s for a recording already archived, dropped (%s[%d]@%d)",
                safe(record.call_id),
                type(record).__name__,
                tp.topic,
                tp.partition,
                offset,
            )

    def _cut_open_after_replay(self) -> None:
        ends = self._restart_ends
        if ends is None or any(self.tracker.next_offset(p) < end for p, end in ends.items()):
            return
        self._restart_ends = None
        cut = self.tracker.cut_open("callrec restarted before the stream ended", ends)
        if cut:
            log.warning("%d recordings were open when the previous process ended: "
                        "archiving what was received as incomplete", cut)

    def _start_archives(self, now: float) -> None:
        for rec in self.tracker.ready(now):
            if not rec.known_streams:
                # Answered by the control plane, but no stream ever came: nothing to archive
                # (the control table says why the call is not recorded).
                log.info("call_id=%s: no stream reached the recorder, nothing archived",
                         rec.call_id)
                rec.assembler.discard()
                self.tracker.done(rec)
                continue
            self._archives[rec] = asyncio.get_running_loop().create_task(self._archive(rec))
        metrics.OPEN_CALLS.set(self.tracker.open_count)

    # -- archiving ---------------------------------------------------------------------

    async def _archive(self, rec: Recording) -> None:
        """Archive ``rec``; every way this ends leaves a defined state (module docstring):
        archived, retried until it is, or failed and written down; then commits move on."""
        backoff = 0.5
        archived: ArchivedRecording | None = None
        failure: Exception | None = None
        try:
            async with self._archive_slots:
                while True:
                    began = time.perf_counter()
                    try:
                        archived = await asyncio.to_thread(
                            archive_recording, self.store, rec, self.spill_dir
                        )
                        metrics.S3_LATENCY.observe(time.perf_counter() - began)
                        await self._publish(archived)
                        break
                    except (StoreError, KafkaError, OSError) as exc:
                        metrics.S3_ERRORS.labels(type(exc).__name__).inc()
                        self._set_failing(rec, True)
                        log.warning(
                            "call_id=%s: archive failed, retrying in %.1fs: %s",
                            safe(rec.call_id),
                            backoff,
                            safe(exc, 512),
                        )
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, MAX_BACKOFF_S)
                    except Exception as exc:
                        # The same records fail the same way again: retrying would hold
                        # the partition's commit forever.
                        failure = exc
                        break
            self._set_failing(rec, False)
            if archived is not None:
                self._count(archived)
            else:
                assert failure is not None
                await self._record_failure(rec, failure)
            self.tracker.done(rec)
        except Exception as exc:  # in our own book-keeping: still never pin the partition
            log.exception("call_id=%s: archive task failed: %s", safe(rec.call_id), safe(exc))
            self.tracker.done(rec)
        finally:
            self._archives.pop(rec, None)
            self._set_failing(rec, False)

    async def _record_failure(self, rec: Recording, exc: Exception) -> None:
        """A recording that cannot be archived: log, count, write the failure note."""
        metrics.RECORDINGS.labels("failed").inc()
        metrics.ARCHIVE_FAILURES.labels(type(exc).__name__).inc()
        log.error(
            "call_id=%s: recording FAILED, not archived (%s: %s); %s[%d] from offset %d "
            "holds its records until retention; commits move on",
            safe(rec.call_id), type(exc).__name__, safe(exc, 512), self.media_topic,
            rec.partition, rec.first_offset, exc_info=exc,
        )
        note = failures.describe(rec.call_id, self.media_topic, rec.partition,
                                 rec.first_offset, rec.known_streams, exc)
        try:
            stored = await asyncio.to_thread(failures.write_failure, self.store, note)
            log.error("call_id=%s: failure noted at %s", safe(rec.call_id),
                      self.store.uri(stored.key))
        except Exception as write_exc:
            log.error("call_id=%s: failure note not written either: %s", safe(rec.call_id),
                      safe(write_exc, 512))
        try:
            rec.assembler.discard()
        except OSError as discard_exc:
            log.warning("call_id=%s: spill files not deleted: %s", safe(rec.call_id),
                        discard_exc)

    async def _publish(self, archived: ArchivedRecording) -> None:
        await self.producer.send_and_wait(
            self.recordings_topic,
            envelope.encode(archived.event),
            key=archived.event.call_id.encode(),
        )

    def _count(self, archived: ArchivedRecording) -> None:
        event = archived.event
        if archived.already_archived:
            metrics.RECORDINGS.labels("already_archived").inc()
            return
        metrics.RECORDINGS.labels("complete" if event.complete else "incomplete").inc()
        metrics.GAPS.inc(archived.gaps)
        metrics.DUPLICATES.inc(archived.duplicates)
        metrics.OUT_OF_ORDER.inc(archived.out_of_order)
        if archived.last_close_ns:
            metrics.FINALIZE_LATENCY.observe(max(0.0, time.time() - archived.last_close_ns / 1e9))
        log.info(
            "call_id=%s archived: %s (%s)",
            safe(event.call_id),
            event.wav_uri,
            "complete" if event.complete else f"incomplete: {safe(event.reason, 512)}",
        )

    def _set_failing(self, rec: Recording, failing: bool) -> None:
        """Pause every partition while any archive fails; resume when none does."""
        was = bool(self._failing)
        (self._failing.add if failing else self._failing.discard)(rec)
        now = bool(self._failing)
        if now == was:
            return
        assigned = list(self.consumer.assignment())
        if now:
            log.warning("archive failing: pausing %d partitions", len(assigned))
            self.consumer.pause(*assigned)
        else:
            log.info("archive works again: resuming partitions")
            self.consumer.resume(*assigned)
            self.tracker.restart_idle_clocks(time.monotonic())
        metrics.PAUSED.set(1 if now else 0)

    # -- offsets -----------------------------------------------------------------------

    async def commit(self, partitions: set[int] | None = None) -> None:
        """Commit what ``RecordingTracker.safe_offsets`` allows, for owned partitions."""
        assigned = {tp.partition for tp in self.consumer.assignment()}
        offsets = {
            TopicPartition(self.media_topic, p): offset
            for p, offset in self.tracker.safe_offsets().items()
            if p in assigned
            and (partitions is None or p in partitions)
            and self._committed.get(p) != offset
        }
        if offsets:
            await self.consumer.commit(offsets)
            self._committed.update({tp.partition: o for tp, o in offsets.items()})
            for tp, o in offsets.items():
                metrics.COMMITTED_OFFSET.labels(str(tp.partition)).set(o)

    async def _report_lag(self) -> None:
        """Records between our position and the log end, per owned partition.

        The high-water mark of the last fetch is free but goes stale while the
        partitions are paused (no fetches): then the end offsets are asked for,
        so the lag keeps growing with what piles up during an archive outage.
        """
        assigned = self.consumer.assignment()
        ends: dict[TopicPartition, int | None] = {tp: self.consumer.highwater(tp)
                                                  for tp in assigned}
        if self._failing and assigned:
            try:
                async with asyncio.timeout(2):
                    ends.update(await self.consumer.end_offsets(list(assigned)))
            except (TimeoutError, KafkaError) as exc:
                log.warning("end offsets unavailable, lag from the last fetch: %r", exc)
        for tp, end in ends.items():
            read = self.tracker.next_offset(tp.partition)
            metrics.READ_OFFSET.labels(str(tp.partition)).set(read)
            if end is not None:
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, end - read))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in revoked}
        try:
            await self.commit(parts)
        except KafkaError as exc:
            log.warning("commit on revoke failed: %r", exc)
        for rec in self.tracker.forget_partitions(parts):
            task = self._archives.pop(rec, None)
            if task is not None:
                task.cancel()
            self._failing.discard(rec)
            rec.assembler.discard()
        for p in parts:
            self._committed.pop(p, None)
            # The new owner reports this partition's lag; a stale value here would be
            # summed with it (CallrecRecorderLag) and never change again.
            for gauge in (metrics.CONSUMER_LAG, metrics.COMMITTED_OFFSET, metrics.READ_OFFSET):
                with contextlib.suppress(KeyError):
                    gauge.remove(str(p))
        log.info("partitions %s revoked; their open recordings go to the next owner", sorted(parts))


class _RecorderRebalance(ConsumerRebalanceListener):
    def __init__(self, service: RecorderService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.service.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions %s assigned", sorted(tp.partition for tp in assigned))
