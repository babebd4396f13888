"""The controller: a consumer group over ``callrec.calls`` that records calls by rule.

Per call, in event order (calls in parallel)::

    answered ─▶ rules ─▶ (confirm: GET /v1/calls/{id}) ─▶ CallLifecycle(answered) on
                callrec.media ∥ ControlState(starting, epoch+1) on callrec.control
             ─▶ POST /v1/calls/{id}/streams (stream_url = ingest + per-call token)
             ─▶ ControlState(started, stream_id) | ControlState(failed, reason)
    pause    ─▶ CallLifecycle(paused) ∥ ControlState(paused) ─▶ DELETE .../streams/{sid}
    resume   ─▶ CallLifecycle(resumed) ∥ ControlState(starting) ─▶ POST ─▶ started|failed
    completed, busy, cancelled, rejected, post_call
             ─▶ CallLifecycle(completed) (if streaming) ─▶ ControlState(completed)
             ─▶ row in the ``control`` table

Idempotence (docs/control.md, "Idempotence"). A call's events share one partition,
so one controller at a time handles a call. Every state record carries the offset of
the event it applies; a new owner reads ``callrec.control`` to its end, then skips
events at or before a call's applied offset. The intent (``starting``) is durable
before the POST: an event found replayed in ``starting`` means a controller died
between the POST and its answer. Wavix lists no streams, so whether that POST reached
Wavix cannot be known: the stream is *not* started again (never two streams) and the
call is marked ``stream_start_unknown`` (recorded if the POST had gone through).
Repeated webhooks (same event twice) find the call already decided and do nothing.

Commit rule: a partition's committed offset never passes an event still being handled
(the lowest in flight), so a crash replays every event whose effects are not durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiokafka import ConsumerRebalanceListener, TopicPartition

from control import metrics
from control.errors import WavixError, WavixRejected
from control.rules import RuleSet
from control.state import StateLoader
from control.table import write_row
from control.wavixapi import WavixClient
from infra.bus import Consumer, Producer
from infra.logsafe import safe
from infra.store import ObjectStore
from schemas import envelope, streamtoken
from schemas.callevents import CallEvent
from schemas.errors import EnvelopeError

log = logging.getLogger(__name__)

STREAMING = ("started", "paused")


class Controller:
    """One controller process: a member of the controller consumer group."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: Producer,
        load_states: StateLoader,
        store: ObjectStore,
        wavix: WavixClient,
        rules: RuleSet,
        calls_topic: str,
        control_topic: str,
        media_topic: str,
        stream_url: str,
        token_keys: dict[str, bytes],
        stream_type: str = "oneway",
        confirm_events: bool = False,
        commit_interval_s: float = 0.5,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.load_states = load_states
        self.store = store
        self.wavix = wavix
        self.rules = rules
        self.calls_topic = calls_topic
        self.control_topic = control_topic
        self.media_topic = media_topic
        self.stream_url = stream_url
        self.token_keys = token_keys
        self.stream_type = stream_type
        self.confirm_events = confirm_events
        self.commit_interval_s = commit_interval_s
        self.states: dict[str, envelope.ControlState] = {}
        self._tails: dict[str, asyncio.Task[None]] = {}
        """call id -> the task handling its latest event (each awaits the one before)."""
        self._in_flight: dict[int, set[int]] = {}
        """partition -> offsets of events being handled."""
        self._next: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self.started = False
        self.on_stream_request: Callable[[str], None] | None = None
        """Test and benchmark hook: called with the call id as a start request is sent."""

    @property
    def ready(self) -> bool:
        return self.started

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.producer.start()
        self.consumer.subscribe([self.calls_topic], listener=_Rebalance(self))
        await self.consumer.start()
        if not self.states:
            self.states = await self.load_states()
        self.started = True
        last_commit = time.monotonic()
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=100, max_records=1000)
                for tp, messages in batches.items():
                    for message in messages:
                        self._take(tp.partition, message.offset, message.value)
                now = time.monotonic()
                if now - last_commit >= self.commit_interval_s:
                    await self.commit()
                    last_commit = now
                metrics.OPEN_CALLS.set(len(self._tails))
        finally:
            self.started = False
            await self._settle(set(self._in_flight))
            try:
                await self.commit()
            except Exception as exc:  # the next owner replays a little more
                log.warning("final commit failed: %r", exc)
            await self.consumer.stop()
            await self.producer.stop()

    async def _settle(self, partitions: set[int]) -> None:
        """Wait for the events of ``partitions`` being handled (revocation, shutdown)."""
        tasks = list(self._tails.values())
        if tasks and partitions:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def commit(self, partitions: set[int] | None = None) -> None:
        assigned = {tp.partition for tp in self.consumer.assignment()}
        offsets: dict[TopicPartition, int] = {}
        for p, nxt in self._next.items():
            if p not in assigned or (partitions is not None and p not in partitions):
                continue
            flight = self._in_flight.get(p)
            safe = min(flight) if flight else nxt
            if self._committed.get(p) != safe:
                offsets[TopicPartition(self.calls_topic, p)] = safe
        if offsets:
            await self.consumer.commit(offsets)
            self._committed.update({tp.partition: o for tp, o in offsets.items()})

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        # Another controller may have handled these calls until now: its state is in the
        # compacted topic, read to its end before any of their events is handled.
        self.states = await self.load_states()
        log.info(
            "partitions %s assigned; state of %d calls loaded",
            sorted(tp.partition for tp in assigned),
            len(self.states),
        )

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in revoked}
        await self._settle(parts)
        try:
            await self.commit(parts)
        except Exception as exc:
            log.warning("commit on revoke failed: %r", exc)
        for p in parts:
            self._committed.pop(p, None)
            self._next.pop(p, None)
            self._in_flight.pop(p, None)

    # -- dispatch ------------------------------------------------------------------------

    def _take(self, partition: int, offset: int, value: bytes | None) -> None:
        self._next[partition] = offset + 1
        try:
            record = envelope.decode(value or b"")
        except EnvelopeError as exc:
            log.error(
                "%s[%d]@%d: skipping undecodable record: %s",
                self.calls_topic,
                partition,
                offset,
                exc,
            )
            return
        if not isinstance(record, envelope.CallEventReceived):
            return
        call_id = record.event.call_id
        self._in_flight.setdefault(partition, set()).add(offset)
        before = self._tails.get(call_id)
        task = asyncio.get_running_loop().create_task(
            self._handle_after(before, record, partition, offset)
        )
        self._tails[call_id] = task

    async def _handle_after(
        self,
        before: asyncio.Task[None] | None,
        record: envelope.CallEventReceived,
        partition: int,
        offset: int,
    ) -> None:
        call_id = record.event.call_id
        try:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            await self.handle(record, offset)
        except Exception:
            # Never silently: the event stays uncommitted only until the next one, so
            # log loudly; the state says what was done.
            log.exception(
                "call_id=%r: event %s at %s[%d]@%d failed",
                call_id,
                record.event.event_type,
                self.calls_topic,
                partition,
                offset,
            )
        finally:
            self._in_flight.get(partition, set()).discard(offset)
            if self._tails.get(call_id) is asyncio.current_task():
                del self._tails[call_id]

    # -- one event -----------------------------------------------------------------------

    async def handle(self, record: envelope.CallEventReceived, offset: int) -> None:
        event = record.event
        state = self.states.get(event.call_id)
        metrics.EVENTS.labels(event.event_type if event.known else "other").inc()
        if state is not None and offset <= state.offset:
            if state.offset == offset and state.phase == "starting":
                await self._start_unknown(state)
            elif state.offset == offset and state.phase == "paused":
                await self._stop_stream(state)  # DELETE again: harmless if it went through
            return  # already applied
        state = self._merge(state, event, record, offset)
        if record.source == "api":
            if event.event_type == "pause":
                await self._pause(state, offset)
            else:
                await self._resume(state, offset)
            return
        match event.event_type:
            case "answered":
                await self._answered(state, event, record, offset)
            case t if event.final:
                await self._final(state, event, offset, t)
            case _:
                await self._save(state)

    def _merge(
        self,
        state: envelope.ControlState | None,
        event: CallEvent,
        record: envelope.CallEventReceived,
        offset: int,
    ) -> envelope.ControlState:
        """The call's state with what this event adds to its metadata."""
        if state is None:
            state = envelope.ControlState(
                call_id=event.call_id,
                phase="seen",
                updated_ns=record.received_ns,
                first_seen_ns=record.received_ns,
                first_event_time=event.event_time,
            )
        changes: dict[str, Any] = {"offset": offset, "updated_ns": time.time_ns()}
        if record.source == "wavix":
            changes["last_event"] = event.event_type
            for name in ("from_number", "to_number", "direction", "tag", "disposition"):
                value = getattr(event, name)
                if value is not None:
                    changes[name] = value
            answered = event.call_answered or (
                event.event_time if event.event_type == "answered" else None
            )
            if answered and state.answered_time is None:
                changes["answered_time"] = answered
            completed = event.call_completed or (
                event.event_time if event.event_type == "completed" else None
            )
            if completed and state.completed_time is None:
                changes["completed_time"] = completed
        return msgspec.structs.replace(state, **changes)

    async def _answered(
        self,
        state: envelope.ControlState,
        event: CallEvent,
        record: envelope.CallEventReceived,
        offset: int,
    ) -> None:
        if state.phase != "seen":
            await self._save(state)  # a repeated webhook: decided already
            return
        decision = self.rules.decide(_with_state(event, state))
        state = msgspec.structs.replace(state, rule=decision.rule, channel=decision.channel)
        if not decision.record:
            await self._not_recorded(state, decision.reason or "no_rule_matched")
            return
        if self.confirm_events and not await self._confirmed(state):
            await self._not_recorded(state, "unconfirmed")
            return
        lifecycle = self._lifecycle(state, "answered", event.event_time)
        await self._start(state, lifecycle, record.received_ns)

    async def _start(
        self, state: envelope.ControlState, lifecycle: envelope.CallLifecycle, received_ns: int
    ) -> None:
        """Intent ─▶ POST ─▶ outcome (the module docstring's sequence)."""
        state = msgspec.structs.replace(
            state, phase="starting", epoch=state.epoch + 1, stream_id=None, reason=None
        )
        await asyncio.gather(self._publish_lifecycle(lifecycle), self._save(state))
        url = self._stream_url(state.call_id)
        metrics.START_LATENCY.observe(max(0.0, (time.time_ns() - received_ns) / 1e9))
        if self.on_stream_request is not None:
            self.on_stream_request(state.call_id)
        try:
            stream_id = await self.wavix.start_stream(
                state.call_id, url, channel=state.channel or "both", stream_type=self.stream_type
            )
        except WavixError as exc:
            result = "rejected" if isinstance(exc, WavixRejected) else "unavailable"
            metrics.STREAM_STARTS.labels(result).inc()
            log.error("call_id=%s: stream start failed (%s): %s", safe(state.call_id), result, exc)
            await self._not_recorded(state, f"stream_start_failed: {exc}", phase="failed")
            return
        metrics.STREAM_STARTS.labels("started").inc()
        if state.epoch == 1:
            metrics.CALLS.labels("recorded").inc()
        log.info(
            "call_id=%s: recording, stream %s (rule %s, channel %s)",
            safe(state.call_id),
            stream_id,
            state.rule,
            state.channel,
        )
        started = msgspec.structs.replace(state, phase="started", stream_id=stream_id)
        await self._save(started)
        # The row exists from the decision on: a call whose end never reaches callrec is
        # still in the table (rewritten, same key, when it ends).
        await asyncio.to_thread(write_row, self.store, started)

    async def _start_unknown(self, state: envelope.ControlState) -> None:
        metrics.STREAM_STARTS.labels("unknown").inc()
        log.warning(
            "call_id=%s: a controller stopped between a stream start request and its "
            "answer; not started again (Wavix lists no streams)",
            safe(state.call_id),
        )
        await self._not_recorded(state, "stream_start_unknown", phase="started")

    async def _not_recorded(
        self, state: envelope.ControlState, reason: str, phase: envelope.ControlPhase = "skipped"
    ) -> None:
        metrics.CALLS.labels("not_recorded").inc()
        metrics.NOT_RECORDED.labels(reason.split(":")[0]).inc()
        log.info("call_id=%s: not recorded: %s", safe(state.call_id), reason)
        decided = msgspec.structs.replace(state, phase=phase, reason=reason)
        await self._save(decided)
        await asyncio.to_thread(write_row, self.store, decided)

    async def _final(
        self, state: envelope.ControlState, event: CallEvent, offset: int, event_type: str
    ) -> None:
        if state.phase in STREAMING or (state.phase == "starting"):
            await self._publish_lifecycle(self._lifecycle(state, "completed", event.event_time))
        if state.phase == "seen":
            metrics.CALLS.labels("not_recorded").inc()
            metrics.NOT_RECORDED.labels("not_answered").inc()
            state = msgspec.structs.replace(state, reason=f"not_answered: {event_type}")
        if state.phase != "completed":
            state = msgspec.structs.replace(state, phase="completed")
        await self._save(state)
        await asyncio.to_thread(write_row, self.store, state)

    async def _pause(self, state: envelope.ControlState, offset: int) -> None:
        if state.phase != "started" or state.stream_id is None:
            metrics.PAUSES.labels("pause", "not_streaming").inc()
            log.warning(
                "call_id=%s: pause asked while %s: nothing to pause",
                safe(state.call_id), state.phase,
            )
            await self._save(state)
            return
        state = msgspec.structs.replace(state, phase="paused", pauses=state.pauses + 1)
        lifecycle = msgspec.structs.replace(
            self._lifecycle(state, "paused", None), stream_id=state.stream_id
        )
        await asyncio.gather(self._publish_lifecycle(lifecycle), self._save(state))
        await self._stop_stream(state)

    async def _stop_stream(self, state: envelope.ControlState) -> None:
        assert state.stream_id is not None
        try:
            await self.wavix.stop_stream(state.call_id, state.stream_id)
            metrics.PAUSES.labels("pause", "stopped").inc()
            log.info("call_id=%s: paused, stream %s stopped", safe(state.call_id), state.stream_id)
        except WavixError as exc:
            metrics.PAUSES.labels("pause", "failed").inc()
            log.error(
                "call_id=%s: pause: stream %s not stopped: %s",
                safe(state.call_id), state.stream_id, exc,
            )

    async def _resume(self, state: envelope.ControlState, offset: int) -> None:
        if state.phase != "paused":
            metrics.PAUSES.labels("resume", "not_paused").inc()
            log.warning(
                "call_id=%s: resume asked while %s: nothing to resume",
                safe(state.call_id), state.phase,
            )
            await self._save(state)
            return
        metrics.PAUSES.labels("resume", "started").inc()
        await self._start(state, self._lifecycle(state, "resumed", None), time.time_ns())

    # -- helpers -------------------------------------------------------------------------

    async def _confirmed(self, state: envelope.ControlState) -> bool:
        try:
            await self.wavix.get_call(state.call_id)
        except WavixError as exc:
            log.warning("call_id=%s: not confirmed by Wavix: %s", safe(state.call_id), exc)
            return False
        return True

    def _stream_url(self, call_id: str) -> str:
        if not self.token_keys:
            return self.stream_url
        key_id, key = next(iter(self.token_keys.items()))
        token = streamtoken.mint(call_id, key_id, key)
        sep = "&" if "?" in self.stream_url else "?"
        return f"{self.stream_url}{sep}token={token}"

    def _lifecycle(
        self, state: envelope.ControlState, event: envelope.LifecycleEvent, event_time: str | None
    ) -> envelope.CallLifecycle:
        return envelope.CallLifecycle(
            call_id=state.call_id,
            event=event,
            received_ns=time.time_ns(),
            event_time=event_time,
            from_number=state.from_number,
            to_number=state.to_number,
            direction=state.direction,
            tag=state.tag,
            answered_time=state.answered_time,
            completed_time=state.completed_time,
            disposition=state.disposition,
        )

    async def _publish_lifecycle(self, record: envelope.CallLifecycle) -> None:
        await self.producer.send_and_wait(
            self.media_topic, envelope.encode(record), key=record.call_id.encode()
        )

    async def _save(self, state: envelope.ControlState) -> None:
        self.states[state.call_id] = state
        await self.producer.send_and_wait(
            self.control_topic, envelope.encode(state), key=state.call_id.encode()
        )


def _with_state(event: CallEvent, state: envelope.ControlState) -> CallEvent:
    """The answered event with the metadata earlier events gave (rules see all of it)."""
    return msgspec.structs.replace(
        event,
        from_number=event.from_number or state.from_number,
        to_number=event.to_number or state.to_number,
        direction=event.direction or state.direction,
        tag=event.tag or state.tag,
    )


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.controller.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.controller.on_assigned(assigned)
