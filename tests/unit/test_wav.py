"""WAV encoding: headers readable by the stdlib, samples exactly as given, padding, limits."""

from __future__ import annotations

import hashlib
import struct
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.wav import (
    BLOCK_FRAMES,
    WAVE_FORMAT_ALAW,
    WAVE_FORMAT_MULAW,
    TrackFileError,
    WavTooLargeError,
    wav_header,
    write_wav,
)
from schemas.codecs import L16_16K, L16_24K, PCMA_8K, PCMU_8K, Codec


def write_tracks(tmp: Path, tracks: list[bytes]) -> list[Path]:
    paths = []
    for i, data in enumerate(tracks):
        path = tmp / f"t{i}.raw"
        path.write_bytes(data)
        paths.append(path)
    return paths


def samples(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-32768, 32767, n, dtype=np.int16)


@pytest.mark.parametrize("codec", [L16_24K, L16_16K])
def test_mono_l16_reads_back_with_the_wave_module(tmp_path, codec):
    data = samples(24_000, 1).astype("<i2").tobytes()
    out = tmp_path / "a.wav"
    size, sha = write_wav(out, codec, write_tracks(tmp_path, [data]), [len(data)])
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, codec.sample_rate)
        assert w.getnframes() == 24_000
        assert w.readframes(w.getnframes()) == data
    raw = out.read_bytes()
    assert size == len(raw) == 44 + len(data)
    assert sha == hashlib.sha256(raw).hexdigest()


def test_stereo_l16_interleaves_left_inbound_right_outbound_and_pads(tmp_path):
    n_left = 3 * BLOCK_FRAMES + 17  # several blocks, and a partial one
    left, right = samples(n_left, 2), samples(1000, 3)
    paths = write_tracks(tmp_path, [left.tobytes(), right.tobytes()])
    out = tmp_path / "s.wav"
    write_wav(out, L16_24K, paths, [left.nbytes, right.nbytes])
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getnframes()) == (2, n_left)
        got = np.frombuffer(w.readframes(n_left), "<i2").reshape(-1, 2)
    assert np.array_equal(got[:, 0], left)
    assert np.array_equal(got[:1000, 1], right)
    assert not got[1000:, 1].any(), "shorter track padded with silence"


@settings(deadline=None, max_examples=40)
@given(
    st.lists(st.binary(max_size=600).map(lambda b: b[: len(b) // 2 * 2]), min_size=1, max_size=2)
)
def test_l16_sample_data_equals_the_inputs(tracks):
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = tmp / "p.wav"
        write_wav(out, L16_16K, write_tracks(tmp, tracks), [len(t) for t in tracks])
        with wave.open(str(out)) as w:
            frames = w.readframes(w.getnframes())
    width = max(len(t) for t in tracks)
    padded = [t.ljust(width, b"\0") for t in tracks]
    expected = b"".join(b"".join(p[i : i + 2] for p in padded) for i in range(0, width, 2))
    assert frames == expected


@pytest.mark.parametrize(
    ("codec", "tag"), [(PCMU_8K, WAVE_FORMAT_MULAW), (PCMA_8K, WAVE_FORMAT_ALAW)]
)
def test_g711_header_has_its_format_tag_and_a_fact_chunk(tmp_path, codec, tag):
    left, right = bytes(range(1, 160)), bytes(range(1, 101))  # odd data size: pad byte
    out = tmp_path / "g.wav"
    size, _ = write_wav(out, codec, write_tracks(tmp_path, [left]), [len(left)])
    raw = out.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    assert struct.unpack("<I", raw[4:8])[0] == len(raw) - 8 == size - 8
    assert raw[12:16] == b"fmt " and struct.unpack("<I", raw[16:20])[0] == 18
    fmt = struct.unpack("<HHIIHHH", raw[20:38])
    assert fmt == (tag, 1, 8000, 8000, 1, 8, 0)
    assert raw[38:42] == b"fact" and struct.unpack("<II", raw[42:50]) == (4, len(left))
    assert raw[50:54] == b"data" and struct.unpack("<I", raw[54:58])[0] == len(left)
    assert raw[58 : 58 + len(left)] == left
    assert raw[-1:] == b"\0" and len(raw) == 58 + len(left) + 1

    write_wav(out, codec, write_tracks(tmp_path, [left, right]), [len(left), len(right)])
    data = np.frombuffer(out.read_bytes()[58:], "u1").reshape(-1, 2)
    assert data[:, 0].tobytes() == left
    assert data[:100, 1].tobytes() == right
    assert set(data[100:, 1].tolist()) == set(codec.silence_byte)


def test_header_refuses_what_a_riff_file_cannot_hold():
    limit = 2**32 - 1 - 36
    assert len(wav_header(L16_24K, 2, limit - limit % 4)) == 44
    with pytest.raises(WavTooLargeError):
        wav_header(L16_24K, 2, limit + 4 - limit % 4)
    with pytest.raises(ValueError):
        wav_header(L16_24K, 2, 6)  # not whole frames


def test_a_sixty_minute_stereo_call_fits():
    data = L16_24K.bytes_for_ms(3_600_000) * 2
    assert data == 345_600_000
    assert struct.unpack("<I", wav_header(L16_24K, 2, data)[4:8])[0] == 36 + data


def test_a_track_file_shorter_than_its_length_is_a_named_error(tmp_path):
    paths = write_tracks(tmp_path, [b"\0\0" * 10])
    with pytest.raises(TrackFileError):
        write_wav(tmp_path / "x.wav", L16_16K, paths, [40])


def test_no_audio_gives_a_valid_empty_wav(tmp_path):
    out = tmp_path / "e.wav"
    size, _ = write_wav(out, L16_16K, write_tracks(tmp_path, [b""]), [0])
    with wave.open(str(out)) as w:
        assert w.getnframes() == 0
    assert size == 44


def _codecs() -> list[Codec]:
    return [L16_24K, L16_16K, PCMU_8K, PCMA_8K]


@pytest.mark.parametrize("codec", _codecs())
def test_header_byte_rate_and_block_align(codec):
    header = wav_header(codec, 2, 0)
    _, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", header[20:36])
    assert (channels, rate) == (2, codec.sample_rate)
    assert align == 2 * codec.sample_width and bits == 8 * codec.sample_width
    assert byte_rate == rate * align
