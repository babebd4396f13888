"""Waveform peaks (infra/peaks.py): what a lane shows, from WAV bytes in any blocks."""

from __future__ import annotations

import numpy as np
import pytest

from infra.audio import encode_pcm
from infra.peaks import WINDOW_MS, decode_peaks, peaks_bytes, wav_peaks
from infra.wav import wav_header
from schemas.codecs import L16_24K, PCMU_8K, Codec


def wav(codec: Codec, channels: list[np.ndarray]) -> bytes:
    encoded = [
        np.frombuffer(encode_pcm(c, codec), dtype=np.uint8).reshape(len(c), -1) for c in channels
    ]
    frames = np.concatenate(encoded, axis=1).tobytes()
    return wav_header(codec, len(channels), len(frames)) + frames + b"\0" * (len(frames) & 1)


@pytest.mark.parametrize("block", [1, 7, 960, 1 << 20])
def test_peaks_per_window_and_channel_whatever_the_blocks(block: int) -> None:
    rate = L16_24K.sample_rate
    loud = np.zeros(rate, np.int16)
    loud[rate // 2 : rate // 2 + 10] = [32767, -32768] * 5  # one window at 500 ms
    quiet = np.full(rate, 256, np.int16)
    data = wav(L16_24K, [loud, quiet])
    peaks = wav_peaks(
        (data[i : i + block] for i in range(0, len(data), block)), L16_24K, ["inbound", "outbound"]
    )
    assert peaks.duration_ms == 1000 and peaks.window_ms == WINDOW_MS
    inbound, outbound = peaks.channels
    assert (inbound.track, outbound.track) == ("inbound", "outbound")
    assert len(inbound.max) == len(inbound.min) == 100
    assert (inbound.max[50], inbound.min[50]) == (127, -127)
    assert set(inbound.max[:50]) == {0}
    assert set(outbound.max) == set(outbound.min) == {1}
    assert decode_peaks(peaks_bytes(peaks)) == peaks


def test_g711_mono_with_a_partial_last_window() -> None:
    samples = (np.sin(np.arange(8000 + 40) / 5) * 20000).astype(np.int16)  # 1.005 s
    peaks = wav_peaks([wav(PCMU_8K, [samples])], PCMU_8K, ["inbound"])
    [channel] = peaks.channels
    assert len(channel.max) == 101 and peaks.duration_ms == 1005
    assert 70 < max(channel.max) <= 78 and -79 <= min(channel.min) < -70
