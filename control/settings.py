"""Settings of ``callrec control`` (the webhook/API pods and the controller)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from infra.settings import ArchiveSettings, KafkaSettings, StreamTokenSettings


class ControlSettings(KafkaSettings, ArchiveSettings, StreamTokenSettings):
    """``callrec control``: Wavix call events, recording rules, stream starts."""

    control_host: str = "0.0.0.0"
    """Address the HTTP server binds."""
    control_port: int = Field(default=8090, ge=0, le=65535)
    """Port of the webhook, the control API, ``/healthz``, ``/readyz`` and ``/metrics``."""
    control_webhook_secret: SecretStr | None = None
    """The secret path segment of the webhook URL given to Wavix:
    ``https://HOST/v1/wavix/events/<secret>`` (32+ random characters). Unset: no webhook."""
    control_api_token: SecretStr | None = None
    """Bearer token of the control API (``/v1/calls/{id}/pause``, ``/resume``). Unset: the
    API answers 401 to everything."""
    control_max_body_bytes: int = Field(default=65536, ge=1024)
    """Largest webhook body accepted; a bigger one is answered 413."""
    control_role: Literal["all", "api", "controller"] = "all"
    """What this process runs: the HTTP service, the controller, or both."""
    kafka_calls_topic: str = "callrec.calls"
    """Topic of accepted call events (key = call id)."""
    kafka_control_topic: str = "callrec.control"
    """Compacted topic of the controller's per-call state (key = call id)."""
    control_group_id: str = "callrec-controller"
    """Consumer group of the controllers."""
    control_session_timeout_ms: int = Field(default=10_000, ge=1000)
    """Kafka session timeout: how soon a dead controller's calls move to another."""
    control_stream_url: str = "ws://127.0.0.1:8080/v1/stream"
    """The public ``wss://`` URL of ingest's ``/v1/stream`` that Wavix connects to; a
    per-call token is added as ``?token=``."""
    control_stream_type: Literal["oneway", "twoway"] = "oneway"
    """Stream type asked of Wavix (oneway: callrec only listens)."""
    control_record_all: bool = True
    """Without a rules file: record every answered call (True) or none (False)."""
    control_rules_file: str | None = None
    """TOML file of recording rules (docs/control.md, "Recording rules"); overrides
    ``CALLREC_CONTROL_RECORD_ALL``."""
    control_stream_channel: Literal["inbound", "outbound", "both"] = "both"
    """Stream channel of ``record all`` and of rules that name none."""
    control_confirm_events: bool = False
    """Confirm an ``answered`` event with ``GET /v1/calls/{id}`` before starting a stream
    (the webhook carries no signature)."""
    control_forward_url: str | None = None
    """Forward every webhook body to this URL too (a Wavix number has one callback URL)."""
    control_forward_attempts: int = Field(default=5, ge=1)
    """Tries per forwarded event (back-off doubling from 0.5 s); then it is dropped, counted."""
    control_forward_queue: int = Field(default=10_000, ge=1)
    """Forwarded events waiting at most; more are dropped, counted (recording never waits)."""
    control_table_interval_s: float = Field(default=1.0, gt=0)
    """How often finished calls' rows are written to the ``control`` table."""
    wavix_api_url: str = "https://api.wavix.com"
    """Base URL of Wavix's REST API."""
    wavix_api_key: SecretStr | None = None
    """Wavix API key (a secret)."""
    wavix_auth_style: Literal["bearer", "appid"] = "bearer"
    """How the key is sent: ``Authorization: Bearer`` or ``?appid=`` (older Wavix pages)."""
    wavix_path_style: Literal["calls", "call"] = "calls"
    """``/v1/calls/{id}/...`` (API reference) or ``/v1/call/{id}/...`` (older pages)."""
    wavix_timeout_s: float = Field(default=5.0, gt=0)
    """Timeout of one Wavix request."""
    wavix_max_attempts: int = Field(default=5, ge=1)
    """Tries of a request answered 5xx or timed out; a 4xx is never retried."""
    wavix_backoff_s: float = Field(default=0.2, ge=0)
    """First retry delay; doubles per try."""
