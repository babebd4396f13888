"""``callrec analyzer``: consume ``callrec.recordings``, analyse each recording.

The consumer is any ``callrec.bus.Consumer``: aiokafka's (``from_settings``) or
the local bus of ``callrec up``; the analysis is ``analyze_recording`` either way.

The loop, and the order in which things become durable (DESIGN.md §4)::

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
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from callrec.bus import Consumer, Message
from schemas import envelope
from schemas.errors import EnvelopeError
from workers.analyzer import metrics
from workers.analyzer.analysis import (
    AnalysisConfig,
    AnalysisResult,
    AudioFormatError,
    RecordingNotFoundError,
    analyze_recording,
)
from workers.analyzer.transcribe import Transcriber, TranscriptionError
from workers.store import ObjectStore, StoreError

if TYPE_CHECKING:
    from callrec.settings import AnalyzerSettings

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
T = TypeVar("T")


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed analysis."""
    if isinstance(exc, RecordingNotFoundError):
        return "not_found"
    if isinstance(exc, AudioFormatError):
        return "bad_audio"
    if isinstance(exc, TranscriptionError):
        return "transcription"
    if isinstance(exc, StoreError | OSError):
        return "store"
    return "internal"


def is_retriable(exc: BaseException) -> bool:
    """Transient trouble worth retrying without limit (the archive is unreachable)."""
    if isinstance(exc, StoreError):
        return exc.retriable
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError)


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
    ) -> None:
        self.consumer = consumer
        self.store = store
        self.transcriber = transcriber
        self.config = config
        self.recordings_topic = recordings_topic
        self.max_attempts = max_attempts
        self.shutdown_grace_s = shutdown_grace_s
        self.poll_interval_s = poll_interval_s
        self._pending: collections.deque[tuple[TopicPartition, Message]] = collections.deque()
        self._next: dict[TopicPartition, int] = {}
        self.started = False
        self.analyzed = 0
        """Recordings this process analysed or skipped (tests and benchmarks wait on it)."""

    @classmethod
    def from_settings(
        cls, settings: AnalyzerSettings, store: ObjectStore, transcriber: Transcriber
    ) -> AnalyzerService:
        """A service with the settings' consumer; load the transcriber first (slow) with
        ``WhisperTranscriber(settings.transcriber_config())``."""
        return cls(
            consumer=AIOKafkaConsumer(
                group_id=settings.analyzer_group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=settings.analyzer_session_timeout_ms,
                heartbeat_interval_ms=max(1000, settings.analyzer_session_timeout_ms // 5),
                **settings.kafka_client_options(),
            ),
            store=store,
            transcriber=transcriber,
            config=settings.analysis_config(),
            recordings_topic=settings.kafka_recordings_topic,
            max_attempts=settings.analyzer_max_attempts,
            shutdown_grace_s=settings.analyzer_shutdown_grace_s,
        )

    @property
    def ready(self) -> bool:
        return self.started

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then hand partitions back cleanly."""
        self.consumer.subscribe([self.recordings_topic], listener=_Rebalance(self))
        await self.consumer.start()
        self.started = True
        try:
            while not stop.is_set():
                if not self._pending:
                    await self._fetch(timeout_ms=200)
                    self._report_lag()
                    continue
                tp, message = self._pending.popleft()
                metrics.QUEUE_DEPTH.set(len(self._pending))
                if tp not in self.consumer.assignment():
                    continue  # revoked meanwhile: the new owner reads it
                await self._handle(tp, message, stop)
        finally:
            self.started = False
            self._pending.clear()
            metrics.QUEUE_DEPTH.set(0)
            await self.consumer.stop()

    async def _fetch(self, timeout_ms: int) -> None:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=100)
        for tp, messages in batches.items():
            self._pending.extend((tp, m) for m in messages)
        metrics.QUEUE_DEPTH.set(len(self._pending))

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
                              "(%s[%d]@%d)", record.call_id, record.recording_id, attempts,
                              reason, exc, tp.topic, tp.partition, message.offset,
                              exc_info=reason == "internal")
                    break
                log.warning("call_id=%s: analysis failed (%s), retrying in %.0fs: %s",
                            record.call_id, reason, backoff, exc)
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
        self.consumer.pause(*self.consumer.assignment())
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
                                    "owner redoes it)", record.call_id, record.recording_id)
                        raise _Abandoned
                # Paused partitions return nothing, but polling keeps our group membership.
                await self._fetch(timeout_ms=0)
                self.consumer.pause(*self.consumer.assignment())
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
        log.info("call_id=%s analysed: %s, %d segments, %.1fs audio, RTF %s", record.call_id,
                 record.recording_id, result.segments, result.audio_seconds,
                 f"{rtf:.3f}" if rtf is not None else "-")

    def _set_paused_gauge(self, paused: bool) -> None:
        metrics.PAUSED.set(1 if paused else 0)

    # -- offsets -----------------------------------------------------------------------

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        self._next[tp] = offset
        if tp not in self.consumer.assignment():
            return  # revoked while we worked: the output is written, the owner skips it
        try:
            await self.consumer.commit({tp: offset})
        except KafkaError as exc:
            log.warning("commit of %s[%d]@%d failed (the event will be seen again, and "
                        "skipped): %r", tp.topic, tp.partition, offset, exc)

    def _report_lag(self) -> None:
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            done = self._next.get(tp)
            if end is not None and done is not None:
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, end - done))

    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._pending = collections.deque((tp, m) for tp, m in self._pending if tp not in revoked)
        for tp in revoked:
            self._next.pop(tp, None)
        metrics.QUEUE_DEPTH.set(len(self._pending))
        log.info("partitions %s revoked", sorted(tp.partition for tp in revoked))


class _Abandoned(Exception):
    """Stopping while an analysis runs past the grace period."""


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: AnalyzerService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Offsets are committed after each recording, so there is nothing to flush.
        self.service.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions %s assigned", sorted(tp.partition for tp in assigned))

