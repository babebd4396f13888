"""Waveform peaks of a recording: min/max per 10 ms window and channel, as a small JSON file.

A browser draws a call's waveform lanes from these numbers instead of
downloading the WAV (docs/console.md). The recorder writes them beside the WAV
(``recordings/<id>/peaks.json``, listed in the manifest with its sha256); the
review console computes them for recordings archived before that. Pure: bytes
in, bytes out, in bounded memory (the WAV arrives in blocks).

Format (JSON, sorted keys, one line, final newline; deterministic like every
archived object)::

    {"version": 1, "window_ms": 10, "sample_rate": 24000, "duration_ms": 61230,
     "channels": [{"track": "inbound", "min": [-3, -40, ...], "max": [2, 38, ...]}, ...]}

Values are the window's lowest and highest sample scaled to -127..127
(int16 / 256, rounded toward zero): enough for a picture, a tenth of the size of
16-bit numbers. A window with no samples (a shorter track padded) reads as 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from infra.wav import wav_header
from schemas.codecs import Codec

PEAKS_VERSION = 1
WINDOW_MS = 10
CONTENT_TYPE = "application/json"


class ChannelPeaks(msgspec.Struct, frozen=True, kw_only=True):
    """The peaks of one WAV channel (one track)."""

    track: str
    """inbound or outbound: the track this channel holds."""
    min: list[int]
    """Lowest sample of each window, scaled to -127..127."""
    max: list[int]
    """Highest sample of each window, scaled to -127..127."""


class Peaks(msgspec.Struct, frozen=True, kw_only=True):
    """The peaks file of one recording."""

    version: int = PEAKS_VERSION
    window_ms: int = WINDOW_MS
    """Length of one window; window ``i`` covers ``[i * window_ms, (i + 1) * window_ms)``."""
    sample_rate: int
    duration_ms: int
    channels: list[ChannelPeaks]
    """In WAV channel order (inbound = left first)."""


_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder(Peaks)


def peaks_bytes(peaks: Peaks) -> bytes:
    return _encoder.encode(peaks) + b"\n"


def decode_peaks(data: bytes) -> Peaks:
    """Parse a peaks file (raises ``msgspec.DecodeError``)."""
    return _decoder.decode(data)


class PeaksBuilder:
    """Feed the WAV's bytes in blocks of any size; :meth:`finish` gives the peaks.

    Memory: one window of leftover bytes plus the peaks themselves (200 numbers a
    second per channel).
    """

    def __init__(self, codec: Codec, tracks: Sequence[str]) -> None:
        self.codec = codec
        self.tracks = list(tracks)
        channels = len(self.tracks)
        self._skip = len(wav_header(codec, channels, 0))
        self._window = codec.sample_rate * WINDOW_MS // 1000 * codec.sample_width * channels
        self._data_left: int | None = None
        """Data bytes still to come, once the header has been read (ignores a pad byte)."""
        self._head = b""
        self._pending = bytearray()
        self._mins: list[list[npt.NDArray[np.int8]]] = [[] for _ in self.tracks]
        self._maxs: list[list[npt.NDArray[np.int8]]] = [[] for _ in self.tracks]
        self._samples = 0

    def feed(self, block: bytes | memoryview) -> None:
        if self._data_left is None:
            self._head += block
            if len(self._head) < self._skip:
                return
            size = int.from_bytes(self._head[self._skip - 4 : self._skip], "little")
            self._data_left = size
            block, self._head = self._head[self._skip :], b""
        data = memoryview(block)[: self._data_left]
        self._data_left -= len(data)
        if self._pending:  # complete the window begun by the previous block first
            need = self._window - len(self._pending)
            self._pending += data[:need]
            data = data[need:]
            if len(self._pending) < self._window:
                return
            self._reduce(bytes(self._pending))
            self._pending.clear()
        # Whole windows straight from the caller's block (no copy), the rest kept.
        whole = len(data) - len(data) % self._window
        if whole:
            self._reduce(data[:whole])
        self._pending += data[whole:]

    def _reduce(self, data: bytes | memoryview) -> None:
        channels = len(self.tracks)
        frame = self.codec.sample_width * channels
        data = data[: len(data) - len(data) % frame]
        if not data:
            return
        from infra.audio import decode_pcm  # PyAV comes with it: only load it when needed

        samples = decode_pcm(data, self.codec).reshape(-1, channels)
        self._samples += samples.shape[0]
        per_window = self.codec.sample_rate * WINDOW_MS // 1000
        full = samples.shape[0] - samples.shape[0] % per_window
        # Channel-major and contiguous: numpy reduces a contiguous last axis about 15x
        # faster than the middle axis of interleaved frames.
        planar = np.ascontiguousarray(samples.T)
        parts = [planar[:, :full].reshape(channels, -1, per_window)] if full else []
        if full < samples.shape[0]:  # the last, short window (only at the end)
            parts.append(planar[:, full:].reshape(channels, 1, -1))
        for part in parts:
            lows = (part.min(axis=2).astype(np.int32) // 256).clip(-127, 127).astype(np.int8)
            highs = (part.max(axis=2).astype(np.int32) // 256).clip(-127, 127).astype(np.int8)
            for c in range(channels):
                self._mins[c].append(lows[c])
                self._maxs[c].append(highs[c])

    def finish(self) -> Peaks:
        if self._pending:
            self._reduce(bytes(self._pending))
            self._pending.clear()
        duration_ms = self._samples * 1000 // self.codec.sample_rate
        return Peaks(
            sample_rate=self.codec.sample_rate,
            duration_ms=duration_ms,
            channels=[
                ChannelPeaks(
                    track=track,
                    min=np.concatenate(self._mins[c]).tolist() if self._mins[c] else [],
                    max=np.concatenate(self._maxs[c]).tolist() if self._maxs[c] else [],
                )
                for c, track in enumerate(self.tracks)
            ],
        )


def wav_peaks(blocks: Iterable[bytes], codec: Codec, tracks: Sequence[str]) -> Peaks:
    """The peaks of a WAV written by :func:`infra.wav.write_wav`, read block by block."""
    builder = PeaksBuilder(codec, tracks)
    for block in blocks:
        builder.feed(block)
    return builder.finish()
