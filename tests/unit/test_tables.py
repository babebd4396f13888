"""Table schemas, the Hive key layout and deterministic Parquet files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.parquet import RowError, read_parquet, rows_to_parquet
from schemas.tables import (
    PARTITION_COLUMN,
    PARTITION_SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    recording_id,
    table_key,
)

START_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z


def calls_row(call_id: str = "c1", part: int = 0, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "call_id": call_id,
        "part": part,
        "recording_id": recording_id(call_id, part),
        "start_time": START_MS,
        "end_time": START_MS + 60_000,
        "duration_ms": 60_000,
        "tracks": ["inbound", "outbound"],
        "channels": 2,
        "complete": False,
        "incomplete_reason": "stream s1: gaps, 3 chunks missing",
        "codec": "L16/24000",
        "sample_rate": 24000,
        "recording_key": "recordings/c1-0/audio.wav",
        "manifest_key": "recordings/c1-0/manifest.json",
        "wav_sha256": "ab" * 32,
        "wav_bytes": 5_760_044,
        "gaps": 1,
        "gap_ms": 60,
        "missing_chunks": 3,
        "duplicates": 2,
        "out_of_order": 4,
        "overlaps": 0,
        "streams": 2,
        "ingest_pods": ["ingest-0", "ingest-1"],
        "from_number": None,
        "to_number": None,
        "direction": None,
        "tag": None,
        "answered_time": None,
        "completed_time": None,
        "disposition": None,
        "paused_ms": None,
    }
    row.update(changes)
    return row


def test_every_table_is_versioned_and_keyed_by_recording():
    for name, table in TABLES.items():
        meta = table.schema.metadata
        assert meta[b"callrec.schema_version"] == str(SCHEMA_VERSION).encode()
        assert meta[b"callrec.table"] == name.encode()
        assert table.schema.names[:3] == ["call_id", "part", "recording_id"]
        assert PARTITION_COLUMN not in table.schema.names, "the partition lives in the path"
        assert all(f.metadata and f.metadata[b"description"] for f in table.schema)
    assert TABLES["calls"].schema.field("start_time").type == pa.timestamp("ms", tz="UTC")


def test_table_key_layout():
    assert table_key("calls", "2024-05-01", "c1-0") == "tables/calls/date=2024-05-01/c1-0.parquet"
    for bad in (("nope", "2024-05-01", "c1-0"), ("calls", "2024-5-1", "c1-0"),
                ("calls", "2024-02-30", "c1-0"), ("calls", "2024-05-01", "../x"),
                ("calls", "2024-05-01", "_hidden")):  # fmt: skip
        with pytest.raises(ValueError):
            table_key(*bad)


@given(st.text(min_size=1, max_size=128), st.integers(0, 1000))
def test_recording_ids_are_key_safe_stable_and_distinct(call_id, part):
    rid = recording_id(call_id, part)
    assert rid == recording_id(call_id, part)
    table_key("calls", "2024-05-01", rid)  # does not raise
    assert rid != recording_id(call_id + "x", part)
    assert rid != recording_id(call_id, part + 1)


def test_recording_id_keeps_plain_call_ids_readable():
    assert recording_id("CA1234-abc", 2) == "CA1234-abc-2"
    assert recording_id("a/b c", 0).startswith("a_b_c~")


def test_parquet_bytes_are_deterministic():
    rows = [calls_row(), calls_row("c2", complete=True, incomplete_reason=None)]
    assert rows_to_parquet("calls", rows) == rows_to_parquet("calls", [dict(r) for r in rows])
    assert rows_to_parquet("calls", rows) != rows_to_parquet("calls", rows[:1])


def test_parquet_round_trips_with_the_schema():
    data = rows_to_parquet("calls", [calls_row()])
    table = read_parquet(data)
    assert table.schema.equals(TABLES["calls"].schema, check_metadata=False)
    assert table.schema.metadata[b"callrec.schema_version"] == b"1"
    row = table.to_pylist()[0]
    assert row["start_time"] == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    assert row["tracks"] == ["inbound", "outbound"]


def test_rows_that_do_not_match_the_schema_are_refused():
    with pytest.raises(RowError, match="unknown columns \\['gap_msec'\\]"):
        rows_to_parquet("calls", [{**calls_row(), "gap_msec": 1}])
    row = calls_row()
    del row["codec"]
    with pytest.raises(RowError, match="missing columns \\['codec'\\]"):
        rows_to_parquet("calls", [row])
    with pytest.raises(RowError, match="null in required columns \\['wav_sha256'\\]"):
        rows_to_parquet("calls", [calls_row(wav_sha256=None)])
    with pytest.raises(RowError):
        rows_to_parquet("calls", [{**calls_row(), "part": "zero"}])
    with pytest.raises(RowError):
        rows_to_parquet("nope", [])


def test_segments_and_metrics_encode():
    keys = {"call_id": "c1", "part": 0, "recording_id": "c1-0"}
    segment = {**keys, "track": "inbound", "speaker": "caller", "segment": 0, "start_ms": 0,
               "end_ms": 1500, "text": "ask not", "confidence": 0.93}  # fmt: skip
    assert read_parquet(rows_to_parquet("segments", [segment])).num_rows == 1
    metric = {name: 0 for name in TABLES["metrics"].schema.names}
    metric.update(keys, track="call", rms_dbfs=None, peak_dbfs=None, jitter_ms=1.5)
    assert read_parquet(rows_to_parquet("metrics", [metric])).num_rows == 1


def write_dataset(root: Path) -> None:
    for call_id, start in (("c1", START_MS), ("c2", START_MS + 86_400_000)):
        row = calls_row(call_id, start_time=start, end_time=start + 60_000)
        date = dt.datetime.fromtimestamp(start / 1000, dt.UTC).strftime("%Y-%m-%d")
        path = root / table_key("calls", date, str(row["recording_id"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rows_to_parquet("calls", [row]))


def test_hive_partitioned_tables_read_with_pyarrow(tmp_path):
    write_dataset(tmp_path)
    dataset = ds.dataset(
        tmp_path / "tables" / "calls",
        format="parquet",
        partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
    )
    table = dataset.to_table(filter=ds.field("date") == "2024-05-02")
    assert table.column("call_id").to_pylist() == ["c2"]
    assert dataset.to_table().num_rows == 2


def test_hive_partitioned_tables_read_with_duckdb(tmp_path):
    import duckdb

    write_dataset(tmp_path)
    glob = str(tmp_path / "tables" / "calls" / "*" / "*.parquet")
    rows = duckdb.sql(
        f"SELECT call_id, CAST(date AS VARCHAR), gap_ms FROM read_parquet('{glob}', "
        "hive_partitioning = true) ORDER BY call_id"
    ).fetchall()
    assert rows == [("c1", "2024-05-01", 60), ("c2", "2024-05-02", 60)]
