"""Settings: CALLREC_* parsing, and the configuration page kept in sync with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from callrec.cli import build_parser
from callrec.configdoc import (
    COMMANDS,
    COMPLIANCE_COMMANDS,
    IGNORED,
    TOOL_VARIABLES,
    env_name,
    readers,
    reference_markdown,
)
from deploy.local import stack
from ingest.settings import IngestSettings
from workers.recorder.settings import RecorderSettings

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs" / "configuration.md"
SOURCES = ("callrec", "ingest", "workers", "schemas", "deploy", "scripts", "helm", "bench",
           "docs", "Dockerfile", "README.md")
"""Where CALLREC_* variables are read or set (the tests set them too, from these)."""
SUFFIXES = {".py", ".sh", ".yml", ".yaml", ".tpl", ".json", ".toml", ".md", ""}
VARIABLE = re.compile(r"\bCALLREC_[A-Z0-9_]*[A-Z0-9]\b(?![_*])")
"""A whole variable name: not a prefix written as ``CALLREC_S3_*``."""


def test_configuration_page_is_generated_from_the_settings() -> None:
    assert DOCS.read_text() == reference_markdown(), (
        "docs/configuration.md is stale: python -m callrec.configdoc > docs/configuration.md"
    )


def test_every_setting_has_a_description() -> None:
    for command, cls in COMMANDS.items():
        for name, info in cls.model_fields.items():
            assert info.description, f"{command}: CALLREC_{name.upper()} has no docstring"


def test_every_callrec_variable_named_in_the_repository_is_on_the_page() -> None:
    page = DOCS.read_text()
    documented = set(re.findall(r"^\| `(CALLREC_[A-Z0-9_]+)` \|", page, re.MULTILINE))
    named: dict[str, Path] = {}
    for root in SOURCES:
        top = ROOT / root
        files = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in files:
            if path.is_file() and path.suffix in SUFFIXES and path != DOCS:
                for name in VARIABLE.findall(path.read_text(errors="replace")):
                    named.setdefault(name, path.relative_to(ROOT))
    assert "CALLREC_ARCHIVE_URI" in named and "CALLREC_CACHE_DIR" in named
    missing = {name: str(path) for name, path in named.items() if name not in documented}
    assert not missing, f"named but not documented in docs/configuration.md: {missing}"


def test_every_variable_has_a_reader_and_every_exception_a_field() -> None:
    for command, ignored in IGNORED.items():
        fields = COMMANDS[command].model_fields
        assert set(ignored) <= set(fields), f"{command} ignores fields it does not have"
    for cls in COMMANDS.values():
        for name in cls.model_fields:
            assert readers(name), f"{env_name(name)} is read by nobody"
    compliance = list(COMPLIANCE_COMMANDS)
    assert readers("archive_uri") == ["recorder", "analyzer", "up", "control", "console",
                                      "query", *compliance]
    assert readers("kafka_bootstrap") == ["ingest", "recorder", "analyzer", "control"]
    assert readers("kafka_media_topic") == ["ingest", "recorder", "up", "control"]
    assert readers("recorder_spill_dir") == ["recorder"]
    assert readers("s3_object_lock_mode") == ["recorder", "analyzer", "up", "console",
                                              *compliance]
    assert readers("retention_days") == compliance


def test_the_tool_variables_are_the_ones_the_tools_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    names = {v.name: v for v in TOOL_VARIABLES}
    monkeypatch.setenv("CALLREC_SIMULATE_TOKEN", "from-the-environment")
    args = build_parser().parse_args(["simulate", "call.wav"])
    assert args.token == "from-the-environment"
    monkeypatch.setenv("CALLREC_CACHE_DIR", str(tmp_path / "cache"))
    assert stack.cache_dir() == (tmp_path / "cache").resolve()
    monkeypatch.delenv("CALLREC_CACHE_DIR")
    assert stack.cache_dir() == Path.home() / ".cache" / "callrec"
    assert names["CALLREC_CACHE_DIR"].default == "`~/.cache/callrec`"
    compose = (ROOT / "deploy" / "compose" / "docker-compose.yml").read_text()
    for var in TOOL_VARIABLES:
        if var.readers == "deploy/compose":
            assert f"${{{var.name}:-{var.default.strip('`')}}}" in compose, var.name


def test_environment_variables_configure_ingest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLREC_INGEST_TOKENS", " alpha, beta ,,")
    monkeypatch.setenv("CALLREC_INGEST_PORT", "9000")
    monkeypatch.setenv("CALLREC_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    settings = IngestSettings()
    assert [t.get_secret_value() for t in settings.ingest_tokens] == ["alpha", "beta"]
    assert settings.ingest_port == 9000 and settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert "alpha" not in repr(settings), "secrets never show in logs"


def test_an_unknown_codec_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLREC_INGEST_CODEC", "OPUS/48000")
    with pytest.raises(ValidationError, match="unknown codec"):
        IngestSettings()


def test_settings_are_frozen() -> None:
    settings = RecorderSettings()
    with pytest.raises(ValidationError):
        settings.recorder_grace_ms = 1  # type: ignore[misc]
