"""infra.audio: decoding + resampling, G.711, framing."""

from __future__ import annotations

import warnings
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.audio import (
    AudioFileError,
    decode_pcm,
    encode_pcm,
    frame_count,
    frames,
    load_audio,
)
from schemas.codecs import L16_16K, L16_24K, PCMA_8K, PCMU_8K, Codec

DATA = Path(__file__).parents[1] / "data"
JFK = DATA / "jfk.flac"
STEREO = DATA / "stereo_diarization.wav"
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Write int16 ``(channels, samples)`` as a PCM16 WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[0])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.T.astype("<i2").tobytes())
    return path


# -- load_audio ------------------------------------------------------------------------


def test_load_audio_is_deterministic() -> None:
    first = load_audio(JFK, 24000)
    second = load_audio(JFK, 24000)
    assert first.dtype == np.int16
    assert np.array_equal(first, second)


@pytest.mark.parametrize(
    ("path", "rate", "shape"),
    [
        (JFK, 24000, (2, 264000)),  # 485100 samples at 44.1 kHz
        (JFK, 8000, (2, 88000)),
        (STEREO, 24000, (2, 120000)),  # 80000 samples at 16 kHz
        (STEREO, 8000, (2, 40000)),
    ],
)
def test_load_audio_resamples_to_the_expected_length(path: Path, rate: int, shape: tuple) -> None:
    assert load_audio(path, rate).shape == shape


def test_load_audio_at_the_file_rate_is_bit_exact() -> None:
    with wave.open(str(STEREO)) as wav:
        raw = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert np.array_equal(load_audio(STEREO, 16000), raw.reshape(-1, 2).T)


def test_load_audio_keeps_channel_order(tmp_path: Path) -> None:
    left = np.full(1600, 1000, dtype=np.int16)
    right = np.full(1600, -2000, dtype=np.int16)
    path = write_wav(tmp_path / "lr.wav", np.stack([left, right]), 16000)
    audio = load_audio(path, 16000)
    assert (audio[0] == 1000).all()
    assert (audio[1] == -2000).all()


def test_load_audio_resampling_keeps_a_tone(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    tone = np.rint(10000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    path = write_wav(tmp_path / "tone.wav", tone[None, :], 16000)
    audio = load_audio(path, 24000)
    assert audio.shape == (1, 24000)
    middle = audio[0, 2400:-2400].astype(np.float64)  # away from the filter's edges
    spectrum = np.abs(np.fft.rfft(middle))
    peak_hz = np.argmax(spectrum) * 24000 / len(middle)
    assert peak_hz == pytest.approx(1000, abs=2)
    assert np.max(np.abs(middle)) == pytest.approx(10000, rel=0.01)


def test_load_audio_clips_instead_of_wrapping(tmp_path: Path) -> None:
    square = np.tile(np.r_[np.full(20, 32767), np.full(20, -32768)], 400).astype(np.int16)
    audio = load_audio(write_wav(tmp_path / "loud.wav", square[None, :], 16000), 24000)
    # Resampling a full-scale square overshoots (Gibbs); clipped samples stay at the rails.
    assert audio.max() == 32767
    assert audio.min() == -32768
    assert np.sign(audio[0, 6:24]).tolist() == [1] * 18


def test_load_audio_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="cannot open"):
        load_audio(tmp_path / "absent.wav", 24000)


def test_load_audio_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not audio at all\n" * 20)
    with pytest.raises(AudioFileError):
        load_audio(path, 24000)


# -- encode_pcm / decode_pcm -----------------------------------------------------------


def test_l16_is_little_endian() -> None:
    samples = np.array([1, -2, 256], dtype=np.int16)
    data = encode_pcm(samples, L16_24K)
    assert data == b"\x01\x00\xfe\xff\x00\x01"
    assert np.array_equal(decode_pcm(data, L16_16K), samples)


@pytest.mark.parametrize(
    ("codec", "value", "code"),
    [
        (PCMU_8K, 0, 0xFF),
        (PCMU_8K, -1, 0x7E),
        (PCMU_8K, 32767, 0x80),
        (PCMU_8K, -32768, 0x00),
        (PCMU_8K, 1000, 0xCE),
        (PCMA_8K, 0, 0xD5),
        (PCMA_8K, -1, 0x55),
        (PCMA_8K, 32767, 0xAA),
        (PCMA_8K, -32768, 0x2A),
        (PCMA_8K, 1000, 0xFA),
    ],
)
def test_g711_encode_known_values(codec: Codec, value: int, code: int) -> None:
    assert encode_pcm(np.array([value], dtype=np.int16), codec) == bytes([code])


@pytest.mark.parametrize(
    ("codec", "code", "value"),
    [
        (PCMU_8K, 0xFF, 0),
        (PCMU_8K, 0x7F, 0),
        (PCMU_8K, 0x80, 32124),
        (PCMU_8K, 0x00, -32124),
        (PCMU_8K, 0xCE, 988),
        (PCMA_8K, 0xD5, 8),
        (PCMA_8K, 0x55, -8),
        (PCMA_8K, 0xAA, 32256),
        (PCMA_8K, 0x2A, -32256),
        (PCMA_8K, 0xFA, 1008),
    ],
)
def test_g711_decode_known_values(codec: Codec, code: int, value: int) -> None:
    assert decode_pcm(bytes([code]), codec).tolist() == [value]


@pytest.mark.parametrize("codec", [PCMU_8K, PCMA_8K])
def test_g711_round_trip_error_is_within_the_segment_step(codec: Codec) -> None:
    decoded = decode_pcm(encode_pcm(ALL_INT16, codec), codec).astype(np.int64)
    original = ALL_INT16.astype(np.int64)
    error = np.abs(decoded - original)
    # G.711 keeps 4 mantissa bits: the error is under 1/16 of the value (or the
    # smallest step near zero). Above ~32000 the codes saturate at the top level.
    in_range = np.abs(original) <= 32000
    assert (error[in_range] <= np.maximum(16, np.abs(original[in_range]) // 16)).all()
    assert error.max() <= 700


@pytest.mark.parametrize("codec", [PCMU_8K, PCMA_8K])
def test_g711_every_code_survives_a_round_trip(codec: Codec) -> None:
    levels = decode_pcm(bytes(range(256)), codec)
    assert np.array_equal(decode_pcm(encode_pcm(levels, codec), codec), levels)


@pytest.mark.parametrize("codec", [PCMU_8K, PCMA_8K])
def test_g711_is_monotonic(codec: Codec) -> None:
    decoded = decode_pcm(encode_pcm(ALL_INT16, codec), codec)
    assert (np.diff(decoded.astype(np.int64)) >= 0).all()


def test_g711_matches_the_reference_implementation() -> None:
    """Bit for bit what CPython's audioop (Sun's g711.c) gives, where it still exists."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    pcm = ALL_INT16.astype("<i2").tobytes()
    codes = bytes(range(256))
    assert encode_pcm(ALL_INT16, PCMU_8K) == audioop.lin2ulaw(pcm, 2)
    assert encode_pcm(ALL_INT16, PCMA_8K) == audioop.lin2alaw(pcm, 2)
    assert decode_pcm(codes, PCMU_8K).astype("<i2").tobytes() == audioop.ulaw2lin(codes, 2)
    assert decode_pcm(codes, PCMA_8K).astype("<i2").tobytes() == audioop.alaw2lin(codes, 2)


def test_encode_pcm_takes_one_channel() -> None:
    with pytest.raises(ValueError, match="one channel"):
        encode_pcm(np.zeros((2, 10), dtype=np.int16), L16_24K)


def test_decode_l16_rejects_half_samples() -> None:
    with pytest.raises(ValueError, match="whole"):
        decode_pcm(b"\x00\x00\x00", L16_24K)


# -- frames ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "size"), [(L16_24K, 960), (L16_16K, 640), (PCMU_8K, 160), (PCMA_8K, 160)]
)
def test_frames_are_20_ms(codec: Codec, size: int) -> None:
    pcm = bytes(range(256)) * 20  # 5120 bytes
    cut = frames(pcm, codec)
    assert [len(f) for f in cut[:-1]] == [size] * (len(cut) - 1)
    assert 0 < len(cut[-1]) <= size
    assert b"".join(cut) == pcm
    assert len(cut) == frame_count(len(pcm), codec)


def test_frames_last_frame_is_whole_samples() -> None:
    pcm = bytes(960 * 2 + 482)
    cut = frames(pcm, L16_24K)
    assert [len(f) for f in cut] == [960, 960, 482]


def test_frames_rejects_half_samples() -> None:
    with pytest.raises(ValueError, match="whole"):
        frames(bytes(961), L16_24K)


def test_frames_of_nothing() -> None:
    assert frames(b"", L16_24K) == []
    assert frame_count(0, L16_24K) == 0


@given(samples=st.integers(min_value=0, max_value=5000), frame_ms=st.sampled_from([10, 20, 30]))
def test_frames_cover_the_audio_exactly(samples: int, frame_ms: int) -> None:
    pcm = bytes(range(256)) * (samples * 2 // 256 + 1)
    pcm = pcm[: samples * 2]
    cut = frames(pcm, L16_16K, frame_ms)
    assert b"".join(cut) == pcm
    assert all(len(f) == L16_16K.frame_bytes(frame_ms) for f in cut[:-1])
    assert all(len(f) % 2 == 0 for f in cut)
    assert len(cut) == frame_count(len(pcm), L16_16K, frame_ms)
