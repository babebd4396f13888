"""``callrec analyzer``: consume ``callrec.recordings``, analyse each recording.

The consumer is any ``infra.bus.Consumer``: aiokafka's (built by ``callrec.wiring``) or
the local bus of ``callrec up``; the analysis is ``analyze_recording`` either way.

The loop, and the order in which things become durable (docs/architecture.md, "Guarantees")::

    poll RecordingFinished ─▶ pause partitions ─▶ analyze_recording (worker thread):
                                                    segments Parquet ─▶ metrics Parquet
                                                    ─▶ transcript.json (last: "done")
                              ─▶ commit offset + 1 ─▶ resume partitions

One recording at a time per process: transcription is CPU-bound and the model
already uses ``analyzer_cpu_threads`` cores; scale out with more processes in
the consumer group (one per partition at most). While a recording is analysed
the partitions stay paused but the consumer keeps polling, so a long call
never exceeds ``max.poll.interval.ms`` and costs the process its partitions.

An offset is committed only after the objects it caused are written. A crash or
rebalance in between replays the event; ``analyze_recording`` then finds the
transcript with the current fingerprint and skips (or, if the transcript was not
yet written, writes the same bytes again): no duplicate rows, ever.

Failures (``callrec_analyzer_failures_total{reason}``):

- ``store`` (S3 down, retriable): retried with backoff for as long as it takes,
  partitions paused, nothing committed past the event.
- ``not_found``, ``bad_audio``, ``transcription``, ``internal``: retried
  ``max_attempts`` times, then logged as an error, counted as
  ``recordings_total{outcome="failed"}`` and committed past, so one poisoned
  recording does not stop the partition. ``callrec analyzer --backfill`` picks
  such recordings up again later (they have no transcript).
- ``bad_record``: an undecodable event is skipped at once.

Consumer lag (``callrec_analyzer_consumer_lag_records{partition}``), reported
every ``lag_interval_s`` whatever the loop is doing, for each partition this
process owns: from our position (the event being analysed, else the oldest one
fetched and queued, else the one after the last fetched) to the log end. While
events are being worked through the partitions are paused and not fetched, so
the log end is asked of the broker (``Consumer.end_offsets``); when idle the
high-water mark of the fetches is fresh. A partition's label is removed when it
is revoked: its new owner reports it, and the alert sums over pods. A partition
assigned while a recording is analysed is fetched once (its events queue behind
the batch) so that its position, and so its lag, is known.

SIGTERM: stop taking events, let the recording in progress finish for up to
``shutdown_grace_s``, commit it, leave the group. An analysis still running
then is abandoned (its thread is a daemon); the next owner redoes it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from infra.bus import Consumer, Message
from infra.logsafe import safe
from infra.store import ObjectStore
from schemas import envelope
from schemas.errors import EnvelopeError
from workers.analyzer import metrics
from workers.analyzer.analysis import AnalysisConfig, AnalysisResult, analyze_recording
from workers.analyzer.errors import (
    failure_reason,
    is_retriable,
)
from workers.analyzer.transcribe import Transcriber

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
LAG_INTERVAL_S = 1.0
"""How often the consumer lag is reported."""
END_OFFSETS_TIMEOUT_S = 2.0
"""How long the lag report waits for the broker's end offsets before using the last fetch's."""
T = TypeVar("T")


async def run_in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a daemon thread: unlike ``asyncio.to_thread``, a process told to stop
    never waits at exit for an analysis it abandoned."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, False, exc)
        else:
            loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=target, name="callrec-analysis", daemon=True).start()
    return await future


class AnalyzerService:
    """One analyzer process: a member of the analyzer consumer group."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        store: ObjectStore,
        transcriber: Transcriber,
        config: AnalysisConfig,
        recordings_topic: str,
        max_attempts: int = 3,
        shutdown_grace_s: float = 30.0,
        poll_interval_s: float = 1.0,
        lag_interval_s: float = LAG_INTERVAL_S,
    ) -> None:
        self.consumer = consumer
        self.store = store
        self.transcriber = transcriber
        self.config = config
        self.recordings_topic = recordings_topic
        self.max_attempts = max_attempts
        self.shutdown_grace_s = shutdown_grace_s
        self.poll_interval_s = poll_interval_s
        self.lag_interval_s = lag_interval_s
        self._pending: collections.deque[tuple[TopicPartition, Message]] = collections.deque()
        self._owned: set[TopicPartition] = set()
        """Partitions assigned to us and not revoked since (from the rebalance listener)."""
        self._read: dict[TopicPartition, int] = {}
        """Per owned partition, the offset after the last event fetched."""
        self._current: tuple[TopicPartition, int] | None = None
        """Partition and offset of the event being handled."""
        self._lag_partitions: set[int] = set()
        """Partitions whose lag label this process has set."""
        self._end_offsets_failing = False
        self.started = False
        self.analyzed = 0
        """Recordings this process analysed or skipped (tests and benchmarks wait on it)."""

    @property
    def ready(self) -> bool:
        return self.started

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then hand partitions back cleanly."""
        self.consumer.subscribe([self.recordings_topic], listener=_AnalyzerRebalance(self))
        await self.consumer.start()
        self.started = True
        lag_reports = asyncio.create_task(self._report_lag_periodically(),
                                          name="callrec-analyzer-lag")
        try:
            while not stop.is_set():
                if not self._pending:
                    await self._fetch(timeout_ms=200)
                    continue
                tp, message = self._pending.popleft()
                metrics.QUEUE_DEPTH.set(len(self._pending))
                if tp not in self.consumer.assignment():
                    continue  # revoked meanwhile: the new owner reads it
                self._current = (tp, message.offset)
                try:
                    await self._handle(tp, message, stop)
                finally:
                    self._current = None
        finally:
            lag_reports.cancel()
            await asyncio.gather(lag_reports, return_exceptions=True)
            self.started = False
            self._pending.clear()
            self._owned.clear()
            self._read.clear()
            for partition in self._lag_partitions:
                metrics.CONSUMER_LAG.remove(str(partition))
            self._lag_partitions.clear()
            metrics.QUEUE_DEPTH.set(0)
            await self.consumer.stop()

    async def _fetch(self, timeout_ms: int) -> None:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=100)
        for tp, messages in batches.items():
            if messages:
                self._pending.extend((tp, m) for m in messages)
                self._read[tp] = messages[-1].offset + 1
        metrics.QUEUE_DEPTH.set(len(self._pending))

    def _pause_known(self) -> None:
        """Pause every owned partition we have a position for. One assigned meanwhile is
        left to be fetched once: its events queue behind the batch (at most one fetch's
        worth), and its position, so its lag, becomes known."""
        known = [tp for tp in self.consumer.assignment() if tp in self._read]
        if known:
            self.consumer.pause(*known)

    # -- one event ---------------------------------------------------------------------

    async def _handle(self, tp: TopicPartition, message: Message, stop: asyncio.Event) -> None:
        try:
            record = envelope.decode(message.value or b"")
            if not isinstance(record, envelope.RecordingFinished):
                raise EnvelopeError(f"{type(record).__name__} record on the recordings topic")
        except EnvelopeError as exc:
            metrics.FAILURES.labels("bad_record").inc()
            log.error("%s[%d]@%d: skipping record: %s", tp.topic, tp.partition,
                      message.offset, exc)
            await self._commit(tp, message.offset + 1)
            return
        attempts = 0
        backoff = 1.0
        while True:
            began = time.perf_counter()
            try:
                result = await self._analyze(record, stop)
            except _Abandoned:
                return
            except Exception as exc:
                reason = failure_reason(exc)
                metrics.FAILURES.labels(reason).inc()
                retriable = is_retriable(exc)
                if not retriable:
                    attempts += 1
                if not retriable and attempts >= self.max_attempts:
                    metrics.RECORDINGS.labels("failed").inc()
                    log.error("call_id=%s: analysis of %s failed %d times (%s), giving up: %s "
                              "(%s[%d]@%d)", safe(record.call_id), safe(record.recording_id),
                              attempts, reason, safe(exc, 512), tp.topic, tp.partition,
                              message.offset, exc_info=reason == "internal")
                    break
                log.warning("call_id=%s: analysis failed (%s), retrying in %.0fs: %s",
                            safe(record.call_id), reason, backoff, safe(exc, 512))
                self._set_paused_gauge(retriable)
                try:
                    await asyncio.wait_for(stop.wait(), backoff)
                    return  # stopping: not committed, the next owner retries
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            self._set_paused_gauge(False)
            self._count(record, result, time.perf_counter() - began)
            break
        await self._commit(tp, message.offset + 1)

    async def _analyze(self, record: envelope.RecordingFinished,
                       stop: asyncio.Event) -> AnalysisResult:
        """analyze_recording in a thread, partitions paused, the consumer kept polled."""
        self._pause_known()
        work = asyncio.ensure_future(run_in_daemon_thread(
            lambda: analyze_recording(self.store, record, self.transcriber, self.config)
        ))
        deadline: float | None = None
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=self.poll_interval_s)
                if work.done():
                    break
                if stop.is_set():
                    deadline = deadline or time.monotonic() + self.shutdown_grace_s
                    if time.monotonic() >= deadline:
                        log.warning("call_id=%s: stopping; analysis of %s abandoned (the next "
                                    "owner redoes it)", safe(record.call_id),
                                    safe(record.recording_id))
                        raise _Abandoned
                # Paused partitions return nothing, but polling keeps our group membership.
                await self._fetch(timeout_ms=0)
                self._pause_known()
            return work.result()
        finally:
            # Everything we own now, including partitions assigned while we worked.
            self.consumer.resume(*self.consumer.assignment())

    def _count(self, record: envelope.RecordingFinished, result: AnalysisResult,
               seconds: float) -> None:
        self.analyzed += 1
        if result.skipped:
            metrics.RECORDINGS.labels("skipped").inc()
            return
        metrics.RECORDINGS.labels("analyzed").inc()
        metrics.ANALYSIS_SECONDS.observe(seconds)
        metrics.AUDIO_SECONDS.inc(result.audio_seconds)
        rtf = result.real_time_factor
        if rtf is not None:
            metrics.REAL_TIME_FACTOR.observe(rtf)
        log.info("call_id=%s analysed: %s, %d segments, %.1fs audio, RTF %s",
                 safe(record.call_id), safe(record.recording_id), result.segments,
                 result.audio_seconds,
                 f"{rtf:.3f}" if rtf is not None else "-")

    def _set_paused_gauge(self, paused: bool) -> None:
        metrics.PAUSED.set(1 if paused else 0)

    # -- offsets -----------------------------------------------------------------------

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.consumer.assignment():
            return  # revoked while we worked: the output is written, the owner skips it
        try:
            await self.consumer.commit({tp: offset})
        except KafkaError as exc:
            log.warning("commit of %s[%d]@%d failed (the event will be seen again, and "
                        "skipped): %r", tp.topic, tp.partition, offset, exc)

    # -- lag ---------------------------------------------------------------------------

    def position(self, tp: TopicPartition) -> int | None:
        """The offset of the first event of ``tp`` this process has not finished: the one
        being analysed, else the oldest one queued, else the one after the last fetched.
        None before the first fetch from ``tp`` since it was assigned."""
        if self._current is not None and self._current[0] == tp:
            return self._current[1]
        return next((m.offset for t, m in self._pending if t == tp), self._read.get(tp))

    async def _report_lag_periodically(self) -> None:
        while True:
            await self.report_lag()
            await asyncio.sleep(self.lag_interval_s)

    async def report_lag(self) -> None:
        """Set ``callrec_analyzer_consumer_lag_records`` for each owned partition whose
        position is known, and remove the labels of the others."""
        asked: dict[TopicPartition, int] = {}
        owned = self._owned & self.consumer.assignment()
        if owned and (self._current is not None or self._pending):
            # Busy: the partitions are paused, and a paused partition's high-water mark is
            # that of the last fetch, before the backlog piled up. Ask the broker.
            try:
                async with asyncio.timeout(END_OFFSETS_TIMEOUT_S):
                    asked = await self.consumer.end_offsets(sorted(owned))
            except (TimeoutError, KafkaError) as exc:
                if not self._end_offsets_failing:
                    log.warning("end offsets of %s unavailable, lag from the last fetch: %r",
                                self.recordings_topic, exc)
                self._end_offsets_failing = True
            else:
                self._end_offsets_failing = False
        reported: set[int] = set()
        for tp in self._owned & self.consumer.assignment():  # again: a rebalance may have run
            end = asked.get(tp)
            if end is None:
                end = self.consumer.highwater(tp)
            read = self.position(tp)
            if end is not None and read is not None:
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, end - read))
                reported.add(tp.partition)
        for partition in self._lag_partitions - reported:
            metrics.CONSUMER_LAG.remove(str(partition))
        self._lag_partitions = reported

    # -- rebalancing -------------------------------------------------------------------

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owned |= assigned
        log.info("partitions %s assigned", sorted(tp.partition for tp in assigned))

    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._pending = collections.deque((tp, m) for tp, m in self._pending if tp not in revoked)
        self._owned -= revoked
        for tp in revoked:
            self._read.pop(tp, None)
            # The new owner reports this partition's lag; a value left here would be summed
            # with it (CallrecAnalyzerLag sums over pods) and never change again.
            metrics.CONSUMER_LAG.remove(str(tp.partition))
            self._lag_partitions.discard(tp.partition)
        metrics.QUEUE_DEPTH.set(len(self._pending))
        log.info("partitions %s revoked", sorted(tp.partition for tp in revoked))


class _Abandoned(Exception):
    """Stopping while an analysis runs past the grace period."""


class _AnalyzerRebalance(ConsumerRebalanceListener):
    def __init__(self, service: AnalyzerService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Offsets are committed after each recording, so there is nothing to flush.
        self.service.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.service.on_assigned(assigned)

