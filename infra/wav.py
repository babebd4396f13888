"""WAV files of recordings: one channel per track, written in bounded memory, and read back.

Pure format code (no S3): :func:`wav_header` builds the RIFF header from
numbers; :func:`write_wav` interleaves per-track raw files (the recorder's spool)
into a local WAV file and returns its size and sha256, computed while writing so
the archive never reads the file twice; :func:`read_wav` gives each channel's
samples back from bytes, :class:`WavReader` from a file, a window at a time (the
analyzer: RAM flat in call length).

Layout::

    RIFF <size> WAVE
    fmt  <16>  PCM (1), 16-bit                          for L16
    fmt  <18>  a-law (6) / mu-law (7), 8-bit, cbSize 0  for PCMA / PCMU
    fact <4>   samples per channel                      non-PCM only (required there)
    data <n>   frames: channel 0 (inbound, left), channel 1 (outbound, right)
    [pad byte when n is odd, as RIFF requires]

The sample format is the codec's own: G.711 stays G.711 (what was received is
what is archived, bit for bit), L16 stays 16-bit little-endian. Shorter tracks
are padded with the codec's silence to the longest one.

Size: RIFF counts in 32 bits, so a file must stay under 4 GiB. A 60-minute
stereo L16/24000 call is 346 MB; the recorder's ``max_duration_ms`` (6 h) keeps
even that codec at 2.1 GB. Beyond the limit :class:`WavTooLargeError` is raised
rather than writing a file players would misread.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from infra.audio import decode_pcm
from infra.errors import InfraError
from schemas.codecs import Codec

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_ALAW = 6
WAVE_FORMAT_MULAW = 7
RIFF_MAX = 2**32 - 1
"""Largest value of the RIFF size field (file size minus 8)."""
CONTENT_TYPE = "audio/wav"
BLOCK_FRAMES = 32 * 1024
"""Frames interleaved per step: 128 KiB of stereo L16, whatever the call length."""

_FORMAT_TAGS = {"L16": WAVE_FORMAT_PCM, "PCMA": WAVE_FORMAT_ALAW, "PCMU": WAVE_FORMAT_MULAW}


class WavError(InfraError):
    """Root of WAV errors; not retriable (the same input fails the same way).

    ::

        WavError
        ├── WavTooLargeError   the data does not fit a RIFF file (4 GiB)
        ├── TrackFileError     a track file is shorter than its stated length
        └── WavFormatError     a WAV read back is not what its codec and tracks say
    """

    retriable = False


class WavTooLargeError(WavError):
    pass


class TrackFileError(WavError):
    pass


class WavFormatError(WavError):
    pass


def wav_header(codec: Codec, channels: int, data_bytes: int) -> bytes:
    """The RIFF/WAVE header for ``data_bytes`` of interleaved ``codec`` samples.

    Raises ``ValueError`` unless ``data_bytes`` is whole frames, and
    :class:`WavTooLargeError` when the file would exceed the RIFF size limit.
    """
    if channels < 1:
        raise ValueError(f"a WAV needs at least one channel, not {channels}")
    width = codec.sample_width
    block_align = width * channels
    if data_bytes < 0 or data_bytes % block_align:
        raise ValueError(f"{data_bytes} data bytes are not whole {channels}-channel frames")
    tag = _FORMAT_TAGS[codec.encoding]
    byte_rate = codec.sample_rate * block_align
    if tag == WAVE_FORMAT_PCM:
        fmt = struct.pack("<HHIIHH", tag, channels, codec.sample_rate, byte_rate, block_align, 16)
        fact = b""
    else:
        fmt = struct.pack(
            "<HHIIHHH", tag, channels, codec.sample_rate, byte_rate, block_align, 8, 0
        )
        fact = b"fact" + struct.pack("<II", 4, data_bytes // block_align)
    riff_size = 4 + 8 + len(fmt) + len(fact) + 8 + data_bytes + (data_bytes & 1)
    if riff_size > RIFF_MAX:
        raise WavTooLargeError(
            f"{data_bytes} bytes of {codec.id} audio exceed the 4 GiB RIFF limit"
        )
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", riff_size),
            b"WAVE",
            b"fmt ",
            struct.pack("<I", len(fmt)),
            fmt,
            fact,
            b"data",
            struct.pack("<I", data_bytes),
        )
    )


def write_wav(
    out_path: Path,
    codec: Codec,
    track_files: list[Path],
    lengths: list[int],
    tee: Callable[[bytes | memoryview], None] | None = None,
) -> tuple[int, str]:
    """Interleave raw track files into the WAV ``out_path``; return (size, sha256 hex).

    ``track_files[i]`` becomes channel ``i`` and holds ``lengths[i]`` bytes of
    ``codec`` samples (whole samples); every channel is padded with silence to
    the longest. Reads and writes ``BLOCK_FRAMES`` frames at a time. ``tee``, when
    given, sees every byte written, in order (the recorder's waveform peaks are
    computed from it instead of reading the file back), in buffers valid only for
    the call.
    """
    channels = len(track_files)
    if channels != len(lengths):
        raise ValueError(f"{channels} track files but {len(lengths)} lengths")
    width = codec.sample_width
    if any(n < 0 or n % width for n in lengths):
        raise ValueError(f"track lengths {lengths} are not whole {codec.id} samples")
    frames = max(lengths, default=0) // width
    data_bytes = frames * width * channels
    header = wav_header(codec, channels, data_bytes)
    digest = hashlib.sha256(header)
    dtype = np.dtype("<i2") if width == 2 else np.dtype("u1")
    silence = np.frombuffer(codec.silence(width), dtype)[0]
    have = [n // width for n in lengths]
    with ExitStack() as stack:
        inputs = [stack.enter_context(open(p, "rb")) for p in track_files]
        out = stack.enter_context(open(out_path, "wb"))
        out.write(header)
        if tee is not None:
            tee(header)
        for first in range(0, frames, BLOCK_FRAMES):
            n = min(BLOCK_FRAMES, frames - first)
            block = np.empty((n, channels), dtype)
            for ch, f in enumerate(inputs):
                take = max(0, min(n, have[ch] - first))
                if take:
                    data = f.read(take * width)
                    if len(data) < take * width:
                        raise TrackFileError(
                            f"{track_files[ch]} holds fewer than {lengths[ch]} bytes"
                        )
                    block[:take, ch] = np.frombuffer(data, dtype)
                block[take:, ch] = silence
            # The block's own buffer, not a bytes copy of it (0.4 ms per 30 s of stereo).
            chunk = block.data.cast("B")
            out.write(chunk)
            digest.update(chunk)
            if tee is not None:
                tee(chunk)
        if data_bytes & 1:
            out.write(b"\0")
            digest.update(b"\0")
    return len(header) + data_bytes + (data_bytes & 1), digest.hexdigest()


def read_wav(data: bytes, codec: Codec, channels: int) -> list[npt.NDArray[np.int16]]:
    """The int16 samples of each channel of a WAV written by :func:`write_wav`.

    Checks that the format tag, rate and channel count are ``codec``'s and
    ``channels``; G.711 is decoded to linear PCM. Raises :class:`WavFormatError`.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavFormatError("not a RIFF/WAVE file")
    pos, fmt, body = 12, None, None
    try:
        while pos + 8 <= len(data):
            chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
            start = pos + 8
            if chunk_id == b"fmt ":
                fmt = struct.unpack_from("<HHIIHH", data, start)
            elif chunk_id == b"data":
                body = memoryview(data)[start : start + size]
                break
            pos = start + size + (size & 1)
    except struct.error:
        raise WavFormatError("truncated WAV header") from None
    if fmt is None or body is None:
        raise WavFormatError("WAV without fmt or data chunk")
    tag, nch, rate, _, _, bits = fmt
    width = codec.sample_width
    if (tag, nch, rate, bits) != (_FORMAT_TAGS[codec.encoding], channels, codec.sample_rate,
                                  8 * width):
        raise WavFormatError(
            f"WAV is format {tag}, {nch} ch, {rate} Hz, {bits} bit; the manifest says "
            f"{codec.id} with {channels} tracks"
        )
    usable = len(body) - len(body) % (width * nch)
    raw = body[:usable]
    if codec.encoding == "L16":
        interleaved = np.frombuffer(raw, dtype="<i2").reshape(-1, nch)
        return [np.ascontiguousarray(interleaved[:, c], dtype=np.int16) for c in range(nch)]
    bytes_ = np.frombuffer(raw, dtype=np.uint8).reshape(-1, nch)
    return [decode_pcm(np.ascontiguousarray(bytes_[:, c]).tobytes(), codec) for c in range(nch)]


def _check_format(fmt: tuple[int, ...], codec: Codec, channels: int) -> None:
    tag, nch, rate, _, _, bits = fmt
    if (tag, nch, rate, bits) != (_FORMAT_TAGS[codec.encoding], channels, codec.sample_rate,
                                  8 * codec.sample_width):
        raise WavFormatError(
            f"WAV is format {tag}, {nch} ch, {rate} Hz, {bits} bit; the manifest says "
            f"{codec.id} with {channels} tracks"
        )


class WavReader:
    """Windows of the channels of a WAV file written by :func:`write_wav`, read from disk.

    Checks the header like :func:`read_wav` (raises :class:`WavFormatError`); holds
    no samples itself: :meth:`read` returns ``count`` frames from ``first``, each
    channel as int16 (G.711 decoded), reading ``BLOCK_FRAMES`` frames at a time.
    """

    def __init__(self, f: BinaryIO, codec: Codec, channels: int) -> None:
        self._f = f
        self.codec = codec
        self.channels = channels
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise WavFormatError("not a RIFF/WAVE file")
        fmt: tuple[int, ...] | None = None
        pos = 12
        while True:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                raise WavFormatError("WAV without fmt or data chunk")
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                body = f.read(16)
                if len(body) < 16:
                    raise WavFormatError("truncated WAV header")
                fmt = struct.unpack("<HHIIHH", body)
            elif chunk_id == b"data":
                if fmt is None:
                    raise WavFormatError("WAV without fmt or data chunk")
                break
            pos += 8 + size + (size & 1)
        _check_format(fmt, codec, channels)
        self._data = pos + 8
        available = f.seek(0, 2) - self._data
        self._frame_bytes = codec.sample_width * channels
        self.frames = min(size, max(0, available)) // self._frame_bytes
        """Whole frames in the data chunk."""

    def read(self, first: int, count: int,
             only: list[int] | None = None) -> list[npt.NDArray[np.int16]]:
        """Frames ``[first, first + count)`` (clipped to the file), one array per channel
        (per channel of ``only``, when given)."""
        first = max(0, min(first, self.frames))
        count = max(0, min(count, self.frames - first))
        wanted = list(range(self.channels)) if only is None else only
        arrays = [np.empty(count, np.int16) for _ in wanted]
        width = self.codec.sample_width
        self._f.seek(self._data + first * self._frame_bytes)
        for at in range(0, count, BLOCK_FRAMES):
            n = min(BLOCK_FRAMES, count - at)
            raw = self._f.read(n * self._frame_bytes)
            if len(raw) < n * self._frame_bytes:
                raise WavFormatError("WAV data ends early")
            if width == 2:
                block = np.frombuffer(raw, dtype="<i2").reshape(-1, self.channels)
                for out, c in zip(arrays, wanted, strict=True):
                    out[at : at + n] = block[:, c]
            else:
                block8 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, self.channels)
                for out, c in zip(arrays, wanted, strict=True):
                    out[at : at + n] = decode_pcm(
                        np.ascontiguousarray(block8[:, c]).tobytes(), self.codec
                    )
        return arrays
