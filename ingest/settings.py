"""Settings of ``callrec ingest``."""

from __future__ import annotations

import socket
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from infra.settings import KafkaSettings, ProcessSettings, StreamTokenSettings
from schemas.codecs import CODECS


class IngestSettings(ProcessSettings, KafkaSettings, StreamTokenSettings):
    """``callrec ingest``: the WebSocket server Wavix streams to."""

    ingest_host: str = "0.0.0.0"
    """Address the WebSocket server binds."""
    ingest_port: int = Field(default=8080, ge=0, le=65535)
    """Port of ``/v1/stream``, ``/healthz``, ``/readyz`` and ``/metrics`` (0 = any free port)."""
    ingest_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """Comma-separated stream tokens accepted in ``?token=`` or the path ``/v1/stream/<token>``.
    Without any, ingest refuses to start unless ``CALLREC_INGEST_ALLOW_ANONYMOUS`` is true
    or it binds a loopback address only (``CALLREC_INGEST_HOST=127.0.0.1``)."""
    ingest_allow_anonymous: bool = False
    """Accept streams without a token when ``CALLREC_INGEST_TOKENS`` is empty, on any
    address (anyone who reaches the port can then record into the archive; logged as a
    warning). Off: ingest without tokens starts only on a loopback address."""
    ingest_pod_name: str = Field(default_factory=socket.gethostname)
    """Name recorded as custody in every stream record (the Kubernetes pod name)."""
    ingest_codec: str = "L16/24000"
    """Codec of incoming media payloads: L16/24000 (Wavix), L16/16000, PCMU/8000, PCMA/8000."""
    ingest_max_message_bytes: int = Field(default=65536, ge=1024)
    """Largest WebSocket message accepted; a bigger one closes the connection with 1009."""
    ingest_max_inflight_bytes: int = Field(default=32 * 1024 * 1024, ge=65536)
    """Audio bytes handed to the Kafka producer and not yet acknowledged, per process. When
    reached, ingest stops reading sockets (backpressure) until Kafka catches up."""
    ingest_socket_receive_bytes: int = Field(default=65536, ge=0)
    """Kernel receive buffer of each stream socket (``SO_RCVBUF``; 0: the kernel's
    autotuning, up to megabytes). It bounds what one read brings in after a pause for
    backpressure, and so the read buffer a stream keeps (~2 reads); 64 KiB holds ~0.5 s
    of a two-track stream, far above what a Wavix link needs in flight."""
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
    ingest_coalesce_ms: float = Field(default=100.0, ge=0, le=1000)
    """Consecutive media frames of a stream are written as one Kafka record (``MediaBatch``)
    for up to this long: a frame reaches ``callrec.media`` up to this much later, and Kafka,
    ingest and the recorder handle a record per window instead of per 20 ms frame. Flushed
    at once on stop, mark, close, drain and backpressure. 0 writes one ``MediaChunk`` record
    per frame (what recorders older than the ``MediaBatch`` record read)."""
    ingest_coalesce_max_frames: int = Field(default=50, ge=1, le=1000)
    """Frames in one coalesced record at most (also capped at 64 KiB of audio); a full
    record is written at once. Matters when a sender bursts (catching up after backpressure)."""
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
