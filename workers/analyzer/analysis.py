"""Analysing one archived recording: transcript, ``segments`` and ``metrics`` rows.

The backend-independent core of the analyzer: :func:`analyze_recording` takes
an :class:`~infra.store.ObjectStore` (S3 or a directory), a
``RecordingFinished`` event, a :class:`~workers.analyzer.transcribe.Transcriber`
and an :class:`AnalysisConfig`. The Kafka service, the backfill and the
embedded mode all call it; none has analysis code of its own.

Reads, then writes, in this order (the transcript is the "done" marker)::

    recordings/<id>/manifest.json ─┐  (the WAV's sha256 is checked against it)
    recordings/<id>/audio.wav ─────┴▶ per track: talk detection, levels, transcription
                                      (to a temp file, read in windows: workers.analyzer.tracks)
    ─▶ tables/segments/date=YYYY-MM-DD/<id>.parquet
    ─▶ tables/metrics/date=YYYY-MM-DD/<id>.parquet
    ─▶ tables/turns/date=YYYY-MM-DD/<id>.parquet         (turn-taking: workers/analyzer/turns.py)
    ─▶ tables/turn_metrics/date=YYYY-MM-DD/<id>.parquet
    ─▶ recordings/<id>/transcript.json          written last

Idempotent: every object's bytes depend only on the recording and on the
analysis fingerprint (model identity, decoding options, detector parameters),
never on the wall clock or the machine, and each table gets one file per
recording at a fixed key; analysing again overwrites the same keys with the
same bytes, and never adds rows. A recording whose transcript carries the
current fingerprint is not analysed again unless ``force`` is given.

The manifest is never rewritten: it is the recorder's compliance record (and
may be under Object Lock); analysis outputs are derived data.

Errors: ``workers.analyzer.errors`` (none retriable but ``StoreUnavailable``).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from infra.audio import decode_pcm
from infra.logsafe import safe
from infra.parquet import CONTENT_TYPE as PARQUET_TYPE
from infra.parquet import rows_to_parquet
from infra.store import ObjectStore, StoreError
from infra.wav import WavFormatError, WavReader
from schemas import envelope
from schemas.codecs import Codec, codec_by_id
from schemas.errors import UnknownCodecError
from schemas.layout import (
    MANIFEST_NAME,
    WAV_NAME,
    recording_prefix,
    transcript_key,
)
from schemas.manifest import Manifest, decode_manifest
from schemas.tables import table_key
from workers.analyzer import callmetrics, turns
from workers.analyzer.callmetrics import Interval, TalkDetector
from workers.analyzer.errors import (
    AudioFormatError,
    RecordingNotFoundError,
)
from workers.analyzer.tracks import (
    LevelMeter,
    channel_windows,
    model_windows,
    scan,
    sha256_file,
    shifted,
)
from workers.analyzer.transcribe import (
    Segment,
    Transcriber,
    to_model_input,
)
from workers.analyzer.turns import TurnRules

log = logging.getLogger(__name__)

ANALYSIS_VERSION = 1
"""Version of the metric definitions and transcript layout; part of the fingerprint, so
a change that alters outputs makes backfill redo every recording."""
TRANSCRIPT_VERSION = 1
CALL_TRACK = "call"
"""``metrics.track`` of the row about the whole call."""

__all__ = [
    "AnalysisConfig",
    "AnalysisResult",
    "analyze_recording",
    "fingerprint",
    "load_manifest",
    "transcript_key",
]


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """Analysis options besides the model (``AnalyzerSettings.analysis_config()``)."""

    speaker_labels: Mapping[str, str] = field(
        default_factory=lambda: {"inbound": "caller", "outbound": "agent"}
    )
    """Track → speaker name in ``segments.speaker``; a track without a label is its own name."""
    talk: TalkDetector = field(default_factory=TalkDetector)
    """Parameters of the talk detector (callmetrics)."""
    turns: TurnRules = field(default_factory=TurnRules)
    """Parameters of turn-taking (workers/analyzer/turns.py)."""

    def speaker(self, track: str) -> str:
        return self.speaker_labels.get(track, track)


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """What :func:`analyze_recording` did (for metrics and logs; not stored)."""

    recording_id: str
    skipped: bool
    """The transcript already carried the current fingerprint: nothing was written."""
    keys: tuple[str, ...] = ()
    """Objects written, in write order."""
    segments: int = 0
    audio_seconds: float = 0.0
    """Audio transcribed: the recording's duration times its tracks."""
    transcribe_seconds: float = 0.0
    """Wall time spent in the model."""

    @property
    def real_time_factor(self) -> float | None:
        if self.audio_seconds <= 0:
            return None
        return self.transcribe_seconds / self.audio_seconds


def fingerprint(transcriber: Transcriber, config: AnalysisConfig) -> dict[str, Any]:
    """Everything an analysis's output depends on besides the recording itself, as it
    reads back from a transcript's ``analysis`` field (JSON types)."""
    return _normalize({
        "analysis_version": ANALYSIS_VERSION,
        "transcriber": dict(transcriber.fingerprint),
        "talk_detector": asdict(config.talk),
        "speaker_labels": dict(sorted(config.speaker_labels.items())),
        "turns": asdict(config.turns),
    })


def analyze_recording(
    store: ObjectStore,
    event: envelope.RecordingFinished,
    transcriber: Transcriber,
    config: AnalysisConfig,
    *,
    force: bool = False,
) -> AnalysisResult:
    """Analyse one archived recording and write its transcript and table rows.

    Only ``event.recording_id`` (and ``call_id``, for logs) are read from the
    event; everything else comes from the manifest. Synchronous and CPU-bound
    (run it in a worker thread from asyncio). Raises :class:`AnalysisError`
    subclasses, ``TranscriptionError`` or ``StoreError``; see the module docstring.
    """
    rec_id = event.recording_id
    prefix = recording_prefix(rec_id)
    wanted = fingerprint(transcriber, config)
    if not force and analysed_with(store, rec_id) == wanted:
        log.info("call_id=%s: %s already analysed with this model, skipped",
                 safe(event.call_id), safe(rec_id))
        return AnalysisResult(rec_id, skipped=True)

    manifest = load_manifest(store, prefix + MANIFEST_NAME, rec_id)
    expected_sha = next((o.sha256 for o in manifest.objects if o.key == prefix + WAV_NAME), None)
    codec = _codec(manifest)
    rate = codec.sample_rate
    tracks = sorted(manifest.tracks, key=lambda t: manifest.channels.get(t, 0))
    # The WAV goes to a temporary file and is read a window at a time (workers.analyzer
    # .tracks): memory stays flat in the call's length.
    with tempfile.TemporaryDirectory(prefix="callrec-analyzer-") as tmp:
        wav_path = Path(tmp) / WAV_NAME
        _get_file(store, prefix + WAV_NAME, rec_id, wav_path)
        if expected_sha is not None and sha256_file(wav_path) != expected_sha:
            raise AudioFormatError(f"{prefix}{WAV_NAME}: sha256 differs from the manifest's")
        with wav_path.open("rb") as f:
            try:
                reader = WavReader(f, codec, len(manifest.tracks))
                scanned = scan(reader, rate, config.talk, clip_level(codec))
            except WavFormatError as exc:
                raise AudioFormatError(str(exc)) from None
            duration_ms = scanned.frames * 1000 // rate

            pauses = [(p.start_ms, p.end_ms) for p in manifest.pauses or []]
            talk: dict[str, list[Interval]] = {}
            meters: dict[str, LevelMeter] = {}
            segments: dict[str, list[Segment]] = {}
            transcribe_seconds = 0.0
            for track in tracks:
                channel = manifest.channels.get(track, tracks.index(track))
                talk[track] = scanned.talk[channel]
                meters[track] = scanned.meters[channel]
                segments[track] = []
                windows = model_windows(scanned.frames, rate, talk[track])
                for first, samples in channel_windows(reader, channel, windows):
                    audio = to_model_input(samples, rate)
                    del samples
                    began = time.perf_counter()
                    found = transcriber.transcribe(audio)
                    transcribe_seconds += time.perf_counter() - began
                    del audio
                    offset_ms = first * 1000 // rate
                    segments[track].extend(snap_to_talk(shifted(s, offset_ms), talk[track])
                                           for s in found)
                segments[track] = outside_pauses(segments[track], pauses)
                log.debug("call_id=%s %s: %d segments in %d windows", safe(event.call_id),
                          track, len(segments[track]), len(windows))

    segment_rows = _segment_rows(manifest, tracks, segments, config)
    metric_rows = _metric_rows(manifest, tracks, meters, talk, segments, duration_ms, config)
    transcript = _transcript(manifest, tracks, segments, talk, duration_ms,
                             expected_sha, wanted, config)
    turn_list = turns.find_turns(talk, tracks, config.turns)
    turn_rows = turns.turn_rows(_keys(manifest), turn_list, segments, config.speaker)
    turn_metric_rows = turns.turn_metric_rows(_keys(manifest), tracks, turn_list, config.turns,
                                              config.speaker, CALL_TRACK)

    written = []
    for name, rows in (("segments", segment_rows), ("metrics", metric_rows),
                       ("turns", turn_rows), ("turn_metrics", turn_metric_rows)):
        key = table_key(name, manifest.date, rec_id)
        store.put_bytes(key, rows_to_parquet(name, rows), PARQUET_TYPE)
        written.append(key)
    store.put_bytes(transcript_key(rec_id), transcript, "application/json")
    written.append(transcript_key(rec_id))
    return AnalysisResult(
        rec_id,
        skipped=False,
        keys=tuple(written),
        segments=len(segment_rows),
        audio_seconds=duration_ms / 1000 * len(tracks),
        transcribe_seconds=transcribe_seconds,
    )


def outside_pauses(segments: list[Segment], pauses: list[tuple[int, int]]) -> list[Segment]:
    """The transcript without anything inside a paused interval (card payments).

    Paused audio is silence in the WAV, but Whisper may still hallucinate there, and a
    segment may straddle a pause: words inside a pause are dropped (the segment keeps
    its other words and their span); a segment without word times that touches a pause
    is dropped whole. Nothing of a pause is ever in ``segments`` or the transcript.
    """
    if not pauses:
        return segments

    def inside(start: int, end: int) -> bool:
        return any(start < p_end and p_start < end for p_start, p_end in pauses)

    kept: list[Segment] = []
    for seg in segments:
        if not inside(seg.start_ms, seg.end_ms):
            kept.append(seg)
            continue
        words = tuple(w for w in seg.words if not inside(w.start_ms, w.end_ms))
        if not words:
            continue
        kept.append(dataclasses.replace(
            seg, words=words, start_ms=words[0].start_ms, end_ms=words[-1].end_ms,
            text=" ".join(w.text.strip() for w in words).strip()))
    return kept


def snap_to_talk(segment: Segment, talk: list[Interval]) -> Segment:
    """Tighten a segment's times to the detected talk it overlaps.

    Whisper's word times are often a few hundred ms early or late at the edges
    of speech (the batched pipeline pads VAD chunks); the energy detector is
    accurate to 10 ms. The start moves forward to the first overlapping talk
    interval's start, the end back to the last one's end; a segment that
    overlaps no talk (quiet speech the detector missed) keeps Whisper's times.
    """
    overlapping = [iv for iv in talk if iv[0] < segment.end_ms and segment.start_ms < iv[1]]
    if not overlapping:
        return segment
    start = max(segment.start_ms, overlapping[0][0])
    end = min(segment.end_ms, overlapping[-1][1])
    if end <= start:
        return segment
    return dataclasses.replace(segment, start_ms=start, end_ms=end)


def analysed_with(store: ObjectStore, recording_id: str) -> dict[str, Any] | None:
    """The fingerprint in the recording's transcript; None if there is none (or unreadable)."""
    key = transcript_key(recording_id)
    if not store.exists(key):
        return None
    try:
        doc = msgspec.json.decode(store.get_bytes(key))
    except msgspec.DecodeError:
        log.warning("%s is not valid JSON: analysing again", key)
        return None
    analysis = doc.get("analysis") if isinstance(doc, dict) else None
    return analysis if isinstance(analysis, dict) else None


# -- reading -------------------------------------------------------------------------------


def _get(store: ObjectStore, key: str, rec_id: str) -> bytes:
    try:
        return store.get_bytes(key)
    except FileNotFoundError:
        raise RecordingNotFoundError(f"{rec_id}: {key} does not exist") from None
    except StoreError as exc:
        if not exc.retriable and not store.exists(key):
            raise RecordingNotFoundError(f"{rec_id}: {key} does not exist") from None
        raise


def _get_file(store: ObjectStore, key: str, rec_id: str, path: Path) -> None:
    try:
        store.get_file(key, path)
    except FileNotFoundError:
        raise RecordingNotFoundError(f"{rec_id}: {key} does not exist") from None
    except StoreError as exc:
        if not exc.retriable and not store.exists(key):
            raise RecordingNotFoundError(f"{rec_id}: {key} does not exist") from None
        raise


def load_manifest(store: ObjectStore, key: str, rec_id: str) -> Manifest:
    data = _get(store, key, rec_id)
    try:
        manifest = decode_manifest(data)
    except msgspec.DecodeError as exc:
        raise AudioFormatError(f"{key} is not a manifest: {exc}") from None
    if manifest.recording_id != rec_id:
        raise AudioFormatError(f"{key} describes {manifest.recording_id}, not {rec_id}")
    if not manifest.tracks:
        raise AudioFormatError(f"{key} lists no tracks")
    return manifest


def _codec(manifest: Manifest) -> Codec:
    try:
        return codec_by_id(manifest.codec)
    except UnknownCodecError as exc:
        raise AudioFormatError(str(exc)) from None


def clip_level(codec: Codec) -> int:
    """The largest magnitude ``codec`` can carry: samples there count as clipped."""
    if codec.encoding == "L16":
        return 32767
    return int(np.abs(decode_pcm(bytes(range(256)), codec).astype(np.int32)).max())


# -- rows and the transcript -----------------------------------------------------------------


def _keys(manifest: Manifest) -> dict[str, Any]:
    return {"call_id": manifest.call_id, "part": manifest.part,
            "recording_id": manifest.recording_id}


def _segment_rows(manifest: Manifest, tracks: list[str], segments: Mapping[str, list[Segment]],
                  config: AnalysisConfig) -> list[dict[str, Any]]:
    rows = []
    for track in tracks:
        for i, seg in enumerate(segments[track]):
            rows.append({
                **_keys(manifest),
                "track": track,
                "speaker": config.speaker(track),
                "segment": i,
                "start_ms": seg.start_ms,
                "end_ms": seg.end_ms,
                "text": seg.text,
                "confidence": seg.confidence,
            })
    return rows


def _word_count(segments: list[Segment]) -> int:
    return sum(len(s.words) if s.words else len(s.text.split()) for s in segments)


def _metric_rows(manifest: Manifest, tracks: list[str], meters: Mapping[str, LevelMeter],
                 talk: Mapping[str, list[Interval]],
                 segments: Mapping[str, list[Segment]], duration_ms: int,
                 config: AnalysisConfig) -> list[dict[str, Any]]:
    per_track, call = callmetrics.conversation(
        [talk[t] for t in tracks], duration_ms, config.talk.turn_gap_ms
    )
    rows = []
    words_total = 0
    for i, track in enumerate(tracks):
        conv = per_track[i]
        words = _word_count(segments[track])
        words_total += words
        counts = manifest.counts.get(track)
        rows.append({
            **_keys(manifest),
            "track": track,
            **_conversation_columns(conv),
            "words_per_minute": callmetrics.words_per_minute(words, conv.talk_ms),
            **_level_columns(meters[track].levels()),
            "gaps": counts.gaps if counts else 0,
            "duplicates": counts.duplicates if counts else 0,
            "out_of_order": counts.out_of_order if counts else 0,
            "jitter_ms": counts.jitter_ms if counts else None,
        })
    jitters = [j for j in (r["jitter_ms"] for r in rows) if j is not None]
    rows.append({
        **_keys(manifest),
        "track": CALL_TRACK,
        **_conversation_columns(call),
        "words_per_minute": callmetrics.words_per_minute(
            words_total, sum(c.talk_ms for c in per_track)
        ),
        **_level_columns(LevelMeter.merged(*(meters[t] for t in tracks)).levels()),
        "gaps": sum(r["gaps"] for r in rows),
        "duplicates": sum(r["duplicates"] for r in rows),
        "out_of_order": sum(r["out_of_order"] for r in rows),
        "jitter_ms": max(jitters) if jitters else None,
    })
    return rows


def _conversation_columns(conv: callmetrics.Conversation) -> dict[str, Any]:
    return {
        "talk_ms": conv.talk_ms,
        "silence_ms": conv.silence_ms,
        "overtalk_ms": conv.overtalk_ms,
        "interruptions": conv.interruptions,
        "longest_monologue_ms": conv.longest_monologue_ms,
    }


def _level_columns(levels: callmetrics.Levels) -> dict[str, Any]:
    return {"rms_dbfs": levels.rms_dbfs, "peak_dbfs": levels.peak_dbfs,
            "clipping_ratio": levels.clipping_ratio}


_encoder = msgspec.json.Encoder(order="sorted")


def _normalize(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
    decoded: dict[str, Any] = msgspec.json.decode(_encoder.encode(value))
    return decoded


def _transcript(manifest: Manifest, tracks: list[str], segments: Mapping[str, list[Segment]],
                talk: Mapping[str, list[Interval]], duration_ms: int, wav_sha256: str | None,
                analysis: dict[str, Any], config: AnalysisConfig) -> bytes:
    """The per-call transcript JSON: sorted keys, 2-space indent, final newline."""
    doc = {
        "version": TRANSCRIPT_VERSION,
        **_keys(manifest),
        "start_time": manifest.start_time,
        "duration_ms": duration_ms,
        "wav_sha256": wav_sha256,
        "analysis": analysis,
        "tracks": [
            {
                "track": track,
                "speaker": config.speaker(track),
                "channel": manifest.channels.get(track, i),
                "talk": [list(iv) for iv in talk[track]],
                "text": " ".join(s.text for s in segments[track]),
            }
            for i, track in enumerate(tracks)
        ],
        "segments": [
            {
                "track": track,
                "speaker": config.speaker(track),
                "segment": i,
                "start_ms": seg.start_ms,
                "end_ms": seg.end_ms,
                "text": seg.text,
                "confidence": seg.confidence,
                "words": [
                    {"start_ms": w.start_ms, "end_ms": w.end_ms, "text": w.text,
                     "probability": w.probability}
                    for w in seg.words
                ],
            }
            for seg, track, i in _in_time_order(tracks, segments)
        ],
    }
    return msgspec.json.format(_encoder.encode(doc), indent=2) + b"\n"


def _in_time_order(tracks: list[str], segments: Mapping[str, list[Segment]]
                   ) -> list[tuple[Segment, str, int]]:
    """Both tracks' segments interleaved by start time (then channel order): a dialogue."""
    items = [(seg, track, i) for track in tracks for i, seg in enumerate(segments[track])]
    order = {t: n for n, t in enumerate(tracks)}
    return sorted(items, key=lambda x: (x[0].start_ms, order[x[1]], x[2]))

