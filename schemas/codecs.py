"""Audio codecs a Wavix-style sender may use, and what each means in bytes.

Wavix streams PCM16 little-endian, 24 kHz, mono (``L16/24000``). Twilio-style
senders use 8 kHz mu-law/a-law or 16 kHz PCM16, so the codec is configuration,
recorded with every stream, never an assumption baked into the pipeline.

Codec ids follow the RTP payload names (RFC 3551): ``L16/24000``, ``L16/16000``,
``PCMU/8000``, ``PCMA/8000``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from schemas.errors import UnknownCodecError

Encoding = Literal["L16", "PCMU", "PCMA"]


@dataclass(frozen=True, slots=True)
class Codec:
    """One mono audio encoding at one sample rate."""

    encoding: Encoding
    """``L16`` = signed 16-bit little-endian PCM; ``PCMU``/``PCMA`` = G.711 mu-law/a-law."""
    sample_rate: int
    """Samples per second."""
    # Derived once: ingest and the recorder ask for these for every chunk.
    id: str = field(init=False, repr=False, compare=False)
    """The wire name, e.g. ``L16/24000``."""
    sample_width: int = field(init=False, repr=False, compare=False)
    """Bytes per sample: 2 for L16, 1 for G.711."""
    bytes_per_ms: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.encoding}/{self.sample_rate}")
        object.__setattr__(self, "sample_width", 2 if self.encoding == "L16" else 1)
        object.__setattr__(self, "bytes_per_ms", self.sample_rate * self.sample_width / 1000)

    def frame_bytes(self, frame_ms: int = 20) -> int:
        """Bytes in one frame of ``frame_ms`` (960 for a 20 ms L16/24000 frame)."""
        return self.sample_rate * frame_ms // 1000 * self.sample_width

    def bytes_for_ms(self, ms: int) -> int:
        """Bytes that ``ms`` milliseconds of audio take, rounded down to a whole sample."""
        return self.sample_rate * ms // 1000 * self.sample_width

    def ms_for_bytes(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_ms

    @property
    def silence_byte(self) -> bytes:
        """The byte that encodes digital silence: 0 for L16, 0xFF mu-law, 0xD5 a-law."""
        return {"L16": b"\x00", "PCMU": b"\xff", "PCMA": b"\xd5"}[self.encoding]

    def silence(self, nbytes: int) -> bytes:
        return self.silence_byte * nbytes


L16_24K = Codec("L16", 24000)
L16_16K = Codec("L16", 16000)
PCMU_8K = Codec("PCMU", 8000)
PCMA_8K = Codec("PCMA", 8000)

DEFAULT_CODEC = L16_24K
"""What Wavix sends: PCM16 LE, 24 kHz, mono, 20 ms frames of 960 bytes."""

CODECS: dict[str, Codec] = {c.id: c for c in (L16_24K, L16_16K, PCMU_8K, PCMA_8K)}


def codec_by_id(codec_id: str) -> Codec:
    """Look a codec up by its wire name; raise ``UnknownCodecError`` for any other name."""
    try:
        return CODECS[codec_id]
    except KeyError:
        raise UnknownCodecError(f"unknown codec {codec_id!r}; known: {sorted(CODECS)}") from None
