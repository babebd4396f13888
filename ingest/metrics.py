"""Prometheus metrics of ``callrec ingest`` (served at ``/metrics``).

Names follow ``callrec_ingest_<thing>_<unit>``; labels are low-cardinality
(never a call id). Children used per message are bound once, here, so the hot
path does no label lookups.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from schemas.wavix import EVENT_NAMES

CONNECTIONS_OPEN = Gauge("callrec_ingest_connections_open", "WebSocket streams now open")
CONNECTIONS = Counter(
    "callrec_ingest_connections_total",
    "WebSocket connections by outcome (accepted, or why they were refused before upgrade)",
    ["outcome"],
)
STREAMS_CLOSED = Counter(
    "callrec_ingest_streams_closed_total",
    "Streams ended, by close-record reason (stop, disconnect, error)",
    ["reason"],
)
MESSAGES = Counter(
    "callrec_ingest_messages_total", "Valid Wavix messages received, by event", ["event"]
)
INVALID_MESSAGES = Counter(
    "callrec_ingest_invalid_messages_total",
    "Messages skipped or refused, by reason (malformed_json, bad_base64, too_big...)",
    ["reason"],
)
RECEIVED_BYTES = Counter(
    "callrec_ingest_received_bytes_total", "Bytes of WebSocket messages received"
)
AUDIO_BYTES = Counter(
    "callrec_ingest_audio_bytes_total", "Decoded audio payload bytes published to Kafka"
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
READY = Gauge("callrec_ingest_ready", "1 when /readyz answers 200")
CLOSE_CODES = Counter(
    "callrec_ingest_close_codes_total", "Connections closed by ingest, by WebSocket close code",
    ["code"],
)

MESSAGES_BY_EVENT = {name: MESSAGES.labels(name) for name in EVENT_NAMES}
MEDIA_MESSAGES = MESSAGES_BY_EVENT["media"]
