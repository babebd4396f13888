"""Many simulated calls at once, at most so many at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from callrec.simulator.calls import SimulatedCall
from callrec.simulator.errors import CallsFailed, SimulatorError
from callrec.simulator.faults import NO_FAULTS, Faults
from callrec.simulator.reports import CallReport
from callrec.simulator.stream import stream_call
from schemas.codecs import DEFAULT_CODEC, Codec

log = logging.getLogger(__name__)


async def run_calls(
    url: str,
    calls: Sequence[SimulatedCall],
    *,
    codec: Codec = DEFAULT_CODEC,
    realtime: bool = True,
    faults: Faults = NO_FAULTS,
    token: str | None = None,
    concurrency: int | None = None,
    on_call_done: Callable[[str], None] | None = None,
) -> list[CallReport]:
    """Stream ``calls``, at most ``concurrency`` at a time (default: all at once).

    Returns one report per call, in the order of ``calls``. A call that cannot be
    streamed does not stop the others: once all are done, :class:`CallsFailed` is
    raised, carrying each failure (``StreamRejected`` with its HTTP status, or
    ``ConnectFailed``) and the reports of the calls that were streamed.
    ``on_call_done(call_id)`` is called as each call ends, for progress display.
    """
    limit = asyncio.Semaphore(concurrency or max(1, len(calls)))
    errors: dict[str, SimulatorError] = {}

    async def one(call: SimulatedCall) -> CallReport | None:
        async with limit:
            try:
                return await stream_call(
                    url, call, codec=codec, realtime=realtime, faults=faults, token=token
                )
            except SimulatorError as exc:
                log.info("call_id=%s: %s", call.call_id, exc)
                errors[call.call_id] = exc
                return None
            finally:
                if on_call_done is not None:
                    on_call_done(call.call_id)

    results = await asyncio.gather(*(one(call) for call in calls))
    reports = [r for r in results if r is not None]
    if errors:
        raise CallsFailed(errors, reports)
    return reports
