"""docs/configuration.md, generated from every command's settings class.

Knows every service, so it lives on the top floor; run
``python -m callrec.configdoc > docs/configuration.md`` after changing a setting
(tests/unit/test_settings.py fails while the page is stale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callrec.up import UpSettings
from compliance.settings import ComplianceSettings
from console.settings import ConsoleSettings
from control.settings import ControlSettings
from infra.settings import ArchiveSettings, ServiceSettings
from ingest.settings import IngestSettings
from workers.analyzer.settings import AnalyzerSettings
from workers.recorder.settings import RecorderSettings

COMPLIANCE_COMMANDS = ("verify", "hold", "retention", "erase", "export", "audit")
"""The compliance commands (docs/compliance.md); they share one settings class."""

SERVICES: dict[str, type[ServiceSettings]] = {
    "ingest": IngestSettings,
    "recorder": RecorderSettings,
    "analyzer": AnalyzerSettings,
    "up": UpSettings,
    "control": ControlSettings,
    "console": ConsoleSettings,
}
"""Each service (``callrec <name>``) and its settings class."""

COMMANDS: dict[str, type[ServiceSettings]] = {
    **SERVICES,
    "query": ArchiveSettings,
    **dict.fromkeys(COMPLIANCE_COMMANDS, ComplianceSettings),
}
"""Every command that reads a settings class: the services, ``callrec query`` and the
compliance commands (``callrec analyzer --backfill`` reads the analyzer's)."""

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
    "control": {
        "kafka_recordings_topic": "control reads call events and writes call lifecycle only",
        **dict.fromkeys(("s3_object_lock_mode", "s3_object_lock_days", "s3_legal_hold"),
                        "the control table holds no audio; recordings carry the retention"),
    },
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
        **dict.fromkeys(("recorder_session_timeout_ms", "analyzer_session_timeout_ms",
                         "control_session_timeout_ms"), _KAFKA_GROUP),
        "control_role": "up runs the webhook/API and the controller together",
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
        "CALLREC_CONTROL_URL", "`http://127.0.0.1:8090`", "pause, resume",
        "Base URL of the control API that `callrec pause` and `callrec resume` call (with "
        "the bearer token `CALLREC_CONTROL_API_TOKEN`).",
    ),
    ToolVariable(
        "CALLREC_SCREENSHOT_DIR", "(unset)", "tests/integration/test_console.py",
        "Also save the console's screenshots there (docs/img for docs/console.md); they "
        "always go to the test's tmp directory.",
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
        "`python -m callrec.configdoc > docs/configuration.md`; a test fails if it is stale.",
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
