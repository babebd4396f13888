"""Ingest benchmark (DESIGN.md §7): ``callrec ingest`` against a bare websockets server.

One command::

    .venv/bin/python -m bench.ingest_bench [--quick] [--write-docs]

It installs/starts a real single-node Kafka (deploy/local/stack.py, temp dir, free
ports) and runs four stages, every server and the load generator in its own process:

1. **Throughput.** The same load (C connections x M media messages, as fast as
   TCP takes them) against (a) a bare ``websockets`` drain server that only
   counts messages and (b) ``callrec ingest`` publishing to Kafka (``acks=all``).
   (a) msg/s = messages the server counted / (last receive - first send);
   (b) msg/s = records Kafka acknowledged / (last ack - first send), the last ack
   being the broker's ``LogAppendTime`` of the newest record (the topic is made
   with ``message.timestamp.type=LogAppendTime``). Target: (b)/(a) >= 0.6.
2. **Latency at half load.** (b) at 50 % of its measured msg/s, paced, for a
   while; p99 of ``callrec_ingest_produce_latency_seconds`` interpolated like
   PromQL ``histogram_quantile``. Target <= 25 ms. Cross-check: per-record
   ``LogAppendTime - received_ns`` read back from Kafka.
3. **RSS per open stream.** VmRSS of a fresh ingest with 0 streams, then with
   K/2 and K streams open (each sent ``connected`` + ``start`` and one media a
   second). Target (RSS_K - RSS_0) / K <= 64 KiB.
4. **Real-time two-track calls.** N calls, one ``both`` connection each sending
   an inbound and an outbound 20 ms frame every 20 ms (100 msg/s per call), on a
   real-time schedule; N ramps up. A step passes when every chunk sent is in
   Kafka (read back and checked per call/track/chunk), every stream was closed
   with ``stop``, the sender never fell more than 200 ms behind its schedule,
   ingest read every frame within 200 ms of its due time and the produce p99 is
   <= 25 ms. Target: the largest passing N >= 400.

The load generator writes pre-framed WebSocket messages on raw asyncio
transports (the JSON of each message is a template with the base64 payload
computed once; client frames use an all-zero mask key, which a server unmasks
like any other), so it costs as little CPU as possible: it shares the machine's
cores with the server under test and Kafka.

Hidden sub-commands run the other processes: ``_drain`` (the bare server) and
``_loadgen`` (the load generator, config as JSON in argv, result as JSON on the
last stdout line).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import datetime
import json
import math
import os
import platform
import queue
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import replace_section

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"

TOKEN = "bench-token"
STREAM_PATH = f"/v1/stream?token={TOKEN}"
EVENT_TIME = "2025-01-01T00:00:00.000Z"
FRAME_MS = 20
FRAME_BYTES = 960
"""20 ms of L16/24000, as Wavix sends it."""
MAX_MESSAGE_BYTES = 65536
"""CALLREC_INGEST_MAX_MESSAGE_BYTES default, used by the drain server too."""

TARGET_RATIO = 0.6
TARGET_P99_MS = 25.0
TARGET_RSS_KIB = 64.0
TARGET_CALLS = 400
MAX_LATE_MS = 200.0
"""A real-time step fails if the sender, or ingest reading, is this far behind schedule."""
MAX_E2E_P99_MS = 500.0
"""... or if the p99 frame reaches Kafka later than this after its due time (it keeps up)."""

RERUN_OTHER_PCT = 25.0
"""A real-time step that fails while other processes used more CPU (% of a core) is re-run."""
PARTITIONS = 4
INGEST_CMD = ""
"""``--ingest-cmd``: run this instead of ``.venv/bin/callrec ingest`` (A/B a variant)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ======================================================================================
# Wire: pre-encoded Wavix messages in client WebSocket frames
# ======================================================================================

_ZERO_MASK = b"\x00\x00\x00\x00"
_SEQ, _CHUNK, _TS = 7777777771, 7777777772, 7777777773
_HEADERS: dict[int, bytes] = {}


def frame_header(length: int, opcode: int = 0x1) -> bytes:
    """FIN + opcode, MASK bit, length, and an all-zero masking key."""
    if opcode == 0x1 and length in _HEADERS:
        return _HEADERS[length]
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    head += _ZERO_MASK
    if opcode == 0x1:
        _HEADERS[length] = head
    return head


def ws_frame(data: bytes, opcode: int = 0x1) -> bytes:
    return frame_header(len(data), opcode) + data


def _audio_frame() -> bytes:
    """960 bytes: 20 ms of a 440 Hz tone, PCM16 little-endian, 24 kHz."""
    samples = array.array(
        "h", (int(8000 * math.sin(2 * math.pi * 440 * i / 24000)) for i in range(480))
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


class StreamMessages:
    """Every message one Wavix stream sends, framed; media from a template."""

    def __init__(self, call_id: str, stream_id: str, channel: str) -> None:
        from schemas import wavix

        self.call_id = call_id
        self.stream_id = stream_id
        self.tracks: tuple[str, ...] = (
            ("inbound", "outbound") if channel == "both" else (channel,)
        )
        self.opening = ws_frame(wavix.encode(wavix.Connected(event_time=EVENT_TIME))) + ws_frame(
            wavix.encode(
                wavix.Start(
                    call_id=call_id, stream_id=stream_id, stream_type="oneway",
                    channel=channel, sequence_number=1, event_time=EVENT_TIME,  # type: ignore[arg-type]
                )
            )
        )
        payload = _audio_frame()
        self._templates: dict[str, tuple[list[bytes], list[int], int]] = {}
        for track in self.tracks:
            raw = wavix.encode(
                wavix.Media(
                    call_id=call_id, stream_id=stream_id, sequence_number=_SEQ,
                    event_time=EVENT_TIME,
                    media=wavix.MediaBody(
                        payload=payload, chunk=_CHUNK, timestamp=_TS,
                        track=track if channel == "both" else None,  # type: ignore[arg-type]
                    ),
                )
            )
            pieces = re.split(rb"(7777777771|7777777772|7777777773)", raw)
            static = pieces[0::2]
            order = [{_SEQ: 0, _CHUNK: 1, _TS: 2}[int(m)] for m in pieces[1::2]]
            self._templates[track] = (static, order, sum(map(len, static)))

    def media(self, out: list[bytes], track: str, seq: int, chunk: int) -> None:
        """Append the parts of one framed media message to ``out``."""
        static, order, fixed = self._templates[track]
        values = (b"%d" % seq, b"%d" % chunk, b"%d" % ((chunk - 1) * FRAME_MS))
        out.append(frame_header(fixed + len(values[0]) + len(values[1]) + len(values[2])))
        out.append(static[0])
        for i, which in enumerate(order):
            out.append(values[which])
            out.append(static[i + 1])

    def stop(self, seq: int) -> bytes:
        from schemas import wavix

        return ws_frame(
            wavix.encode(
                wavix.Stop(call_id=self.call_id, stream_id=self.stream_id,
                           sequence_number=seq, event_time=EVENT_TIME)
            )
        )


class WSClient(asyncio.Protocol):
    """A minimal WebSocket client: handshake, answer pings, close; writes pre-framed bytes."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.paused = False
        self._writable: asyncio.Future[None] | None = None
        self.close_code: int | None = None
        self.close_sent = False

    @property
    def alive(self) -> bool:
        return not self.lost.done() and self.close_code is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.opened.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            parts = status.split(b" ", 2)
            if len(parts) < 2 or parts[1] != b"101":
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self.opened.set_result(None)
        while len(buf) >= 2:
            n, pos = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, pos = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, pos = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < pos + n:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            if opcode == 0x9:  # ping
                self.write(ws_frame(payload, 0xA))
            elif opcode == 0x8:  # close
                self.close_code = int.from_bytes(payload[:2], "big") if n >= 2 else 1005
                if not self.close_sent:
                    self.write(ws_frame(payload[:2], 0x8))
                    self.close_sent = True

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.paused = False
        if not self.lost.done():
            self.lost.set_result(None)
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("connection lost in handshake"))
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        while self.paused and not self.lost.done():
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable

    async def close(self, within_s: float = 120) -> None:
        if not self.close_sent and not self.lost.done():
            self.write(ws_frame((1000).to_bytes(2, "big"), 0x8))
            self.close_sent = True
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), within_s)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()


async def ws_connect(port: int, path: str = STREAM_PATH) -> WSClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(WSClient, "127.0.0.1", port)
    assert client.transport is not None
    key = base64.b64encode(os.urandom(16)).decode()
    client.transport.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await asyncio.wait_for(client.opened, 60)
    return client


class Stream:
    """One simulated Wavix stream on one connection."""

    def __init__(self, client: WSClient, call_id: str, channel: str) -> None:
        self.client = client
        self.msgs = StreamMessages(call_id, uuid.uuid4().hex, channel)
        self.seq = 1  # start is 1
        self.chunk = 0  # per track; every track advances together
        self.sent = 0  # media messages written

    def opening(self) -> bytes:
        return self.msgs.opening

    def ticks(self, count: int) -> bytes:
        """``count`` frame times: one media message per track each."""
        out: list[bytes] = []
        msgs = self.msgs
        for _ in range(count):
            self.chunk += 1
            for track in msgs.tracks:
                self.seq += 1
                msgs.media(out, track, self.seq, self.chunk)
        self.sent += count * len(msgs.tracks)
        return b"".join(out)

    def ending(self) -> bytes:
        self.seq += 1
        return self.msgs.stop(self.seq)


# ======================================================================================
# Load generator process
# ======================================================================================


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def _open_streams(
    port: int, count: int, channel: str, prefix: str, start: int = 0
) -> list[Stream]:
    streams: list[Stream] = []
    for first in range(start, start + count, 50):  # below the listen backlog
        batch = range(first, min(first + 50, start + count))
        clients = await asyncio.gather(*(ws_connect(port) for _ in batch))
        for i, client in zip(batch, clients, strict=True):
            client.transport.set_write_buffer_limits(high=256 * 1024)  # type: ignore[union-attr]
            streams.append(Stream(client, f"{prefix}-{i:05d}", channel))
    return streams


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _close_all(streams: Sequence[Stream]) -> dict[str, int]:
    for s in streams:
        if s.client.alive:
            s.client.write(s.ending())
    await asyncio.gather(*(s.client.close() for s in streams))
    codes: dict[str, int] = {}
    for s in streams:
        key = str(s.client.close_code)
        codes[key] = codes.get(key, 0) + 1
    return codes


async def load_flood(cfg: dict[str, Any]) -> dict[str, Any]:
    """``conns`` connections each send connected, start, ``media`` media and stop at once."""
    streams = await _open_streams(cfg["port"], cfg["conns"], "inbound", cfg["prefix"])
    per_write = 32

    async def one(s: Stream) -> None:
        client = s.client
        client.write(s.opening())
        left = cfg["media"]
        while left > 0 and client.alive:
            n = min(per_write, left)
            client.write(s.ticks(n))
            left -= n
            if client.paused:
                await client.drain()
            else:
                await asyncio.sleep(0)
        client.write(s.ending())
        await client.close()

    cpu0, t0 = _cpu_s(), time.time()
    await asyncio.gather(*(one(s) for s in streams))
    t1 = time.time()
    codes: dict[str, int] = {}
    for s in streams:
        codes[str(s.client.close_code)] = codes.get(str(s.client.close_code), 0) + 1
    return {
        "t0": t0, "t1": t1, "cpu_s": _cpu_s() - cpu0,
        "messages": sum(s.sent + 3 for s in streams),
        "media": sum(s.sent for s in streams), "close_codes": codes,
    }


async def load_paced(cfg: dict[str, Any]) -> dict[str, Any]:
    """Each connection sends one tick (a frame per track) every ``interval_s``, phases spread.

    A connection whose socket is not writable (TCP backpressure) owes its ticks and
    sends them once writable; lateness = send time - due time of the oldest frame sent.
    """
    loop = asyncio.get_running_loop()
    n, interval, cycles = cfg["conns"], cfg["interval_s"], cfg["cycles"]
    streams = await _open_streams(cfg["port"], n, cfg["channel"], cfg["prefix"])
    for s in streams:
        s.client.write(s.opening())
        s.client.transport.set_write_buffer_limits(high=64 * 1024)  # type: ignore[union-attr]
    await asyncio.sleep(0.5)  # let the start records go first
    phases = [i * interval / n for i in range(n)]
    done = [0] * n  # ticks sent per connection
    late = array.array("f")  # ms, one sample per write
    cpu0 = _cpu_s()
    t0 = loop.time() + 0.05
    t0_wall = time.time() + (t0 - loop.time())
    pos = cycle = 0
    while cycle < cycles:
        due = t0 + cycle * interval + phases[pos]
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
            continue
        s = streams[pos]
        if s.client.alive and not s.client.paused:
            owed = cycle + 1 - done[pos]
            late.append((now - (t0 + done[pos] * interval + phases[pos])) * 1000)
            s.client.write(s.ticks(owed))
            done[pos] = cycle + 1
        pos += 1
        if pos == n:
            pos = 0
            cycle += 1
    # Pay what paused connections still owe.
    for i, s in enumerate(streams):
        if done[i] < cycles and s.client.alive:
            await s.client.drain()
            late.append((loop.time() - (t0 + done[i] * interval + phases[i])) * 1000)
            s.client.write(s.ticks(cycles - done[i]))
            done[i] = cycles
    t1_wall = time.time()
    cpu = _cpu_s() - cpu0
    codes = await _close_all(streams)
    ordered = sorted(late)
    return {
        "t0": t0_wall, "t1": t1_wall, "cpu_s": cpu, "interval_s": interval, "conns": n,
        "phases": phases, "call_ids": [s.msgs.call_id for s in streams],
        "sent_ticks": [s.chunk for s in streams], "tracks": len(streams[0].msgs.tracks),
        "media": sum(s.sent for s in streams),
        "late_max_ms": ordered[-1] if ordered else 0.0,
        "late_p99_ms": ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0,
        "close_codes": codes,
    }


async def load_hold(cfg: dict[str, Any]) -> dict[str, Any]:
    """Open streams on command (stdin ``open N``), each sending one media a second."""
    loop = asyncio.get_running_loop()
    streams: list[Stream] = []
    stopping = asyncio.Event()
    tickers: list[asyncio.Task[None]] = []

    async def tick(s: Stream, phase: float) -> None:
        await asyncio.sleep(phase)
        while not stopping.is_set() and s.client.alive:
            s.client.write(s.ticks(1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1.0)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            break
        target = int(line[1])
        new = await _open_streams(
            cfg["port"], target - len(streams), "inbound", cfg["prefix"], len(streams)
        )
        for i, s in enumerate(new):
            s.client.write(s.opening())
            tickers.append(loop.create_task(tick(s, (i % 100) / 100)))
        streams += new
        print(json.dumps({"open": len(streams)}), flush=True)
    stopping.set()
    await asyncio.gather(*tickers)
    codes = await _close_all(streams)
    return {"streams": len(streams), "close_codes": codes}


def loadgen_main(cfg: dict[str, Any]) -> None:
    _raise_nofile()
    mode = cfg["mode"]
    runner = {"flood": load_flood, "paced": load_paced, "hold": load_hold}[mode]
    result = asyncio.run(runner(cfg))
    print(json.dumps(result), flush=True)


# ======================================================================================
# Bare drain server process
# ======================================================================================


def drain_main() -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.datastructures import Headers
    from websockets.http11 import Request, Response

    _raise_nofile()
    stats = {"messages": 0, "last": 0.0}

    async def handler(ws: ServerConnection) -> None:
        count = 0
        try:
            async for _ in ws:
                count += 1
        finally:
            stats["messages"] += count
            stats["last"] = max(stats["last"], time.time())

    def route(ws: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/stats"):
            body = json.dumps(stats).encode()
            return Response(200, "OK", Headers([("Content-Length", str(len(body)))]), body)
        return None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with serve(
            handler, "127.0.0.1", 0, process_request=route,
            # As ingest (ingest/server.py) where it matters for receiving.
            max_size=MAX_MESSAGE_BYTES, max_queue=(4, 1), compression=None,
            ping_interval=None, server_header=None,
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"drain listening on port {port}", flush=True)
            await stop.wait()

    asyncio.run(main())


# ======================================================================================
# Orchestration helpers
# ======================================================================================


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Child:
    """A child process whose stdout lines are read by a thread."""

    def __init__(self, cmd: list[str], *, env: dict[str, str] | None = None,
                 stderr_path: Path | None = None, stdin: bool = False) -> None:
        self.cmd = cmd
        self._err = stderr_path.open("ab") if stderr_path else None
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._err or None,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=env, cwd=REPO, preexec_fn=_raise_nofile,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def readline(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no output from {self.cmd[-1][:60]} in {timeout}s") from None
        if line is None:
            raise RuntimeError(f"{' '.join(self.cmd)[:120]} exited with {self.proc.wait()}")
        return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        """The JSON object on the last stdout line, once the process exited."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"load generator still running after {timeout}s") from None
            if line is None:
                break
            last = line
        code = self.proc.wait()
        if code != 0 or last is None:
            raise RuntimeError(f"load generator exited with {code}")
        result: dict[str, Any] = json.loads(last)
        return result

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._err:
            self._err.close()


class Children:
    """Every child process started, so that ``finally`` can stop them all."""

    def __init__(self) -> None:
        self.live: list[Child] = []

    def start(self, *args: Any, **kwargs: Any) -> Child:
        child = Child(*args, **kwargs)
        self.live.append(child)
        return child

    def stop(self, child: Child, timeout: float = 20) -> None:
        child.stop(timeout)
        if child in self.live:
            self.live.remove(child)

    def stop_all(self) -> None:
        for child in reversed(self.live):
            with contextlib.suppress(Exception):
                child.stop(5)
        self.live.clear()


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def proc_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy_s() -> float:
    """CPU seconds the whole machine spent not idle (all cores, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


class CpuWindow:
    """CPU used by the processes of a stage, and by everything else on the machine.

    ``other_pct`` (CPU % of one core used by processes that are not ours) tells how
    far another workload on a shared machine may have moved the figures.
    """

    def __init__(self, *pids: int | None) -> None:
        self.pids = pids
        self.wall0 = time.monotonic()
        self.sys0 = system_busy_s()
        self.cpu0 = [proc_cpu_s(p) for p in pids]
        self.mine0 = self._mine()

    @staticmethod
    def _mine() -> float:
        """This process and its reaped children (the load generator)."""
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def close(self) -> tuple[list[float], float, float]:
        """(CPU seconds of each pid, CPU % of other processes, seconds) since opened."""
        used = [proc_cpu_s(p) - c for p, c in zip(self.pids, self.cpu0, strict=True)]
        wall = time.monotonic() - self.wall0
        other = system_busy_s() - self.sys0 - sum(used) - (self._mine() - self.mine0)
        return used, 100 * max(0.0, other) / wall, wall


def http_get(port: int, path: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class Metrics:
    """The ingest metrics this benchmark reads."""

    records: float = 0.0
    """Kafka records acknowledged (with coalescing, a record carries many frames)."""
    frames: float = 0.0
    """Media frames handed to Kafka (``callrec_ingest_published_frames_total``)."""
    starts: float = 0.0
    closed: float = 0.0
    inflight: float = 0.0
    open_streams: float = 0.0
    buckets: list[tuple[float, float]] = field(default_factory=list)
    """(le, cumulative count) of the produce-latency histogram, +Inf last."""
    produce_count: float = 0.0
    produce_sum: float = 0.0
    backpressure_s: float = 0.0
    invalid: float = 0.0
    retries: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Metrics:
        m = cls()
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            v = float(value)
            if name == "callrec_ingest_records_total":
                m.records = v
            elif name == "callrec_ingest_published_frames_total":
                m.frames = v
            elif name == 'callrec_ingest_messages_total{event="start"}':
                m.starts = v
            elif name.startswith("callrec_ingest_streams_closed_total{"):
                m.closed += v
            elif name == "callrec_ingest_inflight_bytes":
                m.inflight = v
            elif name == "callrec_ingest_connections_open":
                m.open_streams = v
            elif name.startswith("callrec_ingest_produce_latency_seconds_bucket"):
                le = name.split('le="', 1)[1].split('"', 1)[0]
                m.buckets.append((math.inf if le == "+Inf" else float(le), v))
            elif name == "callrec_ingest_produce_latency_seconds_count":
                m.produce_count = v
            elif name == "callrec_ingest_produce_latency_seconds_sum":
                m.produce_sum = v
            elif name == "callrec_ingest_backpressure_seconds_total":
                m.backpressure_s = v
            elif name.startswith("callrec_ingest_invalid_messages_total"):
                m.invalid += v
            elif name == "callrec_ingest_produce_retries_total":
                m.retries = v
        m.buckets.sort()
        return m

    @property
    def messages(self) -> float:
        """Start, media and close messages handed to Kafka, each counted once whether its
        record carries one frame or a window of them (CALLREC_INGEST_COALESCE_MS); all
        acknowledged once ``inflight`` is 0."""
        return self.frames + self.starts + self.closed


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL ``histogram_quantile``: linear interpolation inside the bucket holding rank q."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # Prometheus returns the highest finite bound
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return math.nan


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- Kafka --------------------------------------------------------------------------------


async def _create_topic(bootstrap: str, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(
            name, num_partitions=PARTITIONS, replication_factor=1,
            topic_configs={"message.timestamp.type": "LogAppendTime"},
        )])
    finally:
        await admin.close()


async def _delete_topic(bootstrap: str, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


@dataclass
class TopicScan:
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


async def _scan_topic(bootstrap: str, topic: str, *, decode: bool, keep_media: bool = False,
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


# -- servers under test ---------------------------------------------------------------------


class Ingest:
    """``callrec ingest`` as a child process on a fresh topic."""

    def __init__(self, children: Children, bootstrap: str, tmp: Path, label: str) -> None:
        check_stop()
        self.topic = f"bench.ingest.{label}.{uuid.uuid4().hex[:8]}"
        self.bootstrap = bootstrap
        asyncio.run(_create_topic(bootstrap, self.topic))
        check_stop()
        exe = Path(sys.executable).parent / "callrec"
        cmd = shlex.split(INGEST_CMD) if INGEST_CMD else [str(exe), "ingest"]
        if not INGEST_CMD and not exe.exists():
            raise SystemExit(f"{exe} not found: run `.venv/bin/pip install -e .` first")
        env = dict(os.environ)
        env.update({
            "CALLREC_KAFKA_BOOTSTRAP": bootstrap,
            "CALLREC_KAFKA_MEDIA_TOPIC": self.topic,
            "CALLREC_INGEST_PORT": "0",
            "CALLREC_INGEST_HOST": "127.0.0.1",
            "CALLREC_INGEST_TOKENS": TOKEN,
            "CALLREC_INGEST_POD_NAME": "bench",
            "CALLREC_LOG_LEVEL": "WARNING",
            "CALLREC_INGEST_DRAIN_GRACE_S": "2",
        })
        self.children = children
        self.child = children.start(cmd, env=env,
                                    stderr_path=tmp / f"ingest-{label}.log")
        line = self.child.readline(60)
        match = re.search(r"listening on port (\d+)", line)
        if not match:
            raise RuntimeError(f"unexpected ingest output: {line!r}")
        self.port = int(match.group(1))
        deadline = time.monotonic() + 60
        while http_get(self.port, "/readyz")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("ingest not ready after 60s")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.child.pid

    def metrics(self) -> Metrics:
        status, text = http_get(self.port, "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return Metrics.parse(text)

    def wait_records(self, expected: int, timeout: float) -> Metrics:
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if (m.messages >= expected and not m.inflight) or time.monotonic() > deadline:
                return m
            time.sleep(0.25)

    def wait_open(self, expected: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.metrics().open_streams != expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"ingest never had {expected} open streams")
            time.sleep(0.2)

    def close(self) -> None:
        self.children.stop(self.child)
        with contextlib.suppress(Exception):
            asyncio.run(_delete_topic(self.bootstrap, self.topic))


def run_loadgen(children: Children, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    check_stop()
    child = children.start([sys.executable, "-m", "bench.ingest_bench", "_loadgen",
                            json.dumps(cfg)])
    try:
        return child.result(timeout)
    finally:
        children.stop(child)


# ======================================================================================
# Stages
# ======================================================================================


@dataclass
class Plan:
    conns: int
    media: int
    repeat: int
    half_load_s: float
    rss_streams: int
    rt_steps: list[int]
    rt_seconds: float
    rt_bisect: int
    """Extra steps between the last passing and the first failing call count."""
    rt_granularity: int


FULL = Plan(conns=64, media=3000, repeat=3, half_load_s=20, rss_streams=1000,
            rt_steps=[100, 200, 300, 400, 500], rt_seconds=20, rt_bisect=3, rt_granularity=10)
QUICK = Plan(conns=64, media=500, repeat=1, half_load_s=3, rss_streams=100,
             rt_steps=[10, 20], rt_seconds=3, rt_bisect=0, rt_granularity=10)


def stage_drain(children: Children, tmp: Path, plan: Plan, run: int) -> dict[str, Any]:
    server = children.start([sys.executable, "-m", "bench.ingest_bench", "_drain"],
                            stderr_path=tmp / "drain.log")
    try:
        port = int(server.readline(30).rsplit(" ", 1)[1])
        window = CpuWindow(server.pid)
        load = run_loadgen(children, {"mode": "flood", "port": port, "conns": plan.conns,
                                      "media": plan.media, "prefix": f"drain{run}"}, 600)
        stats = json.loads(http_get(port, "/stats")[1])
        (cpu,), other, _ = window.close()
    finally:
        children.stop(server)
    seconds = stats["last"] - load["t0"]
    return {"messages": stats["messages"], "expected": load["messages"], "seconds": seconds,
            "msg_s": stats["messages"] / seconds, "server_cpu_s": cpu,
            "loadgen_cpu_s": load["cpu_s"], "other_pct": other}


def stage_ingest_flood(children: Children, kafka: Any, tmp: Path, plan: Plan,
                       run: int) -> dict[str, Any]:
    ingest = Ingest(children, kafka.bootstrap, tmp, f"flood{run}")
    try:
        window = CpuWindow(ingest.pid, kafka.pid)
        load = run_loadgen(children, {"mode": "flood", "port": ingest.port,
                                      "conns": plan.conns, "media": plan.media,
                                      "prefix": f"flood{run}"}, 900)
        expected = plan.conns * (plan.media + 2)  # start + media + close record per stream
        m = ingest.wait_records(expected, 300)
        (cpu, kcpu), other, _ = window.close()
        scan = asyncio.run(_scan_topic(kafka.bootstrap, ingest.topic, decode=False))
    finally:
        ingest.close()
    seconds = scan.last_append_ms / 1000 - load["t0"]
    return {"records": m.messages, "expected": expected, "in_topic": scan.records,
            "seconds": seconds, "msg_s": m.messages / seconds, "ingest_cpu_s": cpu,
            "kafka_cpu_s": kcpu, "loadgen_cpu_s": load["cpu_s"],
            "backpressure_s": m.backpressure_s, "close_codes": load["close_codes"],
            "p99_ms": histogram_quantile(0.99, m.buckets) * 1000, "other_pct": other,
            "records_per_batch": m.records / max(1.0, m.produce_count)}


def stage_half_load(children: Children, kafka: Any, tmp: Path, plan: Plan,
                    rate: float) -> dict[str, Any]:
    conns = plan.conns
    interval = conns / rate
    cycles = max(1, int(plan.half_load_s / interval))
    ingest = Ingest(children, kafka.bootstrap, tmp, "half")
    try:
        before = ingest.metrics()
        window = CpuWindow(ingest.pid, kafka.pid)
        load = run_loadgen(children, {"mode": "paced", "port": ingest.port, "conns": conns,
                                      "interval_s": interval, "cycles": cycles,
                                      "channel": "inbound", "prefix": "half"},
                           plan.half_load_s + 300)
        (cpu, kcpu), other, cpu_wall = window.close()
        expected = before.messages + load["media"] + 2 * conns
        m = ingest.wait_records(int(expected), 120)
        scan = asyncio.run(_scan_topic(kafka.bootstrap, ingest.topic, decode=True))
    finally:
        ingest.close()
    wall = load["t1"] - load["t0"]
    buckets = [(le, c - b) for (le, c), (_, b) in zip(m.buckets, before.buckets, strict=True)]
    rec_lat = list(scan.append_minus_received_ms)
    return {
        "rate_target": rate, "rate_sent": load["media"] / wall, "seconds": wall,
        "p99_ms": histogram_quantile(0.99, buckets) * 1000,
        "p50_ms": histogram_quantile(0.50, buckets) * 1000,
        "batches": buckets[-1][1] if buckets else 0,
        "mean_batch_ms": 1000 * (m.produce_sum - before.produce_sum)
        / max(1.0, m.produce_count - before.produce_count),
        "record_p99_ms": quantile(rec_lat, 0.99), "record_p50_ms": quantile(rec_lat, 0.5),
        "records": m.messages, "expected": expected, "sender_late_max_ms": load["late_max_ms"],
        "ingest_cpu_pct": 100 * cpu / cpu_wall, "kafka_cpu_pct": 100 * kcpu / cpu_wall,
        "loadgen_cpu_pct": 100 * load["cpu_s"] / wall, "other_pct": other,
        "records_per_batch": (m.records - before.records)
        / max(1.0, m.produce_count - before.produce_count),
        "buckets": [(le, c) for le, c in buckets],
    }


def stage_rss(children: Children, kafka: Any, tmp: Path, plan: Plan) -> dict[str, Any]:
    k = plan.rss_streams
    ingest = Ingest(children, kafka.bootstrap, tmp, "rss")
    hold = None
    try:
        # Warm up: a few streams publish and close (first produce allocates the producer's
        # buffers, imports lazy modules), then measure the idle process.
        run_loadgen(children, {"mode": "flood", "port": ingest.port, "conns": 8, "media": 100,
                               "prefix": "warm"}, 120)
        ingest.wait_records(8 * 102, 60)
        ingest.wait_open(0)
        time.sleep(2)
        rss = {0: proc_rss_kib(ingest.pid)}
        hold = children.start([sys.executable, "-m", "bench.ingest_bench", "_loadgen",
                               json.dumps({"mode": "hold", "port": ingest.port,
                                           "prefix": "hold"})], stdin=True)
        for n in (k // 2, k):
            hold.send(f"open {n}")
            reply = json.loads(hold.readline(300))
            assert reply["open"] == n, reply
            ingest.wait_open(n)
            time.sleep(3)  # a few media per stream
            rss[n] = max(proc_rss_kib(ingest.pid) for _ in range(3))
        hold.send("quit")
        hold.result(120)
    finally:
        if hold is not None:
            children.stop(hold)
        ingest.close()
    per_stream = (rss[k] - rss[0]) / k
    slope = (rss[k] - rss[k // 2]) / (k - k // 2)
    return {"streams": k, "rss_kib": rss, "per_stream_kib": per_stream,
            "slope_kib": slope}


def stage_realtime(children: Children, kafka: Any, tmp: Path, plan: Plan,
                   calls: int) -> dict[str, Any]:
    interval = FRAME_MS / 1000
    cycles = int(plan.rt_seconds / interval)
    ingest = Ingest(children, kafka.bootstrap, tmp, f"rt{calls}")
    try:
        before = ingest.metrics()
        window = CpuWindow(ingest.pid, kafka.pid)
        load = run_loadgen(children, {"mode": "paced", "port": ingest.port, "conns": calls,
                                      "interval_s": interval, "cycles": cycles,
                                      "channel": "both", "prefix": f"rt{calls}"},
                           plan.rt_seconds + 600)
        wall = load["t1"] - load["t0"]
        (cpu, kcpu), other, cpu_wall = window.close()
        expected = before.messages + load["media"] + 2 * calls
        m = ingest.wait_records(int(expected), 120)
        scan = asyncio.run(_scan_topic(kafka.bootstrap, ingest.topic, decode=True,
                                       keep_media=True))
    finally:
        ingest.close()
    # Loss: every (call, track, chunk) the sender wrote must be in the topic.
    missing = 0
    for call_id, ticks in zip(load["call_ids"], load["sent_ticks"], strict=True):
        for track in ("inbound", "outbound"):
            flags = scan.seen.get((call_id, track), bytearray())
            got = sum(flags[1 : ticks + 1])
            missing += ticks - got
    short = sum(cycles - t for t in load["sent_ticks"])
    # Lag of each frame behind its schedule: when ingest read it, when Kafka appended it.
    index = {c: i for i, c in enumerate(load["call_ids"])}
    t0_ms, phases = load["t0"] * 1000, load["phases"]
    read_lag: list[float] = []
    e2e: list[float] = []
    for call_id, chunk, received_ns, append_ms in scan.media_items:
        due = t0_ms + (chunk - 1) * FRAME_MS + phases[index[call_id]] * 1000
        read_lag.append(received_ns / 1e6 - due)
        e2e.append(append_ms - due)
    buckets = [(le, c - b) for (le, c), (_, b) in zip(m.buckets, before.buckets, strict=True)]
    p99 = histogram_quantile(0.99, buckets) * 1000
    result = {
        "calls": calls, "seconds": wall, "media_sent": load["media"],
        "msg_s": load["media"] / wall, "missing": missing, "short_sends": short,
        "duplicates": scan.duplicates, "closes": scan.closes,
        "close_codes": load["close_codes"], "records": m.messages, "expected": expected,
        "sender_late_max_ms": load["late_max_ms"], "sender_late_p99_ms": load["late_p99_ms"],
        "read_lag_max_ms": max(read_lag, default=math.nan),
        "read_lag_p99_ms": quantile(read_lag, 0.99),
        "e2e_p99_ms": quantile(e2e, 0.99), "e2e_max_ms": max(e2e, default=math.nan),
        "produce_p99_ms": p99, "ingest_cpu_pct": 100 * cpu / cpu_wall,
        "kafka_cpu_pct": 100 * kcpu / cpu_wall, "loadgen_cpu_pct": 100 * load["cpu_s"] / wall,
        "other_pct": other, "ingest_us_per_msg": 1e6 * cpu / max(1, load["media"]),
        "records_per_batch": (m.records - before.records)
        / max(1.0, m.produce_count - before.produce_count),
        "backpressure_s": m.backpressure_s - before.backpressure_s,
    }
    result["zero_loss"] = (
        missing == 0 and short == 0 and scan.closes.get("stop", 0) == calls
        and len(scan.closes) == 1
    )
    result["on_time"] = (result["sender_late_max_ms"] <= MAX_LATE_MS
                         and result["read_lag_max_ms"] <= MAX_LATE_MS
                         and result["e2e_p99_ms"] <= MAX_E2E_P99_MS)
    # Sustained = nothing lost and keeping up with real time. The produce latency is
    # reported, but its target (DESIGN.md §7) is the half-load figure, not this one.
    result["passed"] = result["zero_loss"] and result["on_time"]
    result.update(stage_realtime_bare(children, tmp, plan, calls))
    return result


def stage_realtime_bare(children: Children, tmp: Path, plan: Plan,
                        calls: int) -> dict[str, Any]:
    """The same real-time load against the bare drain server: its CPU is the baseline
    of what the WebSocket stack alone costs at this load on this machine."""
    interval = FRAME_MS / 1000
    server = children.start([sys.executable, "-m", "bench.ingest_bench", "_drain"],
                            stderr_path=tmp / f"drain-rt{calls}.log")
    try:
        port = int(server.readline(30).rsplit(" ", 1)[1])
        window = CpuWindow(server.pid)
        load = run_loadgen(children, {"mode": "paced", "port": port, "conns": calls,
                                      "interval_s": interval,
                                      "cycles": int(plan.rt_seconds / interval),
                                      "channel": "both", "prefix": f"bare{calls}"},
                           plan.rt_seconds + 600)
        (cpu,), _, cpu_wall = window.close()
    finally:
        children.stop(server)
    return {"bare_cpu_pct": 100 * cpu / cpu_wall,
            "bare_us_per_msg": 1e6 * cpu / max(1, load["media"])}


def stage_realtime_ramp(children: Children, kafka: Any, tmp: Path,
                        plan: Plan) -> list[dict[str, Any]]:
    """Ramp through ``plan.rt_steps`` until a step fails, then bisect a few times."""
    steps: list[dict[str, Any]] = []

    def step(calls: int) -> bool:
        for attempt in (1, 2):
            log(f"real-time: {calls} two-track calls for {plan.rt_seconds:g}s"
                + (" (re-run)" if attempt == 2 else ""))
            result = stage_realtime(children, kafka, tmp, plan, calls)
            result["attempt"] = attempt
            steps.append(result)
            log(f"  {'PASS' if result['passed'] else 'FAIL'}: missing {result['missing']}, "
                f"sender late max {result['sender_late_max_ms']:.0f} ms, read lag max "
                f"{result['read_lag_max_ms']:.0f} ms, produce p99 "
                f"{result['produce_p99_ms']:.1f} ms, other processes "
                f"{result['other_pct']:.0f}%")
            # A shared machine: a step that failed while other processes took a good
            # part of a core is run once more; both attempts are reported.
            if result["passed"] or result["other_pct"] <= RERUN_OTHER_PCT:
                break
        return bool(result["passed"])

    passed, failed = 0, None
    for calls in plan.rt_steps:
        if not step(calls):
            failed = calls
            break
        passed = calls
    for _ in range(plan.rt_bisect):
        if failed is None or failed - passed <= plan.rt_granularity:
            break
        mid = passed + (failed - passed) // 2 // plan.rt_granularity * plan.rt_granularity
        if mid <= passed:
            break
        if step(mid):
            passed = mid
        else:
            failed = mid
    return sorted(steps, key=lambda s: (int(s["calls"]), int(s["attempt"])))


# ======================================================================================
# Report
# ======================================================================================


def _fmt(value: float, digits: int = 1) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def summarize(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, met) rows."""
    a = statistics.median(r["msg_s"] for r in res["drain"])
    b = statistics.median(r["msg_s"] for r in res["ingest"])
    ratio = b / a
    half, rss, rt = res["half"], res["rss"], res["realtime"]
    passed = [s["calls"] for s in rt if s["passed"]]
    best = max(passed, default=0)
    return [
        ("(a) bare websockets drain, msg/s", _fmt(a, 0), "", ""),
        ("(b) callrec ingest -> Kafka acks=all, msg/s", _fmt(b, 0), "", ""),
        ("ratio (b)/(a)", _fmt(ratio, 2), f">= {TARGET_RATIO}",
         "yes" if ratio >= TARGET_RATIO else "NO"),
        (f"p99 frame->ack at half load ({_fmt(half['rate_sent'], 0)} msg/s), ms",
         _fmt(half["p99_ms"], 2), f"<= {TARGET_P99_MS:g}",
         "yes" if half["p99_ms"] <= TARGET_P99_MS else "NO"),
        ("RSS per open stream, KiB", _fmt(rss["per_stream_kib"], 1), f"<= {TARGET_RSS_KIB:g}",
         "yes" if rss["per_stream_kib"] <= TARGET_RSS_KIB else "NO"),
        ("real-time two-track calls, zero loss", f"{best}" + (
            f" (tried up to {max(s['calls'] for s in rt)})" if rt else ""),
         f">= {TARGET_CALLS}", "yes" if best >= TARGET_CALLS else "NO"),
    ]


def render_table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    head = ("figure", "value", "target", "met")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def render_details(res: dict[str, Any]) -> str:
    out = []
    out.append("Throughput runs (C x M = "
               f"{res['plan']['conns']} x {res['plan']['media']} media per run):")
    for i, (a, b) in enumerate(zip(res["drain"], res["ingest"], strict=True)):
        out.append(
            f"  run {i + 1}: (a) {a['msg_s']:,.0f} msg/s ({a['messages']}/{a['expected']} msgs, "
            f"{a['seconds']:.2f}s, server CPU {a['server_cpu_s']:.2f}s = "
            f"{1e6 * a['server_cpu_s'] / a['messages']:.1f} us/msg, loadgen CPU "
            f"{a['loadgen_cpu_s']:.2f}s, other processes {a['other_pct']:.0f}%)\n"
            f"         (b) {b['msg_s']:,.0f} msg/s "
            f"({b['records']:.0f}/{b['expected']} acked, {b['in_topic']} in topic, "
            f"{b['seconds']:.2f}s, ingest CPU {b['ingest_cpu_s']:.2f}s = "
            f"{1e6 * b['ingest_cpu_s'] / b['expected']:.1f} us/msg, Kafka CPU "
            f"{b['kafka_cpu_s']:.2f}s, loadgen CPU {b['loadgen_cpu_s']:.2f}s, "
            f"{b['records_per_batch']:.0f} records/batch, produce p99 {b['p99_ms']:.0f} ms "
            f"(saturated: backpressure), other processes {b['other_pct']:.0f}%)")
    h = res["half"]
    if len(res.get("half_runs", [])) > 1:
        out.append("Half load, p99 of each run (ms): " + ", ".join(
            f"{r['p99_ms']:.2f} (other processes {r['other_pct']:.0f}%)"
            for r in res["half_runs"]) + "; the median run:")
    out.append(
        f"Half load: {h['rate_sent']:,.0f} msg/s for {h['seconds']:.1f}s; produce latency "
        f"(per batch, histogram) p50 {h['p50_ms']:.2f} ms, p99 {h['p99_ms']:.2f} ms over "
        f"{h['batches']:.0f} batches (mean {h['mean_batch_ms']:.2f} ms); per record "
        f"LogAppendTime - received_ns p50 {h['record_p50_ms']:.1f} ms, p99 "
        f"{h['record_p99_ms']:.1f} ms (1 ms resolution); CPU ingest "
        f"{h['ingest_cpu_pct']:.0f}%, Kafka {h['kafka_cpu_pct']:.0f}%, loadgen "
        f"{h['loadgen_cpu_pct']:.0f}%, other processes {h['other_pct']:.0f}%; "
        f"{h['records_per_batch']:.1f} records/batch; sender max lateness "
        f"{h['sender_late_max_ms']:.1f} ms; {h['records']:.0f}/{h['expected']:.0f} records acked")
    r = res["rss"]
    out.append(
        f"RSS: {', '.join(f'{n} streams {v / 1024:.1f} MiB' for n, v in r['rss_kib'].items())}"
        f"; per stream {r['per_stream_kib']:.1f} KiB (0 -> {r['streams']}), slope "
        f"{r['slope_kib']:.1f} KiB ({r['streams'] // 2} -> {r['streams']})")
    out.append("Real-time two-track calls (one `both` connection per call, 100 msg/s each):")
    for s in res["realtime"]:
        out.append(
            f"  {s['calls']:4d} calls: {'PASS' if s['passed'] else 'FAIL'}"
            f"{' (re-run)' if s.get('attempt', 1) == 2 else ''} - "
            f"{s['msg_s']:,.0f} msg/s for {s['seconds']:.1f}s, missing {s['missing']}, "
            f"short sends {s['short_sends']}, dups {s['duplicates']}, closes {s['closes']}, "
            f"sender late max {s['sender_late_max_ms']:.0f} ms (p99 "
            f"{s['sender_late_p99_ms']:.0f}), ingest read lag max {s['read_lag_max_ms']:.0f} ms "
            f"(p99 {s['read_lag_p99_ms']:.0f}), schedule->Kafka p99 {s['e2e_p99_ms']:.0f} ms, "
            f"produce p99 {s['produce_p99_ms']:.1f} ms, {s['records_per_batch']:.1f} "
            f"records/batch, CPU ingest {s['ingest_cpu_pct']:.0f}% "
            f"({s['ingest_us_per_msg']:.0f} us/msg; bare server {s['bare_cpu_pct']:.0f}%, "
            f"{s['bare_us_per_msg']:.0f} us/msg) Kafka {s['kafka_cpu_pct']:.0f}% loadgen "
            f"{s['loadgen_cpu_pct']:.0f}% other processes {s['other_pct']:.0f}%")
    return "\n".join(out)


def machine_lines() -> list[str]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return [f"$ nproc\n{sh('nproc')}", f"$ free -h\n{sh('free -h')}",
            f"$ lscpu | head\n{sh('lscpu | head')}"]


def _git_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def render_markdown(res: dict[str, Any], rows: Sequence[tuple[str, str, str, str]]) -> str:
    date = datetime.date.today().isoformat()
    cmd = ".venv/bin/python -m bench.ingest_bench" + (" --quick" if res["quick"] else "")
    drain_us = statistics.median(1e6 * a["server_cpu_s"] / a["messages"] for a in res["drain"])
    ingest_us = statistics.median(1e6 * b["ingest_cpu_s"] / b["expected"] for b in res["ingest"])
    kafka_us = statistics.median(1e6 * b["kafka_cpu_s"] / b["expected"] for b in res["ingest"])
    passing = [st for st in res["realtime"] if st["passed"]]
    best = max(passing, key=lambda st: int(st["calls"])) if passing else None
    others = [a["other_pct"] for a in res["drain"]] + [b["other_pct"] for b in res["ingest"]]
    others += [h["other_pct"] for h in res.get("half_runs", [res["half"]])]
    others += [st["other_pct"] for st in res["realtime"]]
    md = [
        "## Ingest",
        "",
        f"Measured {date} with `{cmd} --write-docs` (bench/ingest_bench.py, explained in "
        f"bench/README.md) at {res.get('version') or _git_version()}, on "
        f"{os.cpu_count()} cores ({_cpu_model()}), "
        f"Python {platform.python_version()}; load average before the run {res['loadavg']}.",
        "",
        "Kafka is the local single-node broker of deploy/local/stack.py; ingest is "
        "`callrec ingest` with its default settings. **The load generator, ingest and Kafka "
        f"share the same {os.cpu_count()} cores** (and this machine is shared with other "
        "work: other processes used between "
        f"{min(others):.0f}% and {max(others):.0f}% of a core during the stages), so every "
        "figure is lower than ingest would reach with cores of its own; (a) and (b) run "
        "under the same load generator.",
        "",
        "| figure | value | target | met |",
        "|---|---|---|---|",
    ]
    md += [f"| {f} | {v} | {t} | {m} |" for f, v, t, m in rows]
    md += [
        "",
        f"CPU per message in the throughput runs (median): bare server {drain_us:.1f} us, "
        f"ingest {ingest_us:.1f} us ({ingest_us / drain_us:.1f}x), plus Kafka broker "
        f"{kafka_us:.1f} us. Ingest runs on one core (one asyncio loop), so its msg/s is "
        "about 1 / its CPU per message.",
    ]
    if best is not None:
        md += [
            "",
            f"At {best['calls']} real-time calls ({best['msg_s']:,.0f} msg/s) ingest used "
            f"{best['ingest_cpu_pct']:.0f}% of a core, {best['ingest_us_per_msg']:.0f} us per "
            "message (each connection wakes ingest for 2 messages every 20 ms, and Kafka "
            f"batches held {best['records_per_batch']:.1f} records on average), Kafka "
            f"{best['kafka_cpu_pct']:.0f}% and the load generator "
            f"{best['loadgen_cpu_pct']:.0f}%.",
        ]
    lossless = [st for st in res["realtime"] if st["zero_loss"]]
    failed = [st for st in res["realtime"] if not st["passed"]]
    if failed and len(lossless) == len(res["realtime"]):
        md += [
            "",
            "No real-time step lost a chunk (every one up to "
            f"{max(int(st['calls']) for st in lossless)} calls had every chunk in Kafka and "
            "closed with `stop`): the failing steps failed on lag (ingest reading late, "
            "produce latency over the target), since ingest applies backpressure rather "
            "than dropping.",
        ]
    md += ["", "Details:", "", "```", render_details(res), "```", ""]
    md += [
        "How each figure is taken:",
        "",
        "- msg/s: (a) messages the bare server counted / (its last receive - first send); "
        "(b) messages Kafka acknowledged (start, media and close; media counted per frame by "
        "`callrec_ingest_published_frames_total`, as a record may carry a window of them) / "
        "(broker LogAppendTime of the newest record - first send). "
        f"{res['plan']['conns']} connections x {res['plan']['media']} media messages, "
        "median of the runs.",
        "- p99 frame->ack: `callrec_ingest_produce_latency_seconds` (from a record handed to "
        "the publisher to its batch's acks=all acknowledgement; one observation per batch) "
        "interpolated like PromQL `histogram_quantile`, at 50 % of (b)'s msg/s paced over "
        f"{res['plan']['conns']} connections for {res['plan']['half_load_s']:g} s; median "
        "of the runs. The per-record cross-check is Kafka's LogAppendTime minus the "
        "record's `received_ns` (1 ms resolution).",
        "- RSS per stream: (VmRSS with K streams - VmRSS with none) / K, after a warm-up; "
        "each stream sent `connected`, `start` and one media message a second.",
        "- Real-time calls: one `both` connection per call, an inbound and an outbound "
        f"20 ms frame every 20 ms, for {res['plan']['rt_seconds']:g} s. A step passes when "
        "every chunk the sender wrote is in Kafka (read back, per call/track/chunk), all "
        f"streams closed with `stop`, the sender was never more than {MAX_LATE_MS:g} ms "
        f"behind schedule, ingest read every frame within {MAX_LATE_MS:g} ms of its due "
        f"time (`received_ns`), and the p99 frame was in Kafka (LogAppendTime) within "
        f"{MAX_E2E_P99_MS:g} ms of its due time: nothing lost, and ingest keeps up with real "
        "time. The produce latency of each step is reported; its target is the half-load "
        "figure above. The same load then runs against the bare drain server of (a): its CPU "
        "per message is what the WebSocket stack alone costs at that load. The ramp stops at "
        "the first failing step, then bisects between the last passing and the first "
        "failing count; a step that failed while other processes used more than "
        f"{RERUN_OTHER_PCT:g}% of a core is run once more (both attempts listed).",
        "- other processes: CPU the whole machine used (/proc/stat) minus that of the "
        "benchmark's own processes, during the stage.",
        "",
    ]
    return "\n".join(md)


def write_docs(section: str, docs: Path = DOCS) -> None:
    """Replace (or add) the ``## Ingest`` section of ``docs``; other sections are kept."""
    replace_section(docs, "## Ingest", section)


# ======================================================================================
# Main
# ======================================================================================


_STOP: list[int] = []
"""Signals received: the benchmark stops at the next check, cleaning up on its way out."""


def _on_signal(signum: int, frame: object) -> None:
    _STOP.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def check_stop() -> None:
    """Raise if a signal came while something swallowed its KeyboardInterrupt."""
    if _STOP:
        raise KeyboardInterrupt(f"signal {_STOP[0]}")


def run(args: argparse.Namespace) -> int:
    from deploy.local import stack

    # Our own handler (not asyncio.run's, which only cancels its task, and a library
    # may swallow that): Ctrl-C or SIGTERM always ends the run, children stopped.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    global INGEST_CMD
    INGEST_CMD = args.ingest_cmd
    plan = QUICK if args.quick else FULL
    if args.repeat:
        plan.repeat = args.repeat
    if args.calls:
        plan.rt_steps = [int(x) for x in args.calls.split(",")]
    _raise_nofile()
    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="callrec-ingest-bench-"))
    kafka = None
    res: dict[str, Any] = {"quick": args.quick, "plan": plan.__dict__,
                           "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                           "version": _git_version()}
    try:
        stack.install(kafka=True, minio=False)
        kafka = stack.KafkaServer(tmp / "kafka")
        log("starting Kafka")
        kafka.start()
        res["drain"], res["ingest"] = [], []
        for i in range(plan.repeat):
            log(f"throughput run {i + 1}/{plan.repeat}: (a) bare websockets drain server")
            res["drain"].append(stage_drain(children, tmp, plan, i))
            log(f"  (a) {res['drain'][-1]['msg_s']:,.0f} msg/s")
            log(f"throughput run {i + 1}/{plan.repeat}: (b) callrec ingest -> Kafka")
            res["ingest"].append(stage_ingest_flood(children, kafka, tmp, plan, i))
            log(f"  (b) {res['ingest'][-1]['msg_s']:,.0f} msg/s")
        rate = statistics.median(r["msg_s"] for r in res["ingest"])
        res["half_runs"] = []
        for i in range(plan.repeat):
            log(f"half load run {i + 1}/{plan.repeat}: {rate / 2:,.0f} msg/s for "
                f"{plan.half_load_s:g}s")
            res["half_runs"].append(stage_half_load(children, kafka, tmp, plan, rate / 2))
            log(f"  p99 {res['half_runs'][-1]['p99_ms']:.2f} ms")
        by_p99 = sorted(res["half_runs"], key=lambda h: float(h["p99_ms"]))
        res["half"] = by_p99[len(by_p99) // 2]  # the median run
        log(f"RSS with 0, {plan.rss_streams // 2}, {plan.rss_streams} open streams")
        res["rss"] = stage_rss(children, kafka, tmp, plan)
        log(f"  {res['rss']['per_stream_kib']:.1f} KiB per stream")
        res["realtime"] = stage_realtime_ramp(children, kafka, tmp, plan)
    finally:
        children.stop_all()
        if kafka is not None:
            kafka.stop()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = summarize(res)
    print()
    print(render_table(rows))
    print()
    print(render_details(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    if args.write_docs:
        docs = Path(args.docs) if args.docs else DOCS
        write_docs(render_markdown(res, rows), docs)
        log(f"updated {docs}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest_bench",
        description="callrec ingest vs a bare websockets server; real Kafka (DESIGN.md §7).",
    )
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds per stage (smoke test)")
    parser.add_argument("--write-docs", action="store_true",
                        help="replace the '## Ingest' section of docs/benchmarks.md")
    parser.add_argument("--docs", default="", help=argparse.SUPPRESS)  # another file (tests)
    parser.add_argument("--repeat", type=int, default=0,
                        help="throughput runs (median reported); default 3, 1 with --quick")
    parser.add_argument("--calls", default="",
                        help="comma-separated real-time call counts to ramp through")
    parser.add_argument("--json", default="", help="also write every figure to this file")
    parser.add_argument("--ingest-cmd", default="",
                        help="command run as (b) instead of `.venv/bin/callrec ingest` "
                        "(same CALLREC_* environment; must print the port line)")
    parser.add_argument("--keep-tmp", action="store_true",
                        help="keep the temp dir (Kafka data, ingest logs)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_drain"]:
        drain_main()
        return 0
    if argv[:1] == ["_loadgen"]:
        loadgen_main(json.loads(argv[1]))
        return 0
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        log("interrupted; every process it started is stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
