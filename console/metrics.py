"""Prometheus metrics of ``callrec console``: ``callrec_console_<thing>_<unit>``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "callrec_console_requests_total",
    "HTTP requests answered, by route and status class",
    ["route", "status"],
)
LATENCY = Histogram(
    "callrec_console_request_seconds",
    "Time to the end of the response head, by route",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5),
)
DENIED = Counter(
    "callrec_console_denied_total", "Requests refused: login, role or CSRF", ["reason"]
)
INDEX_CALLS = Gauge("callrec_console_index_recordings", "Recordings in the calls index")
INDEX_REFRESH = Histogram(
    "callrec_console_index_refresh_seconds",
    "Time to pick up newly archived recordings",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
AUDIT_ERRORS = Counter(
    "callrec_console_audit_errors_total", "Audit entries that could not be written"
)
VERIFY_PROBLEMS = Gauge(
    "callrec_console_verify_problems",
    "Problems the last recorded callrec verify found (verify/last.json); absent before one",
)
VERIFY_FINISHED = Gauge(
    "callrec_console_verify_last_run_timestamp_seconds",
    "When the last recorded callrec verify finished (Unix time); absent before one",
)
LOGIN_FAILURES = Counter(
    "callrec_console_login_failures_total",
    "Logins refused: a wrong user name or password (password), or an attempt refused "
    "unchecked after too many failures (throttled)",
    ["reason"],
)
HOLD_CHANGES = Counter(
    "callrec_console_hold_changes_total",
    "Legal holds placed (set) or released (clear) from the console",
    ["action"],
)
EXPORTS = Counter(
    "callrec_console_exports_total",
    "Evidence bundles exported from the console, by outcome (ok, failed)",
    ["outcome"],
)
