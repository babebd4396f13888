"""The analyzer reads a WAV a window at a time and finds exactly what reading it whole found;
the model never gets more than one window of a long track."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from infra.audio import encode_pcm
from infra.store.local import LocalStore
from infra.wav import WavReader, read_wav, write_wav
from schemas.codecs import L16_24K, PCMU_8K, Codec
from tests.analyzerutil import FakeTranscriber, archive_call, pcm
from tests.unit.test_callmetrics import track
from workers.analyzer import callmetrics, tracks
from workers.analyzer.analysis import AnalysisConfig, analyze_recording, clip_level
from workers.analyzer.transcribe import Segment


def wav_file(tmp_path: Path, codec: Codec, channels: list[npt.NDArray[np.int16]]) -> Path:
    raws = []
    for i, samples in enumerate(channels):
        raw = tmp_path / f"ch{i}.raw"
        raw.write_bytes(encode_pcm(samples, codec))
        raws.append(raw)
    out = tmp_path / "audio.wav"
    write_wav(out, codec, raws, [r.stat().st_size for r in raws])
    return out


@pytest.mark.parametrize("codec", [L16_24K, PCMU_8K])
def test_windowed_scan_equals_the_whole_track_figures(
    tmp_path: Path, codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    rate = codec.sample_rate
    # Windows of ~1 s (not a multiple of anything in the audio) over 7.3 s of speech bursts.
    monkeypatch.setattr(tracks, "SCAN_FRAMES", rate + 7)
    inbound = track(7300, (500, 2500), (4000, 6100), rate=rate, noise_dbfs=-60)
    outbound = track(7000, (2000, 4200), rate=rate)
    path = wav_file(tmp_path, codec, [inbound, outbound])
    whole = read_wav(path.read_bytes(), codec, 2)  # what the analyzer read before
    detector = callmetrics.TalkDetector()
    with path.open("rb") as f:
        reader = WavReader(f, codec, 2)
        scanned = tracks.scan(reader, rate, detector, clip_level(codec))
        assert [
            np.array_equal(a, b) for a, b in zip(reader.read(0, reader.frames), whole, strict=True)
        ] == [True, True]
    assert scanned.frames == whole[0].size
    for c in range(2):
        assert scanned.talk[c] == callmetrics.detect_talk(whole[c], rate, detector)
        assert scanned.meters[c].levels() == callmetrics.levels([whole[c]], clip_level(codec))
    both = tracks.LevelMeter.merged(*scanned.meters).levels()
    assert both == callmetrics.levels(whole, clip_level(codec))


class RecordingTranscriber(FakeTranscriber):
    """Says where each window's sound starts, and remembers the longest input."""

    def __init__(self) -> None:
        super().__init__()
        self.longest = 0

    def transcribe(self, audio: npt.NDArray[np.float32]) -> list[Segment]:
        self.longest = max(self.longest, audio.size)
        return super().transcribe(audio)


def test_a_long_track_reaches_the_model_in_windows_cut_in_pauses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracks, "MODEL_WINDOW_MS", 4000)
    store = LocalStore(tmp_path / "archive")
    rate = L16_24K.sample_rate
    # 11 s with talk at 1-2 s, 4.5-5.5 s and 8-9 s: windows must be cut in the pauses.
    samples = track(11000, (1000, 2000), (4500, 5500), (8000, 9000), rate=rate)
    event = archive_call(store, "long-1", {"inbound": pcm(samples)}, tmp_path)
    transcriber = RecordingTranscriber()
    monkeypatch.setattr(
        "workers.analyzer.analysis.model_windows",
        lambda f, r, t: tracks.model_windows(f, r, t, window_ms=4000),
    )
    result = analyze_recording(store, event, transcriber, AnalysisConfig())
    # Cuts at 3.25 s, 6.75 s and 10 s: the middle of the pauses before each 4 s limit.
    assert transcriber.calls == 4 and transcriber.longest <= 4 * 16000
    from infra.parquet import read_parquet

    rows = read_parquet(store.get_bytes(result.keys[0])).to_pylist()
    assert [(r["start_ms"], r["end_ms"]) for r in rows] == [
        (1000, 2000),
        (4500, 5500),
        (8000, 9000),
    ]


def test_windows_cover_the_track_and_stay_whole_when_short() -> None:
    rate = 8000
    assert tracks.model_windows(rate * 600, rate, []) == [(0, rate * 600)]
    windows = tracks.model_windows(rate * 1500, rate, [(100_000, 700_000)])
    assert windows[0][0] == 0 and windows[-1][1] == rate * 1500
    assert all(b - a <= rate * 600 for a, b in windows)
    assert all(a == prev_b for (_, prev_b), (a, _) in itertools.pairwise(windows))
