"""A recording the recorder could not archive: what it writes down instead.

Archiving retries what may pass later (the archive or Kafka unreachable, a local
disk error). Anything else (a corrupt manifest in the archive, spool files the
disk lost, a bug) fails the same way on every attempt; retrying it would hold the
partition's committed offset forever. Such a recording is *failed*: the recorder
logs it at ERROR, counts it (``callrec_recorder_recordings_total{outcome="failed"}``),
writes a failure note into the archive and lets commits move past it, so the next
calls of the partition are archived. The records stay in Kafka until retention
deletes them: the note says which ones (topic, partition, first offset) for a
replay once the cause is fixed (docs/operations.md, "A failed recording").

Key: ``failures/<call>/<partition>-<first offset>.json`` (``schemas.layout.failure_key``).
"""

from __future__ import annotations

import datetime as dt
import traceback

import msgspec

from infra.store import ObjectStore, StoredObject
from schemas.layout import failure_key
from schemas.tables import recording_id

FAILURE_VERSION = 1
MAX_REASON_CHARS = 2000


class FailedRecording(msgspec.Struct, frozen=True, kw_only=True):
    """The failure note (JSON, version 1)."""

    version: int = FAILURE_VERSION
    call_id: str
    topic: str
    partition: int
    first_offset: int
    """The recording's first record: replaying the partition from here re-reads it."""
    streams: list[str]
    """Stream ids seen for this recording, sorted."""
    error: str
    """Exception class, e.g. ``DecodeError`` or ``ReassemblyError``."""
    reason: str
    """The exception's message (cut at 2000 characters)."""
    where: str
    """Last frame of the traceback (file:line in function), for the bug report."""
    failed_at: str
    """Wall-clock time of the failure, ISO 8601 UTC."""


def call_key(call_id: str) -> str:
    """The call's key-safe name, as in its recording ids without ``-<part>``."""
    return recording_id(call_id, 0)[: -len("-0")]


def describe(
    call_id: str,
    topic: str,
    partition: int,
    first_offset: int,
    streams: set[str],
    exc: BaseException,
) -> FailedRecording:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return FailedRecording(
        call_id=call_id,
        topic=topic,
        partition=partition,
        first_offset=first_offset,
        streams=sorted(streams),
        error=type(exc).__name__,
        reason=str(exc)[:MAX_REASON_CHARS],
        where=where,
        failed_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    )


def write_failure(store: ObjectStore, failure: FailedRecording) -> StoredObject:
    """Put the note at its key (a replay that fails again overwrites it)."""
    key = failure_key(call_key(failure.call_id), failure.partition, failure.first_offset)
    data = msgspec.json.format(msgspec.json.encode(failure), indent=2) + b"\n"
    return store.put_bytes(key, data, "application/json")


def read_failure(data: bytes) -> FailedRecording:
    return msgspec.json.decode(data, type=FailedRecording)
