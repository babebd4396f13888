"""The ingest benchmark's load generator process (``_loadgen`` sub-command).

Config as JSON in argv, result as JSON on the last stdout line. Three modes:

- ``flood``: ``conns`` connections each send connected, start, ``media`` media and
  stop as fast as TCP takes them;
- ``paced``: one tick (a frame per track) per connection every ``interval_s``,
  phases spread, lateness measured;
- ``hold``: streams opened on command (stdin ``open N``), one media a second each.

It costs ~4 us per message (bench/ingestbench/frames.py), but it shares the cores
with the server under test and Kafka (bench/README.md).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.harness.procfs import self_cpu_s
from bench.harness.procs import raise_nofile
from bench.ingestbench.frames import Stream, connect


async def _open_streams(
    port: int, count: int, channel: str, prefix: str, start: int = 0
) -> list[Stream]:
    streams: list[Stream] = []
    for first in range(start, start + count, 50):  # below the listen backlog
        batch = range(first, min(first + 50, start + count))
        clients = await asyncio.gather(*(connect(port) for _ in batch))
        for i, client in zip(batch, clients, strict=True):
            client.transport.set_write_buffer_limits(high=256 * 1024)  # type: ignore[union-attr]
            streams.append(Stream(client, f"{prefix}-{i:05d}", channel))
    return streams



async def _close_all(streams: Sequence[Stream]) -> dict[str, int]:
    for s in streams:
        if s.client.open:
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
        while left > 0 and client.open:
            n = min(per_write, left)
            client.write(s.ticks(n))
            left -= n
            if client.paused:
                await client.writable()
            else:
                await asyncio.sleep(0)
        client.write(s.ending())
        await client.close()

    cpu0, t0 = self_cpu_s(), time.time()
    await asyncio.gather(*(one(s) for s in streams))
    t1 = time.time()
    codes: dict[str, int] = {}
    for s in streams:
        codes[str(s.client.close_code)] = codes.get(str(s.client.close_code), 0) + 1
    return {
        "t0": t0, "t1": t1, "cpu_s": self_cpu_s() - cpu0,
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
    cpu0 = self_cpu_s()
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
        if s.client.open and not s.client.paused:
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
        if done[i] < cycles and s.client.open:
            await s.client.writable()
            late.append((loop.time() - (t0 + done[i] * interval + phases[i])) * 1000)
            s.client.write(s.ticks(cycles - done[i]))
            done[i] = cycles
    t1_wall = time.time()
    cpu = self_cpu_s() - cpu0
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
        while not stopping.is_set() and s.client.open:
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
    raise_nofile()
    mode = cfg["mode"]
    runner = {"flood": load_flood, "paced": load_paced, "hold": load_hold}[mode]
    result = asyncio.run(runner(cfg))
    print(json.dumps(result), flush=True)

