"""What the simulator did on each connection of a call, and the totals of a run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from callrec.simulator.errors import SimulatorError, StreamRejected
from schemas.wavix import Channel, Track


@dataclass(frozen=True)
class StreamReport:
    """What the simulator did on one connection, and how it ended."""

    stream_id: str
    """The ``stream_id`` of the connection's messages."""
    channel: Channel
    """The ``channel`` announced in ``start``."""
    sent_chunks: dict[Track, list[int]]
    """Per track, the chunk numbers sent, in sending order, duplicates included."""
    dropped: dict[Track, list[int]]
    """Per track, the chunk numbers withheld by the ``drop`` fault."""
    malformed_sent: int
    """Invalid messages injected by the ``malformed`` fault."""
    close_code: int | None
    """Close code the server sent (1000 after a normal end, 1008, 1009, 1013, ...); None
    when no close frame came (aborted by ``disconnect_after`` or connection lost)."""
    close_reason: str
    """The server's close reason, or why there was none."""
    completed: bool
    """Whether ``stop`` was sent."""

    @property
    def media_sent(self) -> int:
        """Media messages sent, duplicates included."""
        return sum(len(chunks) for chunks in self.sent_chunks.values())


@dataclass(frozen=True)
class CallReport:
    """The streams of one simulated call."""

    call_id: str
    """The call's Wavix call id."""
    streams: list[StreamReport] = field(default_factory=list)
    """One report per connection, in the order of :data:`TRACKS`."""

    @property
    def completed(self) -> bool:
        """Whether every stream of the call sent ``stop``."""
        return all(s.completed for s in self.streams)


def summarize(
    reports: Sequence[CallReport], errors: Mapping[str, SimulatorError], elapsed_s: float
) -> dict[str, object]:
    """Totals of a run, as printed by ``callrec simulate --json`` (without the reports)."""
    streams = [s for r in reports for s in r.streams]
    sent = sum(s.media_sent for s in streams)
    unique = sum(len(set(c)) for s in streams for c in s.sent_chunks.values())
    codes = Counter("none" if s.close_code is None else str(s.close_code) for s in streams)
    return {
        "calls": len(reports) + len(errors),
        "calls_failed": len(errors),
        "errors": {call_id: str(exc) for call_id, exc in sorted(errors.items())},
        "http_statuses": sorted(
            {e.status for e in errors.values() if isinstance(e, StreamRejected)}
        ),
        "streams": len(streams),
        "streams_completed": sum(s.completed for s in streams),
        "close_codes": dict(sorted(codes.items())),
        "media_sent": sent,
        "duplicates_sent": sent - unique,
        "dropped": sum(len(c) for s in streams for c in s.dropped.values()),
        "malformed_sent": sum(s.malformed_sent for s in streams),
        "elapsed_s": round(elapsed_s, 3),
    }
