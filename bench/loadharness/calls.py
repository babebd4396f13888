"""The audio of each simulated call, rebuilt identically by the sender and the verifier.

Call ``n`` carries ``tests/data/stereo_diarization.wav`` (left = inbound, right =
outbound), resampled to L16/24000 like ``callrec simulate`` does, looped to the
call's length and started ``n * SHIFT`` samples into the loop: every call's
audio differs from every other's, so a recording mixed up with another call's
fails the comparison. Frames are cut on demand, so a sender holds one copy of
the source, not one per call.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import numpy.typing as npt

from schemas.codecs import L16_24K

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "tests" / "data" / "stereo_diarization.wav"
TRACKS = ("inbound", "outbound")
FRAME_MS = 20
FRAME_SAMPLES = L16_24K.sample_rate * FRAME_MS // 1000
SHIFT = 7919
"""Samples between two consecutive calls' starting points in the loop (a prime)."""


@functools.cache
def source() -> dict[str, npt.NDArray[np.int16]]:
    """The source audio per track, int16 at 24 kHz (decoded once per process)."""
    from infra.audio import load_audio

    samples = load_audio(SOURCE, L16_24K.sample_rate)
    left, right = samples[0], samples[1 if samples.shape[0] > 1 else 0]
    return {"inbound": left.copy(), "outbound": right.copy()}


@functools.cache
def _doubled(track: str) -> npt.NDArray[np.int16]:
    base = source()[track]
    return np.concatenate([base, base])


def frames_for(duration_s: float) -> int:
    """Frames (20 ms) in a call of ``duration_s`` seconds."""
    return max(1, round(duration_s * 1000 / FRAME_MS))


@functools.cache
def _doubled_bytes(track: str) -> bytes:
    return _doubled(track).astype("<i2").tobytes()


def frame(index: int, track: str, chunk: int) -> bytes:
    """PCM16 LE bytes of frame ``chunk`` (1-based) of ``track`` of call ``index``.

    A slice of the looped track's bytes: 400 real-time calls ask for 40,000 frames a
    second, and a numpy slice converted to bytes cost 3 us of that budget each."""
    doubled = _doubled_bytes(track)
    length = len(doubled) // 4
    start = ((chunk - 1) * FRAME_SAMPLES + index * SHIFT) % length
    return doubled[2 * start : 2 * (start + FRAME_SAMPLES)]


def track_bytes(index: int, track: str, frames: int) -> bytes:
    """The whole track of call ``index`` as sent: ``frames`` frames, PCM16 LE."""
    base = source()[track]
    positions = (np.arange(frames * FRAME_SAMPLES) + index * SHIFT) % len(base)
    return base[positions].astype("<i2").tobytes()
