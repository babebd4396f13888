"""Scripted two-party conversations with known turn timings (espeak-ng), and their truth.

A script is a list of :class:`Line`, alternating speakers, each placed relative to the
previous line: after a pause (``gap_ms`` >= 0), or barging in ``barge_at_ms`` after the
previous line's start. A barge-in may make the previous line stop (``yield_ms`` after the
barge-in began: the bot's stop as heard, the audio is cut there) or let it talk on. Every
line answers the previous one, so the truth follows from the placement alone:

- latency of line i = its start minus the end of line i-1 (None for the first line);
- barge-in when that is negative, and then yield = the previous line's end minus its start;
- dead air = the pauses between lines of at least the dead-air length.

Cut points are moved (by at most 60 ms) to where the speech is loud, so that the stop is
audible at the scripted time and not in a pause between two words; the truth records
where the cut really is.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.wavix import Track
from tests.analyzerutil import noise, place, speak

RATE = 24000
CALLER: Track = "inbound"
AGENT: Track = "outbound"


@dataclass(frozen=True)
class Line:
    """One scripted utterance."""

    speaker: Track
    """``inbound`` (the caller) or ``outbound`` (the agent)."""
    text: str | tuple[str, ...]
    """What is said; several parts are spoken with ``inner_pause_ms`` between them."""
    gap_ms: int = 0
    """Pause after the previous line's end (used when ``barge_at_ms`` is None)."""
    barge_at_ms: int | None = None
    """Start this long after the previous line's start, while it still talks."""
    yield_ms: int | None = None
    """For a barge-in: the previous line stops this long after this one starts (None: it
    talks to its natural end)."""
    inner_pause_ms: int = 400


@dataclass(frozen=True)
class Placed:
    """A line as placed in the call: the truth."""

    speaker: Track
    text: str
    start_ms: int
    end_ms: int
    latency_ms: int | None
    barge_in: bool
    yield_ms: int | None


def _utterance(line: Line) -> npt.NDArray[np.int16]:
    parts = (line.text,) if isinstance(line.text, str) else line.text
    pause = np.zeros(line.inner_pause_ms * RATE // 1000, dtype=np.int16)
    clips: list[npt.NDArray[np.int16]] = []
    for i, part in enumerate(parts):
        if i:
            clips.append(pause)
        clips.append(speak(part, RATE))
    return np.concatenate(clips)


def _loud_cut(samples: npt.NDArray[np.int16], at: int) -> int:
    """The nearest sample index to ``at`` (within 60 ms) whose preceding 20 ms are loud
    (RMS above -30 dBFS): a cut there is heard as a stop at that moment."""
    window = 20 * RATE // 1000
    for step in range(0, 60 * RATE // 1000, RATE // 1000):
        for cand in (at + step, at - step):
            if window <= cand <= samples.size:
                chunk = samples[cand - window : cand].astype(np.float64)
                if np.sqrt(np.mean(chunk**2)) > 32768 * 10 ** (-30 / 20):
                    return cand
    raise AssertionError(f"no loud cut point near sample {at}")


def render(
    script: list[Line], *, lead_ms: int = 500, tail_ms: int = 800, noise_dbfs: float | None = None
) -> tuple[dict[Track, npt.NDArray[np.int16]], list[Placed]]:
    """The two tracks of ``script`` (int16 at 24 kHz) and the truth of every line."""
    clips = [_utterance(line) for line in script]
    starts: list[int] = []  # in samples
    ends: list[int] = []
    for i, (line, clip) in enumerate(zip(script, clips, strict=True)):
        if i and line.speaker == script[i - 1].speaker:
            raise ValueError(f"line {i} has the same speaker as the line before it")
        if i == 0:
            start = lead_ms * RATE // 1000
        elif line.barge_at_ms is not None:
            start = starts[i - 1] + line.barge_at_ms * RATE // 1000
            if not start < ends[i - 1]:
                raise ValueError(f"line {i} barges in after the previous line ended")
            if line.yield_ms is not None:
                cut = _loud_cut(clips[i - 1], start - starts[i - 1] + line.yield_ms * RATE // 1000)
                clips[i - 1] = clips[i - 1][:cut]
                ends[i - 1] = starts[i - 1] + cut
        else:
            start = ends[i - 1] + line.gap_ms * RATE // 1000
        starts.append(start)
        ends.append(start + clip.size)
        if i and ends[i] <= ends[i - 1]:
            raise ValueError(f"line {i} ends before the line it answers")
    length_ms = max(ends) * 1000 // RATE + tail_ms
    tracks: dict[Track, npt.NDArray[np.int16]] = {}
    for speaker in (CALLER, AGENT):
        parts = [
            (s * 1000 // RATE, c)
            for s, c, line in zip(starts, clips, script, strict=True)
            if line.speaker == speaker
        ]
        track = place(length_ms, RATE, parts)
        if noise_dbfs is not None:
            seed = 1 if speaker == CALLER else 2
            track = np.clip(
                track.astype(np.int32) + noise(length_ms, RATE, noise_dbfs, seed), -32768, 32767
            ).astype(np.int16)
        tracks[speaker] = track
    truth = []
    for i, line in enumerate(script):
        start_ms, end_ms = starts[i] * 1000 / RATE, ends[i] * 1000 / RATE
        latency = None if i == 0 else round(start_ms - ends[i - 1] * 1000 / RATE)
        barge = latency is not None and latency < 0
        text = line.text if isinstance(line.text, str) else " ".join(line.text)
        truth.append(
            Placed(
                line.speaker,
                text,
                round(start_ms),
                round(end_ms),
                latency,
                barge,
                -latency if barge and latency is not None else None,
            )
        )
    return tracks, truth


def dead_air(truth: list[Placed], dead_air_ms: int) -> list[int]:
    """Lengths of the scripted pauses of at least ``dead_air_ms``."""
    return [
        b.start_ms - a.end_ms
        for a, b in itertools.pairwise(truth)
        if b.start_ms - a.end_ms >= dead_air_ms
    ]


SUPPORT_CALL = [
    Line(AGENT, "hello, thanks for calling, how can I help you today"),
    Line(CALLER, "I would like to check the status of my order", gap_ms=700),
    Line(AGENT, "sure, can you give me the order number please", gap_ms=250),
    Line(CALLER, "it is alpha bravo charlie", gap_ms=1500),
    # 3 s of dead air while the bot "thinks"; the answer has a 400 ms pause inside.
    Line(
        AGENT,
        ("thank you, one moment", "your order shipped yesterday and arrives on monday"),
        gap_ms=3000,
    ),
    # The caller talks over the bot, which stops 350 ms later.
    Line(CALLER, "wait, actually I have a different question", barge_at_ms=2200, yield_ms=350),
    Line(AGENT, "of course, what would you like to know", gap_ms=200),
    Line(CALLER, "can I change the delivery address", gap_ms=900),
    Line(AGENT, "yes, I can update the delivery address for you right now", gap_ms=450),
    # The caller barges in again; the bot takes 1.2 s to stop.
    Line(CALLER, "no, never mind, that's all", barge_at_ms=1400, yield_ms=1200),
    Line(AGENT, "alright, is there anything else I can help with", gap_ms=600),
    # The caller starts before the bot is done (an overlap the bot talks through).
    Line(CALLER, "great, thank you very much, goodbye", barge_at_ms=2200),
    Line(AGENT, "goodbye", gap_ms=350),
]
"""A support call with a bot: pauses from 200 ms to 3 s, two barge-ins the bot yields to
(350 ms, 1.2 s), an overlap it talks through, a turn with a pause inside, dead air."""
