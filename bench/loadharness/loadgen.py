"""Load process: real-time two-track Wavix calls, as Wavix's media gateway sends them.

``python -m bench.loadharness.loadgen CONFIG.json``. The config lists the calls
of this process (index, call id, ingest URL, start offset), the frames per call
and the wall-clock start; the process writes one JSON report per call to
``config["result"]`` and prints a status line (JSON) every half second on
stdout: frames owed (due but not yet sent: backpressure), calls active, media
messages sent.

Each call is one ``both`` connection: ``connected``, ``start`` (sequence 1), then
every 20 ms the inbound and the outbound frame of that tick (sequence numbers in
sending order, ``chunk`` = tick, ``timestamp`` = (chunk - 1) * 20), then ``stop``
and a normal close; exactly what ``callrec simulate --layout both`` sends, from
:mod:`schemas.wavix`; media frames go out framed beforehand (``wire.ws_frame``, one
``write`` per tick), the rest through websockets' protocol. Frame *k* is due 20 ms x *k*
after ``start`` (when it is complete). One loop paces every call of the process: a
connection whose socket is not writable (TCP backpressure from ingest) owes its frames
and sends them, in order, when writable again. Lateness = send time - due time of the oldest
frame sent. A connection lost or closed by the server ends that call; the report
says how many frames it had sent.

Bounded: the process gives up ``config["deadline_s"]`` after the start (aborting
what is still open) and reports what happened.
"""

from __future__ import annotations

import array
import asyncio
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.harness.procfs import self_cpu_s
from bench.harness.procs import raise_nofile
from bench.harness.wire import Connection, open_connection, ws_frame
from bench.loadharness import calls as callaudio
from callrec.simulator import iso_time
from schemas import wavix

TICK_S = 0.004
"""How often the pacing loop wakes: frames go out at most this late when the CPU is free."""
MAX_TICKS_PER_WRITE = 50
"""A connection owing more frames (after backpressure) sends them 1 s of audio at a time."""
FRAME_S = callaudio.FRAME_MS / 1000


@dataclass
class CallReport:
    """What the load generator did for one call."""

    call_id: str
    index: int
    ingest: int
    """Which ingest process the call was sent to (index in the run's list)."""
    stream_id: str = ""
    status: int | None = None
    """HTTP status of the upgrade (101 = open); None when no answer came."""
    frames: int = 0
    """Frames planned per track."""
    frames_sent: int = 0
    """Frames sent per track (both tracks always advance together)."""
    stopped: bool = False
    """Whether ``stop`` was sent."""
    close_code: int | None = None
    """Close code the server sent; None when no close frame came."""
    close_reason: str = ""
    outcome: str = "not started"
    """``completed``, ``lost`` (socket died without close), ``closed <code>`` (server closed
    early), ``rejected <status>``, ``connect failed``, ``deadline``."""
    started: float = 0.0
    """Unix time ``start`` was sent."""
    ended: float = 0.0
    """Unix time ``stop`` was sent, or the connection was found lost/closed."""
    late_max_ms: float = 0.0


@dataclass
class _Call:
    report: CallReport
    url: str
    offset_s: float
    conn: Connection | None = None
    t0: float = 0.0
    next_due: float = 0.0
    """Loop time the next frame is due (checked before anything else, for speed)."""
    seq: int = 1
    started_wall: float = 0.0
    closing: asyncio.Task[None] | None = None
    _time: tuple[int, str] = (-1, "")

    def event_time(self, tick: int) -> str:
        if self._time[0] != tick:
            self._time = (tick, iso_time(self.started_wall + tick * FRAME_S))
        return self._time[1]

    def media(self, tick: int, track: wavix.Track) -> bytes:
        self.seq += 1
        r = self.report
        return wavix.encode(wavix.Media(
            call_id=r.call_id, stream_id=r.stream_id, sequence_number=self.seq,
            event_time=self.event_time(tick),
            media=wavix.MediaBody(payload=callaudio.frame(r.index, track, tick), chunk=tick,
                                  timestamp=(tick - 1) * callaudio.FRAME_MS, track=track),
        ))


class LoadGenerator:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        frames = int(cfg["frames"])
        self.calls = [
            _Call(CallReport(c["call_id"], int(c["index"]), int(c["ingest"]), frames=frames),
                  c["url"], float(c["offset_s"]))
            for c in cfg["calls"]
        ]
        self.active: list[_Call] = []
        self.late = array.array("f")
        self.sent_messages = 0
        self.pending_opens = len(self.calls)

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        base = loop.time() + (float(self.cfg["start_at"]) - time.time())
        deadline = base + float(self.cfg["deadline_s"])
        cpu0 = self_cpu_s()
        openers = [loop.create_task(self._open(c, base)) for c in self.calls]
        next_status = loop.time()
        while self.pending_opens or self.active:
            now = loop.time()
            if now > deadline:
                break
            for call in list(self.active):
                if now >= call.next_due:
                    self._step(call, now)
            if now >= next_status:
                self._status()
                next_status = now + 0.5
            await asyncio.sleep(TICK_S)
        for task in openers:
            task.cancel()
        closing = [c.closing for c in self.calls if c.closing is not None]
        if closing:
            await asyncio.wait(closing, timeout=max(1.0, deadline + 30 - loop.time()))
        for call in self.calls:
            self._settle(call)
        self._status()
        late = sorted(self.late)
        return {
            "cpu_s": self_cpu_s() - cpu0,
            "messages": self.sent_messages,
            "late_p50_ms": _q(late, 0.5), "late_p99_ms": _q(late, 0.99),
            "late_max_ms": late[-1] if late else 0.0,
            "calls": [asdict(c.report) for c in self.calls],
        }

    async def _open(self, call: _Call, base: float) -> None:
        loop = asyncio.get_running_loop()
        report = call.report
        try:
            await asyncio.sleep(max(0.0, base + call.offset_s - loop.time()))
            try:
                conn, status = await open_connection(call.url)
            except (OSError, TimeoutError) as exc:
                report.outcome = f"connect failed: {type(exc).__name__}"
                report.ended = time.time()
                return
            report.status = status
            if status != 101:
                report.outcome = f"rejected {status}"
                report.ended = time.time()
                return
            call.conn = conn
            report.stream_id = str(uuid.uuid4())
            call.started_wall = time.time()
            conn.send_text(wavix.encode(wavix.Connected(event_time=call.event_time(0))))
            conn.send_text(wavix.encode(wavix.Start(
                call_id=report.call_id, stream_id=report.stream_id, stream_type="oneway",
                channel="both", sequence_number=1, event_time=call.event_time(0),
            )))
            call.t0 = loop.time()
            call.next_due = call.t0 + FRAME_S
            report.started = time.time()
            report.outcome = "streaming"
            self.active.append(call)
        finally:
            self.pending_opens -= 1

    def _step(self, call: _Call, now: float) -> None:
        conn, report = call.conn, call.report
        assert conn is not None
        if not conn.open:
            self._end(call, "lost" if conn.close_code is None else f"closed {conn.close_code}")
            return
        if conn.paused:
            return  # next_due stays in the past: checked again every tick until writable
        due = min(report.frames, int((now - call.t0) / FRAME_S))
        sent = report.frames_sent
        if due > sent:
            late_ms = (now - (call.t0 + (sent + 1) * FRAME_S)) * 1000
            self.late.append(late_ms)
            report.late_max_ms = max(report.late_max_ms, late_ms)
            upto = min(due, sent + MAX_TICKS_PER_WRITE)
            frames = []
            for tick in range(sent + 1, upto + 1):
                frames.append(ws_frame(call.media(tick, "inbound")))
                frames.append(ws_frame(call.media(tick, "outbound")))
            conn.write(b"".join(frames))
            report.frames_sent = upto
            self.sent_messages += 2 * (upto - sent)
            call.next_due = call.t0 + (report.frames_sent + 1) * FRAME_S
        if report.frames_sent == report.frames and not conn.paused:
            call.seq += 1
            conn.send_text(wavix.encode(wavix.Stop(
                call_id=report.call_id, stream_id=report.stream_id, sequence_number=call.seq,
                event_time=call.event_time(report.frames),
            )))
            report.stopped = True
            self._end(call, "completed")

    def _end(self, call: _Call, outcome: str) -> None:
        report = call.report
        report.outcome = outcome
        report.ended = time.time()
        self.active.remove(call)
        assert call.conn is not None
        call.closing = asyncio.get_running_loop().create_task(call.conn.close())

    def _settle(self, call: _Call) -> None:
        report, conn = call.report, call.conn
        if report.outcome == "streaming":
            report.outcome = "deadline"
            report.ended = time.time()
        if conn is not None:
            if not conn.lost.done():
                conn.abort()
            report.close_code, report.close_reason = conn.close_code, conn.close_reason
            if report.outcome == "completed" and conn.close_code not in (1000, None):
                report.outcome = f"completed, closed {conn.close_code}"

    def _status(self) -> None:
        now = asyncio.get_running_loop().time()
        owed = sum(
            max(0, min(c.report.frames, int((now - c.t0) / FRAME_S)) - c.report.frames_sent)
            for c in self.active
        )
        print(json.dumps({"t": time.time(), "owed": owed, "active": len(self.active),
                          "sent": self.sent_messages}), flush=True)


def _q(ordered: Any, q: float) -> float:
    if not len(ordered):
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def main(argv: list[str]) -> int:
    cfg = json.loads(Path(argv[0]).read_text())
    raise_nofile()
    callaudio.source()  # decode before the clock starts
    result = asyncio.run(LoadGenerator(cfg).run())
    Path(cfg["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
