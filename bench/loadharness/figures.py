"""What a run's services counted and logged, summed up for its result (bench/loadharness/run.py).

The counters are deltas of each process's ``/metrics`` over the run (first to last
sample, bench/harness/sampler.py), summed over the processes of a kind; the log
figures count lines in the run's log files.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness.promstats import metric_by_label, metric_sum


def ingest_figures(deltas: list[Any]) -> dict[str, Any]:
    def total(name: str) -> float:
        return sum(metric_sum(d, name) for d in deltas)

    def by(name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for d in deltas:
            for k, v in metric_by_label(d, name, label).items():
                if v:
                    out[k] = out.get(k, 0.0) + v
        return out

    return {
        "records": total("callrec_ingest_records_total"),
        "invalid": by("callrec_ingest_invalid_messages_total", "reason"),
        "close_codes": by("callrec_ingest_close_codes_total", "code"),
        "connections": by("callrec_ingest_connections_total", "outcome"),
        "streams_closed": by("callrec_ingest_streams_closed_total", "reason"),
        "produce_retries": total("callrec_ingest_produce_retries_total"),
        "produce_failures": total("callrec_ingest_produce_failures_total"),
        "backpressure_s": round(total("callrec_ingest_backpressure_seconds_total"), 2),
    }


def recorder_figures(deltas: list[Any]) -> dict[str, Any]:
    def total(name: str) -> float:
        return sum(metric_sum(d, name) for d in deltas)

    outcomes: dict[str, float] = {}
    for d in deltas:
        for k, v in metric_by_label(d, "callrec_recorder_recordings_total", "outcome").items():
            if v:
                outcomes[k] = outcomes.get(k, 0.0) + v
    return {
        "recordings": outcomes,
        "records": total("callrec_recorder_records_total"),
        "late_records": total("callrec_recorder_late_records_total"),
        "s3_errors": total("callrec_recorder_s3_errors_total"),
        "bad_records": total("callrec_recorder_bad_records_total"),
    }


def hostile_figures(results: list[dict[str, Any]]) -> dict[str, Any]:
    cases: dict[str, dict[str, Any]] = {}
    for r in results:
        c = cases.setdefault(r["case"], {"clients": 0, "as_documented": 0, "seen": []})
        c["clients"] += 1
        c["as_documented"] += bool(r["ok"])
        if r["got"] not in c["seen"] and len(c["seen"]) < 3:
            c["seen"].append(r["got"])
    return cases


def log_errors(workdir: Path, prefix: str) -> dict[str, int]:
    """ERROR lines in the logs of the ``prefix`` processes, by logger."""
    counts: Counter[str] = Counter()
    for path in workdir.glob(f"{prefix}*.log"):
        with path.open(errors="replace") as f:
            for line in f:
                if " ERROR " in line:
                    counts[line.split(" ERROR ", 1)[1].split(":", 1)[0]] += 1
    return dict(counts)

def log_counts(workdir: Path, prefix: str, needles: tuple[str, ...]) -> dict[str, int]:
    """Lines of the ``prefix`` processes' logs that contain each needle."""
    counts = dict.fromkeys(needles, 0)
    for path in workdir.glob(f"{prefix}*.log"):
        with path.open(errors="replace") as f:
            for line in f:
                for needle in needles:
                    if needle in line:
                        counts[needle] += 1
    return {k: v for k, v in counts.items() if v}
