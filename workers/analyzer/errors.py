"""The analyzer's errors, one root, and how each ends an attempt.

::

    AnalyzerError                     not retriable: the same recording fails the same way
    ├── AnalysisError                 the recording in the archive
    │   ├── RecordingNotFoundError    no manifest or no WAV for the recording
    │   └── AudioFormatError          the WAV is not what the manifest describes
    └── TranscriptionError            the model failed on some audio
        └── ModelLoadError            the model could not be loaded

Errors of the shared base reach here too: ``StoreError`` (``StoreUnavailable`` is
retried without limit: the archive is unreachable) and ``OSError``. A failure
that is not retriable is retried up to ``CALLREC_ANALYZER_MAX_ATTEMPTS`` times,
then the recording is skipped and counted by :func:`failure_reason`.
"""

from __future__ import annotations

from infra.store import StoreError


class AnalyzerError(Exception):
    """Root of the analyzer's own errors."""

    retriable = False


class AnalysisError(AnalyzerError):
    """The recording in the archive cannot be analysed."""


class RecordingNotFoundError(AnalysisError):
    """The archive has no manifest or no WAV for the recording."""


class AudioFormatError(AnalysisError):
    """The WAV cannot be read, or does not match its manifest (codec, channels, sha256)."""


class TranscriptionError(AnalyzerError):
    """The model failed on some audio (not retriable: the same audio fails again)."""


class ModelLoadError(TranscriptionError):
    """The model could not be loaded (missing directory, unknown name offline, bad files)."""


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed analysis."""
    if isinstance(exc, RecordingNotFoundError):
        return "not_found"
    if isinstance(exc, AudioFormatError):
        return "bad_audio"
    if isinstance(exc, TranscriptionError):
        return "transcription"
    if isinstance(exc, StoreError | OSError):
        return "store"
    return "internal"


def is_retriable(exc: BaseException) -> bool:
    """Transient trouble worth retrying without limit (the archive is unreachable)."""
    if isinstance(exc, StoreError):
        return exc.retriable
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError)
