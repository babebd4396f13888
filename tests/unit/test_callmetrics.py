"""Call metrics on synthetic signals whose answers are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.analyzer import callmetrics
from workers.analyzer.callmetrics import TalkDetector

RATE = 8000


def tone(ms: int, dbfs: float = -20.0, rate: int = RATE, hz: float = 440.0) -> np.ndarray:
    """A sine whose RMS is ``dbfs``."""
    t = np.arange(ms * rate // 1000) / rate
    amplitude = 32768 * 10 ** (dbfs / 20) * math.sqrt(2)
    return np.rint(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def track(length_ms: int, *bursts: tuple[int, int], rate: int = RATE,
          noise_dbfs: float | None = None) -> np.ndarray:
    """``length_ms`` of silence (or white noise) with tone bursts at (start_ms, end_ms)."""
    if noise_dbfs is None:
        x = np.zeros(length_ms * rate // 1000, dtype=np.int16)
    else:
        rng = np.random.default_rng(7)
        sigma = 32768 * 10 ** (noise_dbfs / 20)
        x = np.rint(rng.normal(0, sigma, length_ms * rate // 1000)).astype(np.int16)
    for start, end in bursts:
        x[start * rate // 1000 : end * rate // 1000] += tone(end - start, rate=rate)
    return x


def test_frame_levels_use_full_scale_32768() -> None:
    square = np.full(RATE, 32767, dtype=np.int16)
    assert callmetrics.frame_levels(square, RATE)[0] == pytest.approx(0.0, abs=0.001)
    assert callmetrics.frame_levels(tone(1000, -20.0), RATE).mean() == pytest.approx(-20, abs=0.05)
    assert callmetrics.frame_levels(np.zeros(80, np.int16), RATE)[0] == callmetrics.SILENT_DB
    assert len(callmetrics.frame_levels(np.zeros(85, np.int16), RATE)) == 2, "partial frame"


def test_tone_bursts_are_found_to_the_frame() -> None:
    x = track(5000, (1000, 2500), (3200, 4000))
    assert callmetrics.detect_talk(x, RATE) == [(1000, 2500), (3200, 4000)]


def test_short_pauses_are_bridged_and_clicks_dropped() -> None:
    x = track(5000, (500, 1000), (1200, 1800), (3000, 3030))
    # 200 ms pause < 300 ms bridge: one interval; the 30 ms click is under min_speech_ms.
    assert callmetrics.detect_talk(x, RATE) == [(500, 1800)]
    wide = TalkDetector(bridge_ms=100, min_speech_ms=20)
    assert callmetrics.detect_talk(x, RATE, wide) == [(500, 1000), (1200, 1800), (3000, 3030)]


def test_the_threshold_follows_the_noise_floor() -> None:
    noisy = track(6000, (1000, 3000), noise_dbfs=-45.0)
    levels = callmetrics.frame_levels(noisy, RATE)
    # floor ~ -45.8 dBFS (10th percentile of 10 ms frames of -45 dBFS noise) + 15 dB
    assert callmetrics.speech_threshold(levels, TalkDetector()) == pytest.approx(-30.8, abs=0.5)
    [(start, end)] = callmetrics.detect_talk(noisy, RATE)
    assert abs(start - 1000) <= 10 and abs(end - 3000) <= 10
    quiet = track(6000, (1000, 3000), noise_dbfs=-70.0)
    threshold = callmetrics.speech_threshold(callmetrics.frame_levels(quiet, RATE), TalkDetector())
    assert threshold == -50.0, "floor ~ -70.8 + 15 is below the -50 dBFS floor_dbfs"


def test_a_channel_that_is_all_speech_is_all_talk() -> None:
    assert callmetrics.detect_talk(tone(3000), RATE) == [(0, 3000)]
    assert callmetrics.detect_talk(np.zeros(RATE * 3, np.int16), RATE) == []
    assert callmetrics.detect_talk(np.zeros(0, np.int16), RATE) == []


def test_conversation_figures_from_known_intervals() -> None:
    caller = [(0, 4000), (9000, 10000)]
    agent = [(3000, 6000), (6500, 7000)]
    (c, a), call = callmetrics.conversation([caller, agent], duration_ms=12000)
    assert (c.talk_ms, c.silence_ms, c.overtalk_ms) == (5000, 7000, 0)
    assert (a.talk_ms, a.silence_ms) == (3500, 8500)
    assert (c.interruptions, a.interruptions) == (0, 1), "agent started at 3 s, caller talking"
    assert a.longest_monologue_ms == 4000, "3-6 s and 6.5-7 s: one turn, the caller is silent"
    assert c.longest_monologue_ms == 4000
    assert call.talk_ms == 7500 and call.silence_ms == 4500
    assert call.overtalk_ms == 1000 and call.interruptions == 1
    assert call.longest_monologue_ms == 4000


def test_a_turn_ends_when_the_other_side_speaks_in_the_pause() -> None:
    own = [(0, 1000), (1500, 2500)]
    assert callmetrics.longest_monologue(own, [], 1000) == 2500
    assert callmetrics.longest_monologue(own, [(1100, 1300)], 1000) == 1000
    assert callmetrics.longest_monologue(own, [(200, 400)], 1000) == 2500, "backchannel"
    assert callmetrics.longest_monologue(own, [], 400) == 1000, "pause too long"


def test_one_track_has_no_overtalk_or_interruptions() -> None:
    [only], call = callmetrics.conversation([[(100, 900)]], duration_ms=1000)
    assert (only.talk_ms, only.interruptions, call.overtalk_ms, call.silence_ms) == (800, 0, 0, 200)


def test_levels_and_clipping() -> None:
    x = np.array([32767, -32768, 0, 16384], dtype=np.int16)
    levels = callmetrics.levels([x])
    assert levels.clipping_ratio == 0.5
    assert levels.peak_dbfs == pytest.approx(0.0, abs=0.001)
    rms = math.sqrt((32767**2 + 32768**2 + 16384**2) / 4)
    assert levels.rms_dbfs == pytest.approx(20 * math.log10(rms / 32768), abs=0.001)
    silent = callmetrics.levels([np.zeros(10, np.int16)])
    assert (silent.rms_dbfs, silent.peak_dbfs, silent.clipping_ratio) == (None, None, 0.0)
    assert callmetrics.levels([]).rms_dbfs is None
    assert callmetrics.levels([np.array([32124], np.int16)], clip_level=32124).clipping_ratio == 1


def test_words_per_minute() -> None:
    assert callmetrics.words_per_minute(30, 12_000) == 150.0
    assert callmetrics.words_per_minute(5, 0) is None


intervals = st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 500)), max_size=20).map(
    lambda pairs: callmetrics.union([(s, s + n) for s, n in pairs])
)


@given(intervals, intervals)
def test_interval_algebra_matches_a_sample_grid(a: list[tuple[int, int]],
                                                b: list[tuple[int, int]]) -> None:
    grid_a = np.zeros(11_000, bool)
    grid_b = np.zeros(11_000, bool)
    for s, e in a:
        grid_a[s:e] = True
    for s, e in b:
        grid_b[s:e] = True
    assert callmetrics.total(callmetrics.intersect(a, b)) == int((grid_a & grid_b).sum())
    assert callmetrics.total(callmetrics.union(a, b)) == int((grid_a | grid_b).sum())
    _, call = callmetrics.conversation([a, b], 11_000)
    assert call.overtalk_ms + call.talk_ms == callmetrics.total(a) + callmetrics.total(b)
