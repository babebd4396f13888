"""``CALLREC_ANALYZER_*`` from the environment reach the analysis and the model."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from infra.parquet import read_parquet
from infra.store.local import LocalStore
from tests.analyzerutil import FakeTranscriber, archive_call, pcm
from tests.unit.test_callmetrics import track
from workers.analyzer.analysis import analyze_recording
from workers.analyzer.settings import AnalyzerSettings
from workers.analyzer.transcribe import TranscriberConfig


def test_model_options_from_the_environment_reach_the_transcriber_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in (("MODEL", "/models/large-v3"), ("DEVICE", "cuda"),
                        ("COMPUTE_TYPE", "int8_float16"), ("CPU_THREADS", "3"),
                        ("BATCH_SIZE", "16"), ("BEAM_SIZE", "2"), ("LANGUAGE", "de")):
        monkeypatch.setenv(f"CALLREC_ANALYZER_{name}", value)
    assert AnalyzerSettings().transcriber_config() == TranscriberConfig(
        model="/models/large-v3", device="cuda", compute_type="int8_float16", cpu_threads=3,
        batch_size=16, beam_size=2, language="de",
    )


def test_defaults_are_the_bundled_model_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL", "DEVICE", "COMPUTE_TYPE", "LANGUAGE", "SPEAKER_LABELS"):
        monkeypatch.delenv(f"CALLREC_ANALYZER_{name}", raising=False)
    settings = AnalyzerSettings()
    assert settings.transcriber_config() == TranscriberConfig(
        model=None, device="cpu", compute_type=None, cpu_threads=0, batch_size=8, beam_size=5,
        language="en",
    )
    assert dict(settings.analysis_config().speaker_labels) == {"inbound": "caller",
                                                               "outbound": "agent"}


def test_an_unknown_device_or_compute_type_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLREC_ANALYZER_DEVICE", "tpu")
    with pytest.raises(pydantic.ValidationError, match="analyzer_device"):
        AnalyzerSettings()
    monkeypatch.setenv("CALLREC_ANALYZER_DEVICE", "cpu")
    monkeypatch.setenv("CALLREC_ANALYZER_COMPUTE_TYPE", "int4")
    with pytest.raises(pydantic.ValidationError, match="analyzer_compute_type"):
        AnalyzerSettings()


def test_speaker_labels_from_the_environment_name_the_speakers_in_the_segments_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("CALLREC_ANALYZER_SPEAKER_LABELS", " inbound = customer ,outbound=rep,")
    config = AnalyzerSettings().analysis_config()
    assert dict(config.speaker_labels) == {"inbound": "customer", "outbound": "rep"}

    store = LocalStore(tmp_path / "archive")
    store.check()
    tracks = {"inbound": pcm(track(3000, (200, 1200), rate=24000)),
              "outbound": pcm(track(3000, (1500, 2500), rate=24000))}
    event = archive_call(store, "labels", tracks, tmp_path)
    result = analyze_recording(store, event, FakeTranscriber(), config)
    rows = read_parquet(store.get_bytes(result.keys[0])).to_pylist()
    assert [(r["track"], r["speaker"]) for r in rows] == [("inbound", "customer"),
                                                          ("outbound", "rep")]


def test_a_speaker_label_that_is_not_track_equals_label_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLREC_ANALYZER_SPEAKER_LABELS", "inbound=caller,agent")
    with pytest.raises(pydantic.ValidationError, match="'agent' is not track=label"):
        AnalyzerSettings()
