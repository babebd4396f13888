"""Prometheus metrics of ``callrec ingest`` (served at ``/metrics``).

Names follow ``callrec_ingest_<thing>_<unit>``; labels are low-cardinality
(never a call id). What is counted per message (messages by event, bytes) is
kept in :data:`HOT` as plain integers and read by a collector at scrape time:
a ``Counter.inc`` takes a lock, and three of them per 20 ms frame cost more than
parsing the frame. Ingest is one thread, the event loop, so plain ints are exact.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from infra.bus.kafka import PublishMetrics
from schemas.wavix import EVENT_NAMES


class HotCounts:
    """Counters of the per-message path, as plain integers (see the module docstring)."""

    __slots__ = ("audio_bytes", "messages", "published_frames", "received_bytes")

    def __init__(self) -> None:
        self.messages = dict.fromkeys(EVENT_NAMES, 0)
        """Valid Wavix messages received, by event."""
        self.received_bytes = 0
        """Bytes of WebSocket messages received."""
        self.audio_bytes = 0
        """Decoded audio payload bytes published to Kafka."""
        self.published_frames = 0
        """Media frames handed to the bus (in a ``MediaChunk`` or a ``MediaBatch``); frames
        still in a coalescing window are received but not yet published."""


HOT = HotCounts()


class _HotCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            "callrec_ingest_messages", "Valid Wavix messages received, by event",
            labels=["event"],
        )
        for event, count in HOT.messages.items():
            messages.add_metric([event], count)
        yield messages
        yield CounterMetricFamily("callrec_ingest_received_bytes",
                                  "Bytes of WebSocket messages received",
                                  value=HOT.received_bytes)
        yield CounterMetricFamily("callrec_ingest_audio_bytes",
                                  "Decoded audio payload bytes published to Kafka",
                                  value=HOT.audio_bytes)
        yield CounterMetricFamily("callrec_ingest_published_frames",
                                  "Media frames handed to the bus (Kafka or the local log)",
                                  value=HOT.published_frames)

    def describe(self) -> Iterator[Metric]:
        return self.collect()


REGISTRY.register(_HotCollector())

CONNECTIONS_OPEN = Gauge("callrec_ingest_connections_open", "WebSocket streams now open")
CONNECTIONS = Counter(
    "callrec_ingest_connections_total",
    "WebSocket connections by outcome (accepted, or why they were refused before upgrade)",
    ["outcome"],
)
CALL_TOKEN_MISMATCH = Counter(
    "callrec_ingest_call_token_mismatch_total",
    "Streams refused (close 1008) because the start's call id is not the per-call token's",
)
STREAMS_CLOSED = Counter(
    "callrec_ingest_streams_closed_total",
    "Streams ended, by close-record reason (stop, disconnect, error)",
    ["reason"],
)
INVALID_MESSAGES = Counter(
    "callrec_ingest_invalid_messages_total",
    "Messages skipped or refused, by reason (malformed_json, bad_base64, too_big...)",
    ["reason"],
)
RECORDS = Counter("callrec_ingest_records_total", "Records acknowledged by Kafka (acks=all)")
PRODUCE_LATENCY = Histogram(
    "callrec_ingest_produce_latency_seconds",
    "From a record being handed to the publisher to its Kafka acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
             0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PRODUCE_RETRIES = Counter(
    "callrec_ingest_produce_retries_total", "Batches re-sent after a Kafka error or timeout"
)
PRODUCE_FAILURES = Counter(
    "callrec_ingest_produce_failures_total",
    "Batches given up after the produce timeout (their streams are closed with 1013)",
)
BACKPRESSURE = Counter(
    "callrec_ingest_backpressure_seconds_total",
    "Time connections spent not reading their socket because Kafka was behind",
)
INFLIGHT_BYTES = Gauge(
    "callrec_ingest_inflight_bytes", "Bytes handed to Kafka and not yet acknowledged"
)
"""Read from the publisher's budget at scrape time (``set_function``)."""
READY = Gauge("callrec_ingest_ready", "1 when /readyz answers 200")
CLOSE_CODES = Counter(
    "callrec_ingest_close_codes_total", "Connections closed by ingest, by WebSocket close code",
    ["code"],
)

PUBLISH = PublishMetrics(
    latency=PRODUCE_LATENCY, records=RECORDS, retries=PRODUCE_RETRIES,
    failures=PRODUCE_FAILURES, inflight=INFLIGHT_BYTES,
)
"""The series the Kafka publisher updates (``callrec.wiring`` hands them over)."""
