"""Helpers for analyzer tests and the analyzer benchmark.

- :func:`archive_call` archives a call through the recorder's own code
  (``RecordingAssembler`` + ``archive_recording``), no Kafka: the objects are
  exactly what the recorder writes.
- :func:`speak` renders text with espeak-ng (deterministic), trimmed to its
  first and last non-silent sample, so the talk truth is the utterance length.
- :func:`word_error_rate` with a small normalisation (case, punctuation).
- :class:`FakeTranscriber` for tests that do not need the model, and
  :class:`GatedTranscriber`, which holds each analysis until the test lets it
  go (a backlog on demand, without depending on how fast the machine is).
- :func:`noise` for deterministic low-level white noise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from infra.store import ObjectStore
from schemas import envelope
from schemas.codecs import L16_24K, Codec
from workers.analyzer.transcribe import Segment
from workers.recorder.archive import archive_recording
from workers.recorder.reassembly import RecordingAssembler
from workers.recorder.tracker import Recording

START_NS = 1_764_000_000_000_000_000
"""2025-11-24T16:00:00Z: the default start of archived test calls."""


def archive_call(store: ObjectStore, call_id: str, tracks: Mapping[str, bytes], work_dir: Path,
                 *, codec: Codec = L16_24K, start_ns: int = START_NS
                 ) -> envelope.RecordingFinished:
    """Archive one call whose tracks carry ``tracks`` (encoded ``codec`` bytes) the way the
    recorder does, and return its ``RecordingFinished`` event."""
    spool = Path(tempfile.mkdtemp(dir=work_dir))
    assembler = RecordingAssembler(call_id, spool)
    frame = codec.frame_bytes()
    stream_id = f"{call_id}-stream"
    common = {"call_id": call_id, "stream_id": stream_id, "ingest_pod": "test-pod",
              "connection_id": "c1"}
    channel = "both" if len(tracks) > 1 else next(iter(tracks))
    assembler.add(envelope.StreamStarted(stream_type="oneway", channel=channel,  # type: ignore[arg-type]
                                         codec=codec.id, received_ns=start_ns, **common))
    count = 0
    for track, audio in tracks.items():
        for i, pos in enumerate(range(0, len(audio), frame)):
            assembler.add(envelope.MediaChunk(
                call_id=call_id, stream_id=stream_id, track=track,  # type: ignore[arg-type]
                chunk=i + 1, timestamp_ms=i * 20, codec=codec.id,
                payload=audio[pos : pos + frame], received_ns=start_ns + i * 20_000_000,
            ))
            count += 1
    assembler.add(envelope.StreamClosed(reason="stop", detail="", received_ns=start_ns + 1,
                                        chunks=count, invalid=0, **common))
    rec = Recording(call_id=call_id, partition=0, first_offset=0, assembler=assembler)
    archived = archive_recording(store, rec, work_dir)
    shutil.rmtree(spool, ignore_errors=True)
    return archived.event


def pcm(samples: npt.NDArray[np.int16]) -> bytes:
    return samples.astype("<i2").tobytes()


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, rate: int = 24000, *, voice: str = "en-us", speed: int = 160
          ) -> npt.NDArray[np.int16]:
    """``text`` spoken by espeak-ng at ``rate``, trimmed to the speech (first to last sample
    above -66 dBFS). Fails (never skips) when espeak-ng is missing: scripts/test.sh installs it.
    """
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is missing: scripts/test.sh installs it (apt-get install espeak-ng)"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(out), text],
                       check=True, capture_output=True)
        with wave.open(str(out)) as w:
            source_rate = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    y = soxr.resample(x.astype(np.float32) / 32768, source_rate, rate, quality="HQ")
    samples = np.clip(np.rint(y * 32768), -32768, 32767).astype(np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 16)
    return samples[loud[0] : loud[-1] + 1]


def place(length_ms: int, rate: int, parts: list[tuple[int, npt.NDArray[np.int16]]]
          ) -> npt.NDArray[np.int16]:
    """A track of ``length_ms`` of digital silence with each (offset_ms, samples) placed in it."""
    track = np.zeros(length_ms * rate // 1000, dtype=np.int16)
    for offset_ms, samples in parts:
        start = offset_ms * rate // 1000
        track[start : start + samples.size] = samples
    return track


def ms(samples: npt.NDArray[Any], rate: int = 24000) -> float:
    return samples.size * 1000 / rate


def normalize_words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after normalisation."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


class FakeTranscriber:
    """Says ``text`` once per channel that has any sound; no model."""

    def __init__(self, text: str = "hello there") -> None:
        self.text = text
        self.calls = 0

    @property
    def fingerprint(self) -> dict[str, Any]:
        return {"model": "fake", "text": self.text}

    def transcribe(self, audio: npt.NDArray[np.float32]) -> list[Segment]:
        self.calls += 1
        loud = np.flatnonzero(np.abs(audio) > 0.01)
        if loud.size == 0:
            return []
        start, end = int(loud[0]) // 16, (int(loud[-1]) + 16) // 16
        return [Segment(start, end, self.text, 0.9)]


class GatedTranscriber(FakeTranscriber):
    """A :class:`FakeTranscriber` whose every call waits until :attr:`gate` is set."""

    def __init__(self, text: str = "hello there", *, release_within_s: float = 120) -> None:
        super().__init__(text)
        self.gate = threading.Event()
        self.release_within_s = release_within_s

    def transcribe(self, audio: npt.NDArray[np.float32]) -> list[Segment]:
        if not self.gate.wait(self.release_within_s):
            raise TimeoutError("the test never opened the gate")
        return super().transcribe(audio)


def noise(length_ms: int, rate: int, dbfs: float, seed: int) -> npt.NDArray[np.int16]:
    """Gaussian white noise whose RMS is ``dbfs`` (full scale 32768), from a fixed seed."""
    sigma = 32768 * 10 ** (dbfs / 20)
    x = np.random.default_rng(seed).normal(0.0, sigma, length_ms * rate // 1000)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)
