"""The calls to simulate: the audio of each track, and how the tracks are carried."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from infra.audio import encode_pcm, load_audio
from schemas.codecs import DEFAULT_CODEC, Codec
from schemas.wavix import Channel, Track

log = logging.getLogger(__name__)

Layout = Literal["both", "oneway"]
TRACKS: tuple[Track, ...] = ("inbound", "outbound")


@dataclass(frozen=True)
class SimulatedCall:
    """One call to stream: its id and the encoded audio of each track."""

    call_id: str
    """Wavix call id sent in every message of the call."""
    tracks: Mapping[Track, bytes]
    """Audio per track, already encoded in the codec the call is streamed with."""
    layout: Layout = "both"
    """``both``: one connection for all tracks; ``oneway``: one connection per track."""

    def __post_init__(self) -> None:
        if not self.tracks:
            raise ValueError(f"call {self.call_id} has no track")
        unknown = set(self.tracks) - set(TRACKS)
        if unknown:
            raise ValueError(f"call {self.call_id}: unknown tracks {sorted(unknown)}")


def build_calls(
    path: str | Path,
    *,
    calls: int = 1,
    layout: Layout = "both",
    channel: Channel = "both",
    codec: Codec = DEFAULT_CODEC,
    call_id_prefix: str = "sim",
) -> list[SimulatedCall]:
    """``calls`` calls that all carry the audio of ``path``, encoded as ``codec``.

    A stereo file's left channel is the inbound track and its right channel the
    outbound track; a mono file gives both tracks the same audio. ``channel``
    keeps one track only (its own channel of a stereo file, a mono file as is).
    Call ids are ``<prefix>-<n>``, n from 1. Raises ``AudioFileError``.
    """
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    samples = load_audio(path, codec.sample_rate)
    if samples.shape[0] > 2:
        log.warning("%s has %d channels: using the first two only", path, samples.shape[0])
    left, right = samples[0], samples[1 if samples.shape[0] > 1 else 0]
    wanted = TRACKS if channel == "both" else (channel,)
    source = {"inbound": left, "outbound": right}
    tracks = {t: encode_pcm(source[t], codec) for t in wanted}
    width = len(str(calls))
    return [
        SimulatedCall(f"{call_id_prefix}-{n:0{width}d}", dict(tracks), layout)
        for n in range(1, calls + 1)
    ]
