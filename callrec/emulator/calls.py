"""The calls the emulator places, and the call clock their streams follow (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.codecs import DEFAULT_CODEC, Codec
from schemas.wavix import Track

FRAME_MS = 20
"""Audio per media message, as Wavix sends it (the simulator's frame too)."""


@dataclass(frozen=True)
class EmulatedCall:
    """One call: who calls whom, whether it is answered, and its audio per track."""

    call_id: str
    from_number: str
    to_number: str
    direction: str = "inbound"
    tag: str | None = None
    answered: bool = True
    """False: the call rings and ends ``busy`` (``unanswered_event``)."""
    unanswered_event: str = "busy"
    tracks: Mapping[Track, bytes] = field(default_factory=dict)
    """Audio from the moment of answer, in ``codec`` (one frame every 20 ms)."""
    codec: Codec = DEFAULT_CODEC

    @property
    def frames(self) -> int:
        """Frames of the call: it ends after the longest track."""
        size = self.codec.frame_bytes(FRAME_MS)
        return max((-(-len(a) // size) for a in self.tracks.values()), default=0)

    def frame(self, track: Track, index: int) -> bytes | None:
        """The ``index``-th 20 ms frame of ``track`` (None past its end)."""
        size = self.codec.frame_bytes(FRAME_MS)
        audio = self.tracks.get(track)
        if audio is None or index * size >= len(audio):
            return None
        return audio[index * size : (index + 1) * size]
