"""The archive's key layout, in one place for every writer and reader (docs/formats.md §3).

::

    recordings/<recording_id>/audio.wav         the recording (recorder)
    recordings/<recording_id>/manifest.json     written last by the recorder: "archived"
    recordings/<recording_id>/transcript.json   written last by the analyzer: "analysed"
    tables/<table>/date=YYYY-MM-DD/<recording_id>.parquet   (schemas.tables.table_key)
"""

from __future__ import annotations

RECORDINGS = "recordings/"
WAV_NAME = "audio.wav"
MANIFEST_NAME = "manifest.json"
TRANSCRIPT_NAME = "transcript.json"


def recording_prefix(recording_id: str) -> str:
    return f"{RECORDINGS}{recording_id}/"


def wav_key(recording_id: str) -> str:
    return recording_prefix(recording_id) + WAV_NAME


def manifest_key(recording_id: str) -> str:
    return recording_prefix(recording_id) + MANIFEST_NAME


def transcript_key(recording_id: str) -> str:
    return recording_prefix(recording_id) + TRANSCRIPT_NAME
