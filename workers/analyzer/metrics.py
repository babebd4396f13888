"""Prometheus metrics of ``callrec analyzer``: ``callrec_analyzer_<thing>_<unit>``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDINGS = Counter(
    "callrec_analyzer_recordings_total",
    "Recordings handled, by outcome (analyzed, skipped: already analysed with this model, "
    "failed: given up after retries)",
    ["outcome"],
)
FAILURES = Counter(
    "callrec_analyzer_failures_total",
    "Failed analysis attempts, by reason (not_found, bad_audio, transcription, store, "
    "bad_record, internal)",
    ["reason"],
)
REAL_TIME_FACTOR = Histogram(
    "callrec_analyzer_transcription_rtf",
    "Transcription wall time / audio transcribed, per recording (below 1: faster than real time)",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2),
)
ANALYSIS_SECONDS = Histogram(
    "callrec_analyzer_analysis_seconds",
    "Wall time to analyse one recording (read, transcribe, metrics, write)",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
AUDIO_SECONDS = Counter(
    "callrec_analyzer_audio_seconds_total", "Audio transcribed (duration x tracks)"
)
QUEUE_DEPTH = Gauge(
    "callrec_analyzer_queue_depth_records",
    "Recording events fetched from Kafka and not yet analysed by this process",
)
CONSUMER_LAG = Gauge(
    "callrec_analyzer_consumer_lag_records",
    "Recording events not yet analysed: from this process's position (the event being "
    "analysed, else the oldest queued) to the log end, per owned partition",
    ["partition"],
)
PAUSED = Gauge("callrec_analyzer_paused", "1 while partitions are paused (archive failing)")
