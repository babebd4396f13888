"""Faults on purpose: a bad network or a buggy sender, reproducible from a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

MalformedKind = Literal["not_json", "bad_base64", "unknown_event"]
MALFORMED_KINDS: tuple[MalformedKind, ...] = ("not_json", "bad_base64", "unknown_event")


@dataclass(frozen=True)
class Faults:
    """What to break on purpose; all zero means a perfect Wavix stream."""

    drop: float = 0.0
    """Probability that a chunk is never sent (its number is listed as dropped)."""
    duplicate: float = 0.0
    """Probability that a chunk is sent twice in a row."""
    reorder: float = 0.0
    """Probability that a chunk is sent after the next chunk of its track."""
    malformed: float = 0.0
    """Probability that an extra invalid message follows a chunk: in turn non-JSON text,
    a media message with a payload that is not base64, and an unknown event."""
    disconnect_after: int | None = None
    """Abort each connection's TCP socket, without close frame or ``stop``, after this
    many media messages."""
    string_numbers: bool = False
    """Send ``sequence_number``, ``timestamp`` and ``chunk`` as JSON strings (Wavix's guide)."""
    seed: int = 0
    """Seed of the fault draws; the same seed gives the same faults."""

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "malformed"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        if self.disconnect_after is not None and self.disconnect_after < 0:
            raise ValueError(f"disconnect_after must be >= 0, got {self.disconnect_after}")


NO_FAULTS = Faults()
"""A perfect Wavix stream: the default of :func:`~callrec.simulator.stream.stream_call`."""


def fault_rng(faults: Faults, call_id: str, index: int) -> random.Random:
    """The fault draws of a call's connection number ``index`` (0 or 1)."""
    # A str seed is hashed with SHA-512, so it does not depend on PYTHONHASHSEED.
    return random.Random(f"{faults.seed}/{call_id}/{index}")
