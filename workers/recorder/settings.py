"""Settings of ``callrec recorder``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field

from infra.settings import ArchiveSettings, KafkaSettings, ProcessSettings


class RecorderSettings(ProcessSettings, KafkaSettings, ArchiveSettings):
    """``callrec recorder``: reassembles calls from Kafka and archives them."""

    recorder_group_id: str = "callrec-recorder"
    """Kafka consumer group; recorders in one group share the media topic's partitions."""
    recorder_spill_dir: str = Field(
        default_factory=lambda: str(Path(tempfile.gettempdir()) / "callrec-recorder")
    )
    """Local disk for open tracks (RAM stays flat in call length). Needs room for the
    open calls' audio: ~46 KiB per second per track at L16/24000."""
    recorder_grace_ms: int = Field(default=500, ge=0)
    """After a call's last stream closed, a stream starting within this time (by record
    time) still joins the same recording; later ones start a new part."""
    recorder_idle_timeout_s: float = Field(default=60.0, gt=0)
    """A call with open streams but no record for this long is finalized as incomplete
    (its ingest pod vanished without writing close records)."""
    recorder_reorder_window_ms: int = Field(default=100, ge=20)
    """Audio kept in RAM per track for reordering before it is written to the spill file.
    A chunk later than this still lands in its place (a late run, merged when the
    recording is finalized): the window only saves that work for small reorderings, and
    a stream over one WebSocket arrives in order. 100 ms spent 7-9 % less recorder CPU
    than 500 ms at 400 calls (docs/benchmarks.md)."""
    recorder_fetch_min_bytes: int = Field(default=256 * 1024, ge=1)
    """The broker holds a fetch until this much is ready (or until
    ``CALLREC_RECORDER_FETCH_MAX_WAIT_MS``): at low load the recorder then handles a few
    large fetches a second instead of one per produce request (~0.3 ms of CPU each)."""
    recorder_fetch_max_wait_ms: int = Field(default=100, ge=0, le=1000)
    """Longest a fetch waits for ``CALLREC_RECORDER_FETCH_MIN_BYTES``; it adds at most this
    much to stop → archive."""
    recorder_session_timeout_ms: int = Field(default=10000, ge=1000)
    """Kafka group session timeout: how soon a crashed recorder's partitions move on
    (the broker's group.min.session.timeout.ms, 6 s by default, is the floor)."""
    recorder_commit_interval_s: float = Field(default=1.0, gt=0)
    """How often safe offsets are committed."""
    recorder_max_parallel_archives: int = Field(default=4, ge=1)
    """Recordings written to the archive at once (each in a worker thread)."""
    recorder_shutdown_grace_s: float = Field(default=20.0, ge=0)
    """On SIGTERM, recordings being archived may finish for this long; the rest are
    replayed by the partitions' next owner."""
    recorder_host: str = "0.0.0.0"
    """Address of the probes and metrics server."""
    recorder_port: int = Field(default=9091, ge=0, le=65535)
    """Port of ``/healthz``, ``/readyz`` and ``/metrics``."""
