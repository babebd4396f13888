"""Settings: CALLREC_* parsing, and the configuration page kept in sync with the code."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from callrec.settings import SERVICES, IngestSettings, RecorderSettings, reference_markdown

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_configuration_page_is_generated_from_the_settings() -> None:
    assert DOCS.read_text() == reference_markdown(), (
        "docs/configuration.md is stale: python -m callrec.settings > docs/configuration.md"
    )


def test_every_setting_has_a_description() -> None:
    for service, cls in SERVICES.items():
        for name, info in cls.model_fields.items():
            assert info.description, f"{service}: CALLREC_{name.upper()} has no docstring"


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
