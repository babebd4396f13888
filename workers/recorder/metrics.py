"""Prometheus metrics of ``callrec recorder``: ``callrec_recorder_<thing>_<unit>``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OPEN_CALLS = Gauge("callrec_recorder_open_calls", "Recordings being assembled or archived")
RECORDS = Counter("callrec_recorder_records_total", "Kafka records consumed")
BAD_RECORDS = Counter(
    "callrec_recorder_bad_records_total", "Records skipped because they could not be decoded"
)
LATE_RECORDS = Counter(
    "callrec_recorder_late_records_total",
    "Chunks or closes for a recording already being archived (dropped, counted)",
)
RECORDINGS = Counter(
    "callrec_recorder_recordings_total",
    "Recordings archived, by outcome (complete, incomplete, already_archived), or failed "
    "(not archivable: see the failure note and the log)",
    ["outcome"],
)
FINALIZE_LATENCY = Histogram(
    "callrec_recorder_finalize_latency_seconds",
    "From the last stream's close record being written by ingest to WAV + manifest durable",
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 120),
)
GAPS = Counter("callrec_recorder_gaps_total", "Missing chunks filled with silence")
DUPLICATES = Counter("callrec_recorder_duplicates_total", "Duplicate chunks dropped")
OUT_OF_ORDER = Counter("callrec_recorder_out_of_order_total", "Chunks that arrived out of order")
S3_LATENCY = Histogram(
    "callrec_recorder_s3_latency_seconds",
    "Time to archive one recording's objects",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
S3_ERRORS = Counter(
    "callrec_recorder_s3_errors_total", "Failed archive attempts (retried), by error", ["error"]
)
CONSUMER_LAG = Gauge(
    "callrec_recorder_consumer_lag_records",
    "Records between our position and the log end",
    ["partition"],
)
PAUSED = Gauge("callrec_recorder_paused", "1 while partitions are paused (archive failing)")
ARCHIVE_FAILURES = Counter(
    "callrec_recorder_archive_failures_total",
    "Recordings that could not be archived (not retried), by error",
    ["error"],
)
COMMITTED_OFFSET = Gauge(
    "callrec_recorder_committed_offset",
    "Last offset committed for a partition of the media topic",
    ["partition"],
)
READ_OFFSET = Gauge(
    "callrec_recorder_read_offset",
    "Offset after the last record read from a partition of the media topic",
    ["partition"],
)
