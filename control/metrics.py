"""Prometheus metrics of ``callrec control`` (names ``callrec_control_*``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOK_EVENTS = Counter(
    "callrec_control_webhook_events_total",
    "Webhook requests by outcome: accepted, unknown_type (200, not published), "
    "wrong_secret (404), malformed (400), too_large (413), kafka_unavailable (503).",
    ["outcome"],
)
EVENTS = Counter(
    "callrec_control_events_total",
    "Call events processed by the controller, by event type.",
    ["type"],
)
CALLS = Counter(
    "callrec_control_calls_total",
    "Calls decided by the controller: recorded (a stream was started) or not_recorded.",
    ["outcome"],
)
NOT_RECORDED = Counter(
    "callrec_control_not_recorded_total",
    "Calls not recorded, by reason (no_rule_matched, not_answered, stream_start_failed, "
    "stream_start_unknown, unconfirmed).",
    ["reason"],
)
STREAM_STARTS = Counter(
    "callrec_control_stream_starts_total",
    "Stream start requests to Wavix by result: started, rejected (4xx), unavailable (5xx "
    "or timeout after every retry).",
    ["result"],
)
WAVIX_REQUESTS = Counter(
    "callrec_control_wavix_requests_total",
    "Wavix REST requests by operation and HTTP status (timeout, error without one).",
    ["operation", "status"],
)
START_LATENCY = Histogram(
    "callrec_control_start_latency_seconds",
    "From accepting an answered event to sending its stream start request.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10),
)
FORWARDS = Counter(
    "callrec_control_forwards_total",
    "Events forwarded to CALLREC_CONTROL_FORWARD_URL by result: sent, failed, dropped.",
    ["result"],
)
PAUSES = Counter(
    "callrec_control_pauses_total",
    "Pause and resume requests by action and result.",
    ["action", "result"],
)
READY = Gauge("callrec_control_ready", "1 when this control process can take events.")
OPEN_CALLS = Gauge("callrec_control_open_calls", "Calls the controller holds state for.")
