"""Audio codecs: decode a file, resample it, encode and decode a codec's bytes.

Used by ``callrec simulate`` (files to Wavix frames), the analyzer (G.711 WAVs
to linear PCM) and the WAV reader.

Pure functions over numpy arrays and bytes; no I/O besides reading the file in
:func:`load_audio`, and no asyncio.

- :func:`load_audio` decodes any file PyAV (FFmpeg) can read and resamples it
  with soxr ("HQ"), which is deterministic: the same file and rate give the
  same samples every time, so a test can compare a recording with it.
- :func:`encode_pcm` / :func:`decode_pcm` convert between int16 samples and the
  bytes of a :class:`~schemas.codecs.Codec`: little-endian PCM16, or G.711
  mu-law/a-law computed with numpy lookup tables (the stdlib ``audioop`` is
  deprecated and gone in Python 3.13). The G.711 tables follow the reference
  implementation (Sun Microsystems' public-domain ``g711.c``, as used by
  ``audioop`` and SoX), so the bytes match what telephony equipment produces.
- :func:`frames` cuts encoded audio into the 20 ms frames a media gateway sends.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from infra.errors import InfraError
from schemas.codecs import Codec

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

Samples = npt.NDArray[np.int16]
"""int16 audio: ``(channels, samples)`` from :func:`load_audio`, 1-D for one channel."""


class AudioFileError(InfraError):
    """An audio file that cannot be opened or holds no decodable audio."""


# -- decoding and resampling -----------------------------------------------------------

_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}
"""Full scale of each integer sample format of FFmpeg (planar variants end in ``p``)."""


def load_audio(path: str | Path, sample_rate: int) -> Samples:
    """Decode the first audio stream of ``path`` and resample it to ``sample_rate``.

    Returns int16 samples shaped ``(channels, samples)``, channels in the
    file's order (for stereo: left, right). Resampling uses soxr at "HQ"
    quality, skipped when the file already has ``sample_rate``, so a 16-bit
    file at that rate comes back bit-exact. Raises :class:`AudioFileError`.
    """
    audio, rate = _decode(Path(path))
    if rate != sample_rate:
        import soxr  # only decoding files needs it: the G.711 codecs below do not
        # soxr wants (samples, channels); .T and back keep channels first for callers.
        audio = soxr.resample(audio.T, rate, sample_rate, quality="HQ").T
    return _to_int16(audio)


def _decode(path: Path) -> tuple[npt.NDArray[np.float64], int]:
    """All samples of the first audio stream as float64 in [-1, 1], and their rate."""
    # FFmpeg's bindings cost ~20 MiB of RAM: imported by the simulator when it decodes a
    # file, never by the services that only use the codecs (the console, the analyzer).
    import av

    try:
        container = av.open(str(path))
    except (OSError, av.FFmpegError) as exc:
        raise AudioFileError(f"cannot open {path}: {exc}") from None
    with container:
        if not container.streams.audio:
            raise AudioFileError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        blocks: list[npt.NDArray[np.float64]] = []
        rate = stream.rate
        try:
            for frame in container.decode(stream):
                rate = frame.sample_rate
                blocks.append(_frame_to_float(frame))
        except av.FFmpegError as exc:
            raise AudioFileError(f"cannot decode {path}: {exc}") from None
    if not blocks:
        raise AudioFileError(f"{path} holds no audio samples")
    channels = blocks[0].shape[0]
    if any(block.shape[0] != channels for block in blocks):
        raise AudioFileError(f"{path} changes its channel count mid-stream")
    audio = np.concatenate(blocks, axis=1)
    log.debug("decoded %s: %d channels, %d samples at %d Hz", path, channels, audio.shape[1], rate)
    return audio, rate


def _frame_to_float(frame: av.AudioFrame) -> npt.NDArray[np.float64]:
    """One decoded frame as float64 ``(channels, samples)``, full scale = 1.0."""
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if not frame.format.is_planar:
        # Packed formats come as one row of interleaved samples.
        data = data.reshape(-1, channels).T
    name = frame.format.name.removesuffix("p")
    if name in ("flt", "dbl"):
        return data.astype(np.float64)
    scale = _INT_SCALE[name]
    if name == "u8":
        return (data.astype(np.float64) - 128.0) / scale
    return data.astype(np.float64) / scale


def _to_int16(audio: npt.NDArray[np.float64]) -> Samples:
    """Scale to PCM16, round half to even and clip (no dither: deterministic)."""
    scaled = np.rint(audio * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


# -- codecs ----------------------------------------------------------------------------


def encode_pcm(samples: Samples, codec: Codec) -> bytes:
    """Encode mono int16 samples as ``codec`` bytes (L16 little-endian or G.711)."""
    mono = np.asarray(samples)
    if mono.ndim != 1:
        raise ValueError(f"encode_pcm takes one channel, got shape {mono.shape}")
    mono = mono.astype(np.int16, copy=False)
    if codec.encoding == "L16":
        return mono.astype("<i2", copy=False).tobytes()
    table = _ULAW_ENCODE if codec.encoding == "PCMU" else _ALAW_ENCODE
    # Index by the 16-bit pattern: a table of all 65536 inputs beats branching per sample.
    return table[mono.view(np.uint16)].tobytes()


def decode_pcm(data: bytes | memoryview, codec: Codec) -> Samples:
    """Decode ``codec`` bytes into mono int16 samples."""
    if codec.encoding == "L16":
        if len(data) % 2:
            raise ValueError(f"{len(data)} bytes is not whole L16 samples")
        return np.frombuffer(data, dtype="<i2").astype(np.int16)
    table = _ULAW_DECODE if codec.encoding == "PCMU" else _ALAW_DECODE
    return table[np.frombuffer(data, dtype=np.uint8)]


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    """mu-law byte of every int16 value (g711.c ``linear2ulaw``, 14-bit magnitude)."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), 8159) + (0x84 >> 2)
    seg_end = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_end, magnitude)  # first segment whose end >= magnitude
    uval = (seg << 4) | ((magnitude >> (seg + 1)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)  # past the last segment: the largest code
    return _by_bit_pattern((uval ^ mask).astype(np.uint8))


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    """a-law byte of every int16 value (g711.c ``linear2alaw``, 13-bit magnitude)."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    seg_end = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(seg_end, magnitude)
    shift = np.where(seg < 2, 1, seg)
    aval = (seg << 4) | ((magnitude >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return _by_bit_pattern((aval ^ mask).astype(np.uint8))


def _by_bit_pattern(by_value: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Reindex a table built for -32768..32767 by the values' uint16 bit patterns."""
    return np.roll(by_value, -32768)


def _ulaw_decode_table() -> Samples:
    """int16 value of every mu-law byte (g711.c ``ulaw2linear``)."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_decode_table() -> Samples:
    """int16 value of every a-law byte (g711.c ``alaw2linear``)."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENCODE = _ulaw_encode_table()
_ALAW_ENCODE = _alaw_encode_table()
_ULAW_DECODE = _ulaw_decode_table()
_ALAW_DECODE = _alaw_decode_table()


# -- framing ---------------------------------------------------------------------------


def frame_count(nbytes: int, codec: Codec, frame_ms: int = 20) -> int:
    """How many frames :func:`frames` cuts ``nbytes`` of ``codec`` audio into."""
    return math.ceil(nbytes / codec.frame_bytes(frame_ms))


def frames(pcm: bytes, codec: Codec, frame_ms: int = 20) -> list[bytes]:
    """Cut encoded audio into ``frame_ms`` frames; the last may be shorter.

    Every frame holds whole samples; ``pcm`` must too (``ValueError`` if not).
    """
    if len(pcm) % codec.sample_width:
        raise ValueError(f"{len(pcm)} bytes is not whole {codec.id} samples")
    size = codec.frame_bytes(frame_ms)
    if size <= 0:
        raise ValueError(f"a {frame_ms} ms frame of {codec.id} holds no sample")
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]
