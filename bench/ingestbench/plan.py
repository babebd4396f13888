"""What the ingest benchmark runs (full or ``--quick``) and the targets it checks.

The targets are those of docs/benchmarks.md ("## Ingest"), explained in bench/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass

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
