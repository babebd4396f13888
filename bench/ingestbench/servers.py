"""The servers under test: ``callrec ingest`` on a fresh topic, and the load generator.

Each is a child process (bench/harness/procs.py) registered in the benchmark's
:class:`Children`, so that Ctrl-C or SIGTERM stops them all: :func:`on_signal`
turns a signal into ``KeyboardInterrupt`` and :func:`check_stop` raises again
wherever a library swallowed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.procs import Children, Service
from bench.harness.promstats import (
    histogram,
    http_get,
    metric_by_label,
    metric_sum,
    parse_metrics,
)
from bench.harness.topics import create_topics, delete_topic
from bench.ingestbench.frames import TOKEN
from bench.ingestbench.topicscan import PARTITIONS

ingest_cmd = ""
"""``--ingest-cmd``: run this instead of ``.venv/bin/callrec ingest`` (A/B a variant)."""


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
        s = parse_metrics(text)
        return cls(
            records=metric_sum(s, "callrec_ingest_records_total"),
            frames=metric_sum(s, "callrec_ingest_published_frames_total"),
            starts=metric_by_label(s, "callrec_ingest_messages_total", "event").get("start", 0.0),
            closed=metric_sum(s, "callrec_ingest_streams_closed_total"),
            inflight=metric_sum(s, "callrec_ingest_inflight_bytes"),
            open_streams=metric_sum(s, "callrec_ingest_connections_open"),
            buckets=histogram(s, "callrec_ingest_produce_latency_seconds"),
            produce_count=metric_sum(s, "callrec_ingest_produce_latency_seconds_count"),
            produce_sum=metric_sum(s, "callrec_ingest_produce_latency_seconds_sum"),
            backpressure_s=metric_sum(s, "callrec_ingest_backpressure_seconds_total"),
            invalid=metric_sum(s, "callrec_ingest_invalid_messages_total"),
            retries=metric_sum(s, "callrec_ingest_produce_retries_total"),
        )

    @property
    def messages(self) -> float:
        """Start, media and close messages handed to Kafka, each counted once whether its
        record carries one frame or a window of them (CALLREC_INGEST_COALESCE_MS); all
        acknowledged once ``inflight`` is 0."""
        return self.frames + self.starts + self.closed


class Ingest:
    """``callrec ingest`` as a child process on a fresh topic."""

    def __init__(self, children: Children, bootstrap: str, tmp: Path, label: str) -> None:
        check_stop()
        self.topic = f"bench.ingest.{label}.{uuid.uuid4().hex[:8]}"
        self.bootstrap = bootstrap
        asyncio.run(create_topics(bootstrap, {self.topic: PARTITIONS},
                                  {"message.timestamp.type": "LogAppendTime"}))
        check_stop()
        exe = Path(sys.executable).parent / "callrec"
        cmd = shlex.split(ingest_cmd) if ingest_cmd else [str(exe), "ingest"]
        if not ingest_cmd and not exe.exists():
            raise SystemExit(f"{exe} not found: run `.venv/bin/pip install -e .` first")
        env = {
            "CALLREC_KAFKA_BOOTSTRAP": bootstrap,
            "CALLREC_KAFKA_MEDIA_TOPIC": self.topic,
            "CALLREC_INGEST_PORT": "0",
            "CALLREC_INGEST_HOST": "127.0.0.1",
            "CALLREC_INGEST_TOKENS": TOKEN,
            "CALLREC_INGEST_POD_NAME": "bench",
            "CALLREC_LOG_LEVEL": "WARNING",
            "CALLREC_INGEST_DRAIN_GRACE_S": "2",
        }
        self.children = children
        self.service = Service("ingest", f"ingest-{label}", env, tmp, cmd=cmd)
        children.add(self.service)
        self.service.start(60)
        self.service.wait_ready(60)
        assert self.service.port is not None and self.service.pid is not None
        self.port: int = self.service.port
        self.pid: int = self.service.pid

    def metrics(self) -> Metrics:
        status, text = http_get(self.port, "/metrics", timeout=10)
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
        self.children.stop(self.service)
        with contextlib.suppress(Exception):
            asyncio.run(delete_topic(self.bootstrap, self.topic))


def run_loadgen(children: Children, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    check_stop()
    child = children.start([sys.executable, "-m", "bench.ingest_bench", "_loadgen",
                            json.dumps(cfg)])
    try:
        return child.result(timeout)
    finally:
        children.stop(child)


_STOP: list[int] = []
"""Signals received: the benchmark stops at the next check, cleaning up on its way out."""


def on_signal(signum: int, frame: object) -> None:
    _STOP.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def check_stop() -> None:
    """Raise if a signal came while something swallowed its KeyboardInterrupt."""
    if _STOP:
        raise KeyboardInterrupt(f"signal {_STOP[0]}")
