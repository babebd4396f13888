"""The analytics tables callrec writes (Parquet), their schemas and S3 layout.

Six tables, each partitioned Hive-style by the UTC date of the recording start::

    tables/<table>/date=YYYY-MM-DD/<recording_id>.parquet

- ``calls``        one row per recording (the recorder)
- ``segments``     one row per transcript segment (the analyzer)
- ``metrics``      one row per recording and track, plus one for the whole call (the analyzer)
- ``turns``        one row per conversational turn (the analyzer)
- ``turn_metrics`` turn-taking figures per recording and track, plus the call's (the analyzer)
- ``control``      one row per call the control plane saw, recorded or not, with the reason
  (the controller; the file is named for the call, ``<call id>-0``, date = first event)

One file per recording and table, at a key derived from the recording alone:
a replay after a crash overwrites the same key with the same bytes instead of
adding duplicate rows, and a query engine never sees half a recording.

``date`` is the partition column: it lives in the path only, never inside the
files, because Spark and Athena refuse a column that is both in the data and in
the partition schema. DuckDB (``hive_partitioning=true``), Trino/Athena
(partition projection on ``date``) and Spark read it from the path as a string
(or a DATE where the engine infers one).

Types are chosen to read the same in DuckDB, Athena/Trino and Spark: strings,
``int32``/``int64``, ``float64``, ``bool``, ``list<string>``, and timestamps in
milliseconds, UTC-adjusted. Every file carries ``callrec.schema_version`` and
``callrec.table`` in its key/value metadata. Adding a nullable column keeps
``SCHEMA_VERSION``; anything else (rename, type change, removal) bumps it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date as _date

import pyarrow as pa

SCHEMA_VERSION = 1
PARTITION_COLUMN = "date"
PARTITION_SCHEMA = pa.schema([pa.field(PARTITION_COLUMN, pa.string(), nullable=False)])
"""How to read the ``date=`` directories back (pyarrow: ``partitioning(PARTITION_SCHEMA,
flavor="hive")``)."""

TIMESTAMP = pa.timestamp("ms", tz="UTC")

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _field(name: str, type_: pa.DataType, doc: str, *, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": doc})


def _schema(table: str, *fields: pa.Field) -> pa.Schema:
    return pa.schema(
        fields,
        metadata={"callrec.schema_version": str(SCHEMA_VERSION), "callrec.table": table},
    )


_KEYS = (
    _field("call_id", pa.string(), "Wavix call id."),
    _field("part", pa.int32(), "Recording part of the call: 0, then 1... for later streams."),
    _field("recording_id", pa.string(), "Stable id of the recording (see recording_id())."),
)

CALLS = _schema(
    "calls",
    *_KEYS,
    _field("start_time", TIMESTAMP, "Recording start (time 0 of the WAV), UTC."),
    _field("end_time", TIMESTAMP, "start_time + duration_ms."),
    _field("duration_ms", pa.int64(), "Length of the longest track."),
    _field("tracks", pa.list_(pa.string()), "Tracks in channel order (inbound, outbound)."),
    _field("channels", pa.int32(), "WAV channels: 1 (mono) or 2 (inbound left, outbound right)."),
    _field("complete", pa.bool_(), "Every stream stopped normally and nothing is missing."),
    _field(
        "incomplete_reason", pa.string(), "Why not complete; null when complete.", nullable=True
    ),
    _field("codec", pa.string(), "Sample format of the WAV, e.g. L16/24000."),
    _field("sample_rate", pa.int32(), "Samples per second per channel."),
    _field("recording_key", pa.string(),
           "Key of the WAV relative to the archive root (CALLREC_ARCHIVE_URI), so rows stay\n"
           "valid when the archive is copied or moved; `callrec query` adds recording_uri."),
    _field("manifest_key", pa.string(),
           "Key of the manifest (custody, sha256) relative to the archive root."),
    _field("wav_sha256", pa.string(), "Lower-case hex SHA-256 of the WAV object."),
    _field("wav_bytes", pa.int64(), "Size of the WAV object."),
    _field("gaps", pa.int64(), "Holes filled with silence, over all tracks."),
    _field("gap_ms", pa.int64(), "Silence inserted for holes, over all tracks."),
    _field("missing_chunks", pa.int64(), "Chunk numbers never received, over all streams."),
    _field("duplicates", pa.int64(), "Chunks received more than once."),
    _field("out_of_order", pa.int64(), "Chunks received after a higher chunk number."),
    _field("overlaps", pa.int64(), "Chunks whose time range collided with another's."),
    _field("streams", pa.int32(), "Wavix streams the recording was assembled from."),
    _field("ingest_pods", pa.list_(pa.string()), "Ingest pods that held its connections."),
    *(_CALL_INFO := (
        _field("from_number", pa.string(), "Caller (Wavix from); null without the control plane.",
               nullable=True),
        _field("to_number", pa.string(), "Called number (Wavix to).", nullable=True),
        _field("direction", pa.string(), "inbound or outbound.", nullable=True),
        _field("tag", pa.string(), "The call's Wavix tag.", nullable=True),
        _field("answered_time", TIMESTAMP, "When the call was answered.", nullable=True),
        _field("completed_time", TIMESTAMP, "When the call ended (if known when archived).",
               nullable=True),
        _field("disposition", pa.string(), "How the call ended, as Wavix says.", nullable=True),
    )),
    _field("paused_ms", pa.int64(), "Time paused on request (silence, not transcribed).",
           nullable=True),
)
"""``calls``: one row per recording, written by the recorder with the WAV and manifest."""

SEGMENTS = _schema(
    "segments",
    *_KEYS,
    _field("track", pa.string(), "inbound or outbound: the channel transcribed."),
    _field("speaker", pa.string(), "Speaker label; the channel is the speaker (caller/agent)."),
    _field("segment", pa.int32(), "Index of the segment within the track, from 0."),
    _field("start_ms", pa.int64(), "Segment start from the recording start."),
    _field("end_ms", pa.int64(), "Segment end from the recording start."),
    _field("text", pa.string(), "Transcribed text."),
    _field(
        "confidence",
        pa.float64(),
        "exp(average token log-probability) of the segment, in [0, 1].",
        nullable=True,
    ),
)
"""``segments``: the transcript, one row per segment of each track (the analyzer)."""

METRICS = _schema(
    "metrics",
    *_KEYS,
    _field("track", pa.string(), "inbound, outbound, or call (both tracks together)."),
    _field("talk_ms", pa.int64(), "Speech time (energy talk detector, 10 ms frames)."),
    _field("silence_ms", pa.int64(), "Non-speech time."),
    _field("overtalk_ms", pa.int64(), "Time both sides speak at once (call row; 0 per track)."),
    _field("interruptions", pa.int32(), "Turns that start while the other side still speaks."),
    _field("longest_monologue_ms", pa.int64(), "Longest uninterrupted speech turn."),
    _field("words_per_minute", pa.float64(), "Words per minute of talk.", nullable=True),
    _field("rms_dbfs", pa.float64(), "RMS level in dBFS; null for silence.", nullable=True),
    _field("peak_dbfs", pa.float64(), "Peak level in dBFS; null for silence.", nullable=True),
    _field("clipping_ratio", pa.float64(), "Share of samples at full scale."),
    _field("gaps", pa.int64(), "Holes filled with silence (network quality)."),
    _field("duplicates", pa.int64(), "Chunks received more than once."),
    _field("out_of_order", pa.int64(), "Chunks received after a higher chunk number."),
    _field(
        "jitter_ms", pa.float64(), "RFC 3550 interarrival jitter of the chunks (ms).", nullable=True
    ),
)
"""``metrics``: conversation and audio metrics per track and per call (the analyzer)."""


CONTROL = _schema(
    "control",
    _field("call_id", pa.string(), "Wavix call id."),
    _field("recorded", pa.bool_(), "A stream was started for the call (see the calls table)."),
    _field("reason", pa.string(),
           "Why the call is not recorded (no_rule_matched, not_answered, stream_start_failed:\n"
           "..., stream_start_unknown); null when recorded.", nullable=True),
    _field("rule", pa.string(), "Name of the recording rule that matched.", nullable=True),
    _field("channel", pa.string(), "Stream channel asked for (inbound, outbound, both).",
           nullable=True),
    _field("stream_id", pa.string(), "The last Wavix stream started for the call.",
           nullable=True),
    _field("stream_starts", pa.int32(), "Stream start requests made (1 + resumes)."),
    _field("pauses", pa.int32(), "Pauses asked for."),
    _field("first_event_time", TIMESTAMP, "When control accepted the call's first event."),
    _field("last_event", pa.string(), "The last Wavix event type seen.", nullable=True),
    *_CALL_INFO,
)
"""``control``: one row per call the control plane saw, recorded or not (the controller)."""
TURNS = _schema(
    "turns",
    *_KEYS,
    _field("turn", pa.int32(), "Index of the turn in the recording, by start, from 0."),
    _field("track", pa.string(), "inbound or outbound: the channel that speaks."),
    _field("speaker", pa.string(), "Speaker label of the track (caller/agent)."),
    _field("start_ms", pa.int64(), "Turn start from the recording start."),
    _field("end_ms", pa.int64(), "Turn end from the recording start."),
    _field("duration_ms", pa.int64(), "end_ms - start_ms."),
    _field("responds_to", pa.int32(),
           "turn of the other side's turn this one answers or barged in on; null if none.",
           nullable=True),
    _field("response_latency_ms", pa.int64(),
           "start_ms minus the end of the turn it answers; negative for a barge-in.",
           nullable=True),
    _field("barge_in", pa.bool_(), "The turn began while the other side's turn was going on."),
    _field("yield_ms", pa.int64(),
           "For a barge-in: how long the other side kept talking after it began.",
           nullable=True),
    _field("words", pa.int32(), "Transcript words attached to the turn."),
    _field("text", pa.string(), "Transcript text of the turn (may be empty)."),
)
"""``turns``: one row per turn of each side (docs/analytics.md, turn-taking)."""

TURN_METRICS = _schema(
    "turn_metrics",
    *_KEYS,
    _field("track", pa.string(), "inbound, outbound, or call (every side together)."),
    _field("speaker", pa.string(), "Speaker label of the track; null on the call row.",
           nullable=True),
    _field("turns", pa.int32(), "Turns of the side."),
    _field("first_turn_ms", pa.int64(), "Start of the side's first turn from the recording "
           "start; null without turns.", nullable=True),
    _field("responses", pa.int32(), "Turns that answer the other side without barging in."),
    _field("response_latency_p50_ms", pa.int64(), "Median response latency (nearest rank).",
           nullable=True),
    _field("response_latency_p90_ms", pa.int64(), "90th percentile response latency.",
           nullable=True),
    _field("response_latency_max_ms", pa.int64(), "Slowest response.", nullable=True),
    _field("barge_ins", pa.int32(), "Turns of the side that began while the other spoke."),
    _field("barged_into", pa.int32(), "Barge-ins of the other side on this side's turns."),
    _field("yield_p50_ms", pa.int64(), "Median time this side kept talking once barged into.",
           nullable=True),
    _field("yield_max_ms", pa.int64(), "Longest time this side kept talking once barged into.",
           nullable=True),
    _field("dead_air_count", pa.int32(), "Silences of nobody's turn of at least the dead-air "
           "length (call row; null per track).", nullable=True),
    _field("dead_air_ms", pa.int64(), "Their total length (call row).", nullable=True),
    _field("dead_air_longest_ms", pa.int64(), "The longest (call row).", nullable=True),
)
"""``turn_metrics``: turn-taking figures per track and per call (the analyzer)."""


@dataclass(frozen=True, slots=True)
class Table:
    """One analytics table."""

    name: str
    schema: pa.Schema
    """Columns stored in each file (the partition column ``date`` is not among them)."""
    doc: str


TABLES: dict[str, Table] = {
    "calls": Table("calls", CALLS, "One row per recording."),
    "segments": Table("segments", SEGMENTS, "One row per transcript segment."),
    "metrics": Table("metrics", METRICS, "One row per recording and track, and per call."),
    "turns": Table("turns", TURNS, "One row per conversational turn."),
    "turn_metrics": Table("turn_metrics", TURN_METRICS,
                          "Turn-taking figures per recording and track, and per call."),
}


CALL_TABLES: dict[str, Table] = {
    "control": Table("control", CONTROL, "One row per call the control plane saw."),
}
"""Tables with one file per *call* (``<call id>-0``), which may exist without any
recording: not among :data:`TABLES`, whose files belong to recordings (a manifest,
verify, erase and export account for those)."""

ALL_TABLES: dict[str, Table] = {**TABLES, **CALL_TABLES}
"""Every table ``callrec query`` attaches."""


def recording_id(call_id: str, part: int) -> str:
    """The stable id of a call's recording ``part``, safe in S3 keys and file names.

    ``<call_id>-<part>`` when the call id is made of ``[A-Za-z0-9._-]`` (and does
    not start with ``.``/``_``/``-``, which query engines treat as hidden files);
    otherwise a readable prefix, ``~`` and 24 hex digits of the call id's SHA-256,
    so two ids never collide (``~`` cannot occur in the first form).
    """
    if part < 0:
        raise ValueError(f"part must be >= 0, not {part}")
    if _SAFE_ID.fullmatch(call_id):
        return f"{call_id}-{part}"
    prefix = re.sub(r"[^A-Za-z0-9._-]", "_", call_id)[:64].lstrip("._-") or "call"
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:24]
    return f"{prefix}~{digest}-{part}"


def table_key(table: str, date: str, recording_id: str) -> str:
    """``tables/<table>/date=YYYY-MM-DD/<recording_id>.parquet``: one file per recording.

    ``date`` is the UTC date of the recording start. Raises ``ValueError`` for an
    unknown table, a malformed date or an id that is unsafe as a file name.
    """
    if table not in ALL_TABLES:
        raise ValueError(f"unknown table {table!r}; known: {sorted(ALL_TABLES)}")
    if not _DATE.fullmatch(date):
        raise ValueError(f"date {date!r} is not YYYY-MM-DD")
    _date.fromisoformat(date)  # a real calendar day
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,199}", recording_id):
        raise ValueError(f"recording id {recording_id!r} is not safe in a key")
    return f"tables/{table}/{PARTITION_COLUMN}={date}/{recording_id}.parquet"
