"""What each connection of a call sends, step by step, faults applied (no I/O)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Mapping
from typing import Literal, NamedTuple

from callrec.simulator.calls import TRACKS, SimulatedCall
from callrec.simulator.faults import MALFORMED_KINDS, Faults, MalformedKind
from schemas.wavix import Channel, Track


class StreamPlan(NamedTuple):
    """One connection of a call."""

    position: int
    """0 for the call's first connection, 1 for the second: part of the fault seed."""
    stream_id: str
    channel: Channel
    tracks: tuple[Track, ...]


StepKind = Literal["connected", "start", "media", "drop", "malformed", "stop"]


class Step(NamedTuple):
    """One thing to do on a connection, at the end of 20 ms frame ``tick`` (0 = at once)."""

    tick: int
    kind: StepKind
    seq: int | None = None
    track: Track | None = None
    chunk: int = 0
    malformed: MalformedKind | None = None


def plan_streams(call: SimulatedCall) -> list[StreamPlan]:
    """The connections of a call, each with a new stream id (a UUID, as Wavix's)."""
    tracks = tuple(t for t in TRACKS if t in call.tracks)
    if call.layout == "both":
        channel: Channel = "both" if len(tracks) == 2 else tracks[0]
        groups: list[tuple[Channel, tuple[Track, ...]]] = [(channel, tracks)]
    else:
        groups = [(t, (t,)) for t in tracks]
    return [StreamPlan(i, str(uuid.uuid4()), ch, ts) for i, (ch, ts) in enumerate(groups)]


def connection_steps(
    counts: Mapping[Track, int], faults: Faults, rng: random.Random
) -> Iterator[Step]:
    """Every step of one connection in sending order, faults applied.

    ``counts`` is the number of frames of each track the connection carries. Four
    numbers are drawn per chunk whatever the probabilities, so one seed gives the
    same draws with different fault settings.
    """
    yield Step(0, "connected")
    yield Step(0, "start", seq=1)
    seq = 1
    malformed = 0
    held: dict[Track, list[Step]] = {}
    ticks = max(counts.values(), default=0)
    for tick in range(1, ticks + 1):
        for track in TRACKS:
            if tick > counts.get(track, 0):
                continue
            seq += 1
            drop, dup, swap, bad = rng.random(), rng.random(), rng.random(), rng.random()
            if drop < faults.drop:
                group = [Step(tick, "drop", seq, track, tick)]
            else:
                media = Step(tick, "media", seq, track, tick)
                group = [media, media] if dup < faults.duplicate else [media]
                if bad < faults.malformed:
                    kind = MALFORMED_KINDS[malformed % len(MALFORMED_KINDS)]
                    malformed += 1
                    group.append(Step(tick, "malformed", seq, track, tick, kind))
                if track not in held and swap < faults.reorder and tick < counts[track]:
                    held[track] = group
                    continue
            yield from group
            for step in held.pop(track, ()):
                yield step._replace(tick=tick)
    yield Step(ticks, "stop", seq=seq + 1)
