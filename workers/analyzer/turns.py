"""Turn-taking: turns, response latency, barge-in, yield and dead air (docs/analytics.md).

Built on the talk intervals of :mod:`workers.analyzer.callmetrics` (energy,
10 ms frames, one list per channel; the channel is the speaker), so every
figure here is independent of the speech model and accurate to a frame.

Definitions (docs/analytics.md, "Turn-taking", is the user-facing statement):

- **Stretch** of a side: its talk intervals joined over pauses shorter than
  ``merge_gap_ms``, whatever the other side does; stretches shorter than
  ``min_turn_ms`` are dropped. The other sides' stretches are the *floor*
  they hold.
- **Turn**: a side's talk intervals joined over pauses shorter than
  ``merge_gap_ms`` during which no other side holds the floor; turns shorter
  than ``min_turn_ms`` are dropped (a click, a cough, a short "mm"). Turns are
  numbered from 0 over the whole recording by start (then end, then channel).
- **Reference** of a turn T (side A, start s): the other sides' turn with the
  latest start before s.
- **Barge-in**: the reference is still in progress at s (``R.end > s``);
  ``yield_ms = R.end - s``, how long the other side kept talking, as heard.
- **Response**: T has a reference R that ended no earlier than A's own
  previous turn (A did not keep the floor past R); then
  ``response_latency_ms = s - R.end``, negative for a barge-in, and T
  ``responds_to`` R. A turn after A's own (a follow-on) has no latency.
- **Dead air**: a stretch of at least ``dead_air_ms`` in which nobody has a
  turn, between the call's first turn start and its last turn end.

Percentiles are nearest-rank (the value at rank ``ceil(p/100 * n)`` of the
sorted values), so every figure is one of the measured values, in whole ms.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workers.analyzer.callmetrics import Interval, intersect, union
from workers.analyzer.transcribe import Segment

__all__ = [
    "Turn",
    "TurnRules",
    "dead_air",
    "find_turns",
    "nearest_rank",
    "turn_metric_rows",
    "turn_rows",
]


@dataclass(frozen=True, slots=True)
class TurnRules:
    """Parameters of turn-taking (``CALLREC_ANALYZER_TURN_*``, ``_DEAD_AIR_MS``)."""

    merge_gap_ms: int = 600
    """A side's pauses shorter than this, while no one else holds the floor, stay in its turn."""
    min_turn_ms: int = 200
    """Turns (and floor-holding stretches) shorter than this are not turns."""
    dead_air_ms: int = 2000
    """Silences of nobody's turn at least this long, inside the conversation, are dead air."""

    def __post_init__(self) -> None:
        for name in ("merge_gap_ms", "min_turn_ms", "dead_air_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of one side (module docstring)."""

    index: int
    """Position in the recording's turns, ordered by start, from 0."""
    track: str
    start_ms: int
    end_ms: int
    responds_to: int | None
    """Index of the other side's turn this one answers (or barged in on); None otherwise."""
    response_latency_ms: int | None
    """Start minus the end of the turn it answers; negative for a barge-in."""
    barge_in: bool
    """Began while the other side's turn was in progress."""
    yield_ms: int | None
    """For a barge-in: how long the other side kept talking after it began."""


def _join(own: Sequence[Interval], gap_ms: int, floor: Sequence[Interval]) -> list[Interval]:
    """``own`` joined over pauses shorter than ``gap_ms`` that no ``floor`` interval touches."""
    out: list[Interval] = []
    for start, end in own:
        if out and start - out[-1][1] < gap_ms and not intersect([(out[-1][1], start)], floor):
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def side_turns(
    own: Sequence[Interval], others: Sequence[Sequence[Interval]], rules: TurnRules
) -> list[Interval]:
    """One side's turns (start, end) from its talk and the other sides' talk."""
    floor = union(
        *(
            [iv for iv in _join(talk, rules.merge_gap_ms, ()) if iv[1] - iv[0] >= rules.min_turn_ms]
            for talk in others
        )
    )
    joined = _join(own, rules.merge_gap_ms, floor)
    return [iv for iv in joined if iv[1] - iv[0] >= rules.min_turn_ms]


def find_turns(
    talk: Mapping[str, Sequence[Interval]], tracks: Sequence[str], rules: TurnRules
) -> list[Turn]:
    """Every side's turns, numbered over the recording, with latency, barge-in and yield.

    ``tracks`` gives the channel order (it breaks ties between simultaneous starts).
    """
    order = {t: i for i, t in enumerate(tracks)}
    spans: list[tuple[int, int, int, str]] = []
    for track in tracks:
        others = [talk[t] for t in tracks if t != track]
        spans += [(s, e, order[track], track) for s, e in side_turns(talk[track], others, rules)]
    spans.sort()
    turns: list[Turn] = []
    # Per track: starts and indices of its turns so far, for the reference search.
    starts: dict[str, list[int]] = {t: [] for t in tracks}
    indices: dict[str, list[int]] = {t: [] for t in tracks}
    for index, (start, end, _, track) in enumerate(spans):
        ref: int | None = None
        for other in tracks:
            if other == track:
                continue
            k = bisect.bisect_left(starts[other], start) - 1
            if k >= 0:
                cand = indices[other][k]
                if ref is None or (spans[cand][0], spans[cand][1]) > (spans[ref][0], spans[ref][1]):
                    ref = cand
        previous = indices[track][-1] if indices[track] else None
        responds_to = latency = yield_ms = None
        barge_in = False
        if ref is not None:
            ref_end = spans[ref][1]
            barge_in = ref_end > start
            if previous is None or ref_end >= spans[previous][1]:
                responds_to, latency = ref, start - ref_end
            if barge_in:
                yield_ms = ref_end - start
        turns.append(Turn(index, track, start, end, responds_to, latency, barge_in, yield_ms))
        starts[track].append(start)
        indices[track].append(index)
    return turns


def dead_air(turns: Sequence[Turn], rules: TurnRules) -> list[Interval]:
    """Silences of at least ``rules.dead_air_ms`` between turns (nobody holding a turn)."""
    spoken = union([(t.start_ms, t.end_ms) for t in turns])
    return [(a[1], b[0]) for a, b in itertools.pairwise(spoken) if b[0] - a[1] >= rules.dead_air_ms]


def nearest_rank(values: Sequence[int], percentile: float) -> int | None:
    """The nearest-rank ``percentile`` of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100 * len(ordered)))
    return ordered[rank - 1]


# -- words of a turn ---------------------------------------------------------------------------


def _units(segments: Sequence[Segment]) -> list[tuple[int, int, str]]:
    """(start, end, text) of each word, or of each segment that has no word times."""
    units: list[tuple[int, int, str]] = []
    for seg in segments:
        if seg.words:
            units += [(w.start_ms, w.end_ms, w.text.strip()) for w in seg.words]
        elif seg.text:
            units.append((seg.start_ms, seg.end_ms, seg.text.strip()))
    return units


def _words(turns: Sequence[Turn], segments: Sequence[Segment]) -> dict[int, list[str]]:
    """One track's words by turn index: each word goes to the turn nearest its midpoint
    (distance 0 inside it), so words a few hundred ms off the energy edges still land
    in their turn. Without turns, words are attached to none."""
    out: dict[int, list[str]] = {t.index: [] for t in turns}
    if not turns:
        return out
    starts = [t.start_ms for t in turns]  # one side's turns: sorted and disjoint
    for start, end, text in _units(segments):
        mid = (start + end) / 2
        k = bisect.bisect_right(starts, mid) - 1
        near = [turns[i] for i in (k, k + 1) if 0 <= i < len(turns)]
        nearest = min(near, key=lambda t: (max(t.start_ms - mid, 0, mid - t.end_ms), t.index))
        out[nearest.index].append(text)
    return out


# -- table rows ------------------------------------------------------------------------------


def turn_rows(
    keys: Mapping[str, Any],
    turns: Sequence[Turn],
    segments: Mapping[str, Sequence[Segment]],
    speaker: Callable[[str], str],
) -> list[dict[str, Any]]:
    """Rows of the ``turns`` table (schemas/tables.py), one per turn, in turn order."""
    words: dict[int, list[str]] = {}
    for track in {t.track for t in turns}:
        words.update(_words([t for t in turns if t.track == track], segments.get(track, ())))
    rows = []
    for t in turns:
        text = " ".join(w for w in words[t.index] if w)
        rows.append(
            {
                **keys,
                "turn": t.index,
                "track": t.track,
                "speaker": speaker(t.track),
                "start_ms": t.start_ms,
                "end_ms": t.end_ms,
                "duration_ms": t.end_ms - t.start_ms,
                "responds_to": t.responds_to,
                "response_latency_ms": t.response_latency_ms,
                "barge_in": t.barge_in,
                "yield_ms": t.yield_ms,
                "words": len(text.split()),
                "text": text,
            }
        )
    return rows


def _figures(own: Sequence[Turn], barged_into: Sequence[Turn]) -> dict[str, Any]:
    latencies = [
        t.response_latency_ms for t in own if t.response_latency_ms is not None and not t.barge_in
    ]
    yields = [t.yield_ms for t in barged_into if t.yield_ms is not None]
    return {
        "turns": len(own),
        "first_turn_ms": min((t.start_ms for t in own), default=None),
        "responses": len(latencies),
        "response_latency_p50_ms": nearest_rank(latencies, 50),
        "response_latency_p90_ms": nearest_rank(latencies, 90),
        "response_latency_max_ms": max(latencies, default=None),
        "barge_ins": sum(1 for t in own if t.barge_in),
        "barged_into": len(yields),
        "yield_p50_ms": nearest_rank(yields, 50),
        "yield_max_ms": max(yields, default=None),
    }


def turn_metric_rows(
    keys: Mapping[str, Any],
    tracks: Sequence[str],
    turns: Sequence[Turn],
    rules: TurnRules,
    speaker: Callable[[str], str],
    call_track: str = "call",
) -> list[dict[str, Any]]:
    """Rows of the ``turn_metrics`` table: one per track, then the call's."""
    by_index = {t.index: t for t in turns}

    def barged_into(track: str) -> list[Turn]:
        """Barge-ins on ``track``'s turns (their yield is ``track``'s)."""
        return [
            t
            for t in turns
            if t.barge_in and t.responds_to is not None and by_index[t.responds_to].track == track
        ]

    none = {"dead_air_count": None, "dead_air_ms": None, "dead_air_longest_ms": None}
    rows = [
        {
            **keys,
            "track": track,
            "speaker": speaker(track),
            **_figures([t for t in turns if t.track == track], barged_into(track)),
            **none,
        }
        for track in tracks
    ]
    silences = dead_air(turns, rules)
    rows.append(
        {
            **keys,
            "track": call_track,
            "speaker": None,
            **_figures(turns, [t for t in turns if t.barge_in]),
            "dead_air_count": len(silences),
            "dead_air_ms": sum(e - s for s, e in silences),
            "dead_air_longest_ms": max((e - s for s, e in silences), default=0),
        }
    )
    return rows
