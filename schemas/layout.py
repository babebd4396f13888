"""The archive's key layout, in one place for every writer and reader (docs/formats.md §3).

::

    recordings/<recording_id>/audio.wav         the recording (recorder)
    recordings/<recording_id>/peaks.json        waveform peaks per channel (recorder; console)
    recordings/<recording_id>/manifest.json     written last by the recorder: "archived"
    recordings/<recording_id>/transcript.json   written last by the analyzer: "analysed"
    tables/<table>/date=YYYY-MM-DD/<recording_id>.parquet   (schemas.tables.table_key)
    failures/<call>/<partition>-<first offset>.json  a recording the recorder could not
                                                     archive, and why (failure_key)
"""

from __future__ import annotations

import re
from typing import NamedTuple

RECORDINGS = "recordings/"
TABLES = "tables/"
FAILURES = "failures/"
WAV_NAME = "audio.wav"
MANIFEST_NAME = "manifest.json"
TRANSCRIPT_NAME = "transcript.json"
PEAKS_NAME = "peaks.json"


def recording_prefix(recording_id: str) -> str:
    return f"{RECORDINGS}{recording_id}/"


def wav_key(recording_id: str) -> str:
    return recording_prefix(recording_id) + WAV_NAME


def manifest_key(recording_id: str) -> str:
    return recording_prefix(recording_id) + MANIFEST_NAME


def peaks_key(recording_id: str) -> str:
    return recording_prefix(recording_id) + PEAKS_NAME


def transcript_key(recording_id: str) -> str:
    return recording_prefix(recording_id) + TRANSCRIPT_NAME


def recording_of(key: str, name: str = MANIFEST_NAME) -> str | None:
    """The recording id in ``recordings/<id>/<name>``, or None when ``key`` is not that."""
    if key.startswith(RECORDINGS) and key.endswith("/" + name):
        rec_id = key[len(RECORDINGS) : -len("/" + name)]
        return rec_id if rec_id and "/" not in rec_id else None
    return None


def failure_key(call_key: str, partition: int, first_offset: int) -> str:
    """Where the recorder notes a recording it could not archive: ``call_key`` is the
    call's key-safe name (``recording_id(call_id, 0)`` without ``-0``), the partition
    and first offset say which records to replay once the cause is fixed."""
    return f"{FAILURES}{call_key}/{partition}-{first_offset}.json"


def table_prefix(table: str) -> str:
    """``tables/<table>/``: every partition of one table."""
    return f"{TABLES}{table}/"


class TableFile(NamedTuple):
    """Where one recording's rows of one table lie (``schemas.tables.table_key``)."""

    table: str
    date: str
    """``YYYY-MM-DD``: the Hive ``date=`` partition."""
    recording_id: str


_TABLE_FILE = re.compile(r"tables/([^/]+)/date=(\d{4}-\d{2}-\d{2})/([^/]+)\.parquet")


def parse_table_key(key: str) -> TableFile | None:
    """The parts of a table file's key, or None when ``key`` is not one."""
    match = _TABLE_FILE.fullmatch(key)
    return TableFile(*match.groups()) if match else None
