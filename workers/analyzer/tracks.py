"""An archived recording's tracks, read from a local copy of its WAV a window at a time.

The analyzer's memory must not grow with the call (a 6-hour stereo call is a 2 GB
WAV): the WAV is downloaded to a temporary file (``ObjectStore.get_file``, streamed),
hashed from disk, and read in windows (``infra.wav.WavReader``). Two passes:

1. **Scan** (:func:`scan`): every channel's 10 ms frame levels (talk detection) and
   level sums (``rms_dbfs``, ``peak_dbfs``, ``clipping_ratio``), window by window.
   What stays in memory is one float64 per 10 ms per track (0.8 KB per second of
   audio, 1/60 of the audio itself at L16/24000). Windows are whole 10 ms frames, so
   the frame levels are those of the whole track, bit for bit; the level sums are
   exact integers.
2. **Transcription windows** (:func:`model_windows`): the model gets at most
   ``MODEL_WINDOW_MS`` (10 min) of one track at a time, cut in the middle of a pause
   the talk detector found (no speech is split); segment and word times are shifted
   by the window's start. A track up to 10 minutes long is one window: the model
   sees exactly what it saw when whole tracks were transcribed, so such recordings'
   outputs are unchanged. Longer ones may differ from whole-track decoding only near
   the cuts, which lie in silence (docs/benchmarks.md, "Analyzer memory").

Peak memory is then the model's input for one window (10 min of 16 kHz float32:
38 MB, plus the int16 window and the resampler's working copy), whatever the call's
length.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from infra.wav import BLOCK_FRAMES, WavReader
from workers.analyzer import callmetrics
from workers.analyzer.callmetrics import FULL_SCALE, Interval, Levels, TalkDetector
from workers.analyzer.transcribe import Segment

MODEL_WINDOW_MS = 10 * 60 * 1000
"""Longest stretch of one track given to the model at once."""
SCAN_FRAMES = 8 * BLOCK_FRAMES
"""Frames per window of the scan (~11 s at 24 kHz): rounded down to whole 10 ms frames."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


@dataclass(slots=True)
class LevelMeter:
    """``callmetrics.levels`` accumulated window by window, with exact integer sums."""

    clip_level: int
    count: int = 0
    square: int = 0
    peak: int = 0
    clipped: int = 0

    def add(self, samples: npt.NDArray[np.int16]) -> None:
        x = samples.astype(np.int64)
        self.count += int(x.size)
        self.square += int(np.square(x).sum())
        if x.size:
            self.peak = max(self.peak, int(np.abs(x).max()))
            self.clipped += int(np.count_nonzero(np.abs(x) >= self.clip_level))

    def merged(self, *others: LevelMeter) -> LevelMeter:
        meter = LevelMeter(self.clip_level)
        for m in (self, *others):
            meter.count += m.count
            meter.square += m.square
            meter.peak = max(meter.peak, m.peak)
            meter.clipped += m.clipped
        return meter

    def levels(self) -> Levels:
        """The same figures as ``callmetrics.levels`` over the samples added."""
        if self.count == 0:
            return Levels(None, None, 0.0)
        if self.peak == 0:
            return Levels(None, None, self.clipped / self.count)
        rms = math.sqrt(float(self.square) / self.count)
        return Levels(
            rms_dbfs=round(20.0 * math.log10(rms / FULL_SCALE), 3),
            peak_dbfs=round(20.0 * math.log10(self.peak / FULL_SCALE), 3),
            clipping_ratio=self.clipped / self.count,
        )


@dataclass(frozen=True, slots=True)
class Scan:
    """What pass 1 learned about every channel."""

    frames: int
    """Samples per channel."""
    talk: list[list[Interval]]
    """Talk intervals per channel."""
    meters: list[LevelMeter] = field(default_factory=list)
    """Level sums per channel."""


def scan(reader: WavReader, rate: int, detector: TalkDetector, clip_level: int) -> Scan:
    """Pass 1 over every channel: talk intervals and level sums (module docstring)."""
    frame = rate * detector.frame_ms // 1000
    step = max(frame, SCAN_FRAMES // frame * frame)
    levels: list[list[npt.NDArray[np.float64]]] = [[] for _ in range(reader.channels)]
    meters = [LevelMeter(clip_level) for _ in range(reader.channels)]
    for first in range(0, reader.frames, step):
        for c, samples in enumerate(reader.read(first, step)):
            levels[c].append(callmetrics.frame_levels(samples, rate, detector.frame_ms))
            meters[c].add(samples)
    duration_ms = reader.frames * 1000 // rate
    talk = [
        callmetrics.talk_from_levels(
            np.concatenate(parts) if parts else np.empty(0), duration_ms, detector
        )
        for parts in levels
    ]
    return Scan(reader.frames, talk, meters)


def model_windows(
    frames: int, rate: int, talk: list[Interval], window_ms: int = MODEL_WINDOW_MS
) -> list[tuple[int, int]]:
    """``[first, end)`` sample ranges covering the track, each at most ``window_ms`` long,
    cut in the middle of the last pause before the limit (at the limit when none)."""
    total_ms = frames * 1000 // rate
    if total_ms <= window_ms:
        return [(0, frames)]
    cuts: list[int] = []
    start = 0
    pauses = [(a[1], b[0]) for a, b in itertools.pairwise(talk)]
    if talk:
        pauses = [(0, talk[0][0]), *pauses, (talk[-1][1], total_ms)]
    while total_ms - start > window_ms:
        limit = start + window_ms
        mids = [(lo + hi) // 2 for lo, hi in pauses if start < (lo + hi) // 2 <= limit]
        cut = mids[-1] if mids else limit
        cuts.append(cut)
        start = cut
    edges = [0, *(c * rate // 1000 for c in cuts), frames]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def shifted(segment: Segment, offset_ms: int) -> Segment:
    """``segment`` with its times (and its words') moved ``offset_ms`` later."""
    if not offset_ms:
        return segment
    return dataclasses.replace(
        segment,
        start_ms=segment.start_ms + offset_ms,
        end_ms=segment.end_ms + offset_ms,
        words=tuple(
            dataclasses.replace(w, start_ms=w.start_ms + offset_ms, end_ms=w.end_ms + offset_ms)
            for w in segment.words
        ),
    )


def channel_windows(
    reader: WavReader, channel: int, windows: list[tuple[int, int]]
) -> Iterator[tuple[int, npt.NDArray[np.int16]]]:
    """(first sample, samples of ``channel``) per window; one window in memory at a time."""
    for first, end in windows:
        yield first, reader.read(first, end - first, [channel])[0]
