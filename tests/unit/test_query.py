"""``callrec query`` over a local archive directory."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest

from callrec import query
from callrec.cli import main
from infra.store.local import LocalStore
from tests.analyzerutil import FakeTranscriber, archive_call, pcm
from tests.unit.test_callmetrics import track
from workers.analyzer.analysis import AnalysisConfig, analyze_recording

DOCS = Path(__file__).parents[2] / "docs" / "analytics.md"
DAY = 86_400 * 10**9


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two analysed calls on two days, and one recorded but not analysed."""
    root = tmp_path_factory.mktemp("query")
    store = LocalStore(root / "archive")
    store.check()
    for i, text in enumerate(["ask not what your country can do", "the horizon seems distant"]):
        inbound = track(6000, (500, 2500), rate=24000)
        outbound = track(6000, (2000, 4000 + 1000 * i), rate=24000)
        event = archive_call(store, f"q-{i}", {"inbound": pcm(inbound), "outbound": pcm(outbound)},
                             root, start_ns=1_764_000_000_000_000_000 + i * DAY)
        analyze_recording(store, event, FakeTranscriber(text), AnalysisConfig())
    archive_call(store, "q-new", {"inbound": pcm(track(1000, (0, 500), rate=24000))}, root)
    return root / "archive"


def rows(archive: Path, sql: str) -> list[tuple[object, ...]]:
    con = query.connect(str(archive))
    try:
        return query.run(con, sql)[1]
    finally:
        con.close()


def test_the_three_tables_with_their_date_partition(archive: Path) -> None:
    assert rows(archive, "SELECT count(*) FROM calls") == [(3,)]
    assert rows(archive, "SELECT count(*) FROM segments") == [(4,)]
    assert rows(archive, "SELECT count(*) FROM metrics") == [(6,)]
    assert rows(archive, "SELECT DISTINCT date FROM metrics ORDER BY date") == [
        (dt.date(2025, 11, 24),), (dt.date(2025, 11, 25),)
    ]
    [(uri, key)] = rows(archive, "SELECT recording_uri, recording_key FROM calls "
                                 "WHERE call_id = 'q-0'")
    assert uri == f"{archive.resolve()}/recordings/q-0-0/audio.wav" and uri.endswith(str(key))
    [(start,)] = rows(archive, "SELECT start_time FROM calls WHERE call_id = 'q-1'")
    assert start == dt.datetime(2025, 11, 25, 16, 0, tzinfo=dt.UTC)


def test_full_text_search_and_per_day_talk_ratio(archive: Path) -> None:
    assert rows(archive, "SELECT call_id, speaker FROM segments WHERE text ILIKE '%COUNTRY%' "
                         "ORDER BY speaker") == [("q-0", "agent"), ("q-0", "caller")]
    per_day = rows(archive, "SELECT date, talk_ms, silence_ms, overtalk_ms FROM metrics "
                            "WHERE track = 'call' ORDER BY date")
    assert per_day == [(dt.date(2025, 11, 24), 3500, 2500, 500),
                       (dt.date(2025, 11, 25), 4500, 1500, 500)]


def test_an_empty_archive_has_empty_tables(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for table in ("calls", "segments", "metrics"):
        assert rows(tmp_path / "empty", f"SELECT count(*) FROM {table}") == [(0,)]
    assert "recording_uri" in {r[0] for r in rows(tmp_path / "empty", "DESCRIBE calls")}


def test_every_example_query_in_the_docs_runs(archive: Path) -> None:
    examples = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), re.S)
    assert len(examples) >= 5
    for sql in examples:
        query.run(query.connect(str(archive)), sql)  # raises QueryError if one is wrong
    [(hits,)] = rows(archive, "SELECT count(*) FROM (" + examples[3].rstrip().rstrip(";") + ")")
    assert hits == 2, "the full-text example finds 'country' on both tracks of q-0"


def test_output_formats() -> None:
    columns = ["name", "n", "x", "when", "tags", "missing"]
    data = [("a", 1, 0.5, dt.date(2025, 1, 2), ["p", "q"], None),
            ("long name", 22, 1 / 3, dt.date(2025, 1, 3), [], None)]
    table = query.render(columns, data, "table")
    lines = table.splitlines()
    assert lines[0].split() == columns and set(lines[1]) == {"-", " "}
    assert lines[2].startswith("a          ") and " 1  " in lines[2]
    assert "0.333333" in lines[3] and lines[-1] == "(2 rows)"
    parsed = list(csv.reader(io.StringIO(query.render(columns, data, "csv"))))
    assert parsed[1] == ["a", "1", "0.5", "2025-01-02", '["p", "q"]', ""]
    assert json.loads(query.render(columns, data, "json"))[0] == {
        "name": "a", "n": 1, "x": 0.5, "when": "2025-01-02", "tags": ["p", "q"], "missing": None
    }
    assert query.render(["t"], [("x" * 100,)], "table", max_width=10).splitlines()[2] == (
        "x" * 9 + "…"
    )


def test_the_command_line(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["query", "--archive", str(archive), "--format", "json",
                 "SELECT call_id, track, talk_ms FROM metrics WHERE call_id = 'q-1' "
                 "ORDER BY track"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == [
        {"call_id": "q-1", "track": "call", "talk_ms": 4500},
        {"call_id": "q-1", "track": "inbound", "talk_ms": 2000},
        {"call_id": "q-1", "track": "outbound", "talk_ms": 3000},
    ]
    assert main(["query", "--archive", str(archive), "SELECT nope FROM calls"]) == 1
    assert "nope" in capsys.readouterr().err
    assert main(["query", "--archive", str(archive / "missing"), "SELECT 1"]) == 1


def test_table_csv_and_sql_from_stdin_through_the_command_line(
    archive: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    sql = "SELECT call_id, track, talk_ms FROM metrics WHERE call_id = 'q-1' ORDER BY track"
    assert main(["query", "--archive", str(archive), "--format", "table", sql]) == 0
    assert capsys.readouterr().out == (
        "call_id  track     talk_ms\n"
        "-------  --------  -------\n"
        "q-1      call         4500\n"
        "q-1      inbound      2000\n"
        "q-1      outbound     3000\n"
        "(3 rows)\n"
    )
    assert main(["query", "--archive", str(archive), "--format", "csv",
                 "SELECT call_id, tracks, incomplete_reason, duration_ms FROM calls "
                 "ORDER BY call_id"]) == 0
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == [
        ["call_id", "tracks", "incomplete_reason", "duration_ms"],
        ["q-0", '["inbound", "outbound"]', "", "6000"],
        ["q-1", '["inbound", "outbound"]', "", "6000"],
        ["q-new", '["inbound"]', "", "1000"],
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO(
        "SELECT speaker, text\nFROM segments\nWHERE call_id = 'q-1'\nORDER BY speaker;\n"
    ))
    assert main(["query", "--archive", str(archive), "--format", "json", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"speaker": "agent", "text": "the horizon seems distant"},
        {"speaker": "caller", "text": "the horizon seems distant"},
    ]


# -- the example queries of docs/analytics.md, on rows whose answers are known ----------


def doc_example(intro: str) -> str:
    """The SQL of the docs/analytics.md example whose introduction starts with ``intro``."""
    match = re.search(re.escape(intro) + r"[^`]*```sql\n(.*?)```", DOCS.read_text(), re.S)
    assert match, f"no example after {intro!r} in {DOCS}"
    return match.group(1)


def metric_row(rec_id: str, track: str, talk_ms: int, silence_ms: int, overtalk_ms: int = 0,
               interruptions: int = 0) -> dict[str, object]:
    return {"call_id": rec_id[:-2], "part": 0, "recording_id": rec_id, "track": track,
            "talk_ms": talk_ms, "silence_ms": silence_ms, "overtalk_ms": overtalk_ms,
            "interruptions": interruptions, "longest_monologue_ms": talk_ms,
            "words_per_minute": None, "rms_dbfs": -20.0, "peak_dbfs": -6.0,
            "clipping_ratio": 0.0, "gaps": 0, "duplicates": 0, "out_of_order": 0,
            "jitter_ms": None}


def segment_rows(rec_id: str, spans: list[tuple[str, int, int]]) -> list[dict[str, object]]:
    index = {"inbound": 0, "outbound": 0}
    out = []
    for side, start, end in spans:
        out.append({"call_id": rec_id[:-2], "part": 0, "recording_id": rec_id, "track": side,
                    "speaker": {"inbound": "caller", "outbound": "agent"}[side],
                    "segment": index[side], "start_ms": start, "end_ms": end, "text": "words",
                    "confidence": 0.9})
        index[side] += 1
    return out


@pytest.fixture(scope="module")
def constructed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """metrics and segments rows written by the project's Parquet writer at the analyzer's keys.

    d1 and d2 on 2025-11-24, d3 on 2025-11-25 (10 s calls)::

        d1  talk 6000 (caller 4000, agent 3000, overtalk 1000), segments 0-1000 caller,
            500-3000 agent, 9000-9500 caller: a 6 s pause after 3000
        d2  talk 3000, silence 7000, segments 0-1000 and 6000-7000: a 5 s pause
        d3  talk 9000, overtalk 2500; a caller segment 0-8000 covers the agent's 2000-2500,
            so 2500 -> 8200 is no pause (the caller talks until 8000)
    """
    from infra.parquet import rows_to_parquet
    from schemas.tables import table_key

    root = tmp_path_factory.mktemp("examples")
    store = LocalStore(root)
    store.check()
    calls = {
        ("2025-11-24", "d1-0"): (
            [metric_row("d1-0", "inbound", 4000, 6000, interruptions=0),
             metric_row("d1-0", "outbound", 3000, 7000, interruptions=1),
             metric_row("d1-0", "call", 6000, 4000, 1000, 1)],
            [("inbound", 0, 1000), ("outbound", 500, 3000), ("inbound", 9000, 9500)]),
        ("2025-11-24", "d2-0"): (
            [metric_row("d2-0", "inbound", 3000, 7000),
             metric_row("d2-0", "call", 3000, 7000)],
            [("inbound", 0, 1000), ("inbound", 6000, 7000)]),
        ("2025-11-25", "d3-0"): (
            [metric_row("d3-0", "inbound", 8000, 2000),
             metric_row("d3-0", "outbound", 3500, 6500, interruptions=2),
             metric_row("d3-0", "call", 9000, 1000, 2500, 2)],
            [("inbound", 0, 8000), ("outbound", 2000, 2500), ("outbound", 8200, 9000)]),
    }
    for (date, rec_id), (metrics, spans) in calls.items():
        store.put_bytes(table_key("metrics", date, rec_id), rows_to_parquet("metrics", metrics),
                        "application/vnd.apache.parquet")
        store.put_bytes(table_key("segments", date, rec_id),
                        rows_to_parquet("segments", segment_rows(rec_id, spans)),
                        "application/vnd.apache.parquet")
    return root


def test_the_talk_ratio_per_day_example(constructed: Path) -> None:
    assert rows(constructed, doc_example("Calls per day with their average talk ratio")) == [
        (dt.date(2025, 11, 24), 2, 0.45, 0.5),  # (0.6 + 0.3) / 2; (1000 + 0) / 2 ms
        (dt.date(2025, 11, 25), 1, 0.9, 2.5),
    ]


def test_the_mostly_silence_example(constructed: Path) -> None:
    assert rows(constructed, doc_example("Calls that are mostly silence")) == [
        ("d2-0", dt.date(2025, 11, 24), 7000, 10000)
    ]


def test_the_long_silences_example(constructed: Path) -> None:
    assert rows(constructed, doc_example("Long silences inside calls")) == [
        ("d1-0", 3000, 6000), ("d2-0", 1000, 5000)
    ]


def test_the_who_talks_more_example(constructed: Path) -> None:
    assert rows(constructed, doc_example("Who talks more")) == [
        ("d1-0", round(3000 / 7000, 3), 0, 1),
        ("d2-0", None, 0, None),  # no agent track: no share
        ("d3-0", round(3500 / 11500, 3), 0, 2),
    ]


NEW_CALLS_COLUMNS = ("from_number", "to_number", "direction", "tag", "answered_time",
                     "completed_time", "disposition", "paused_ms")


def test_a_calls_file_of_the_old_schema_reads_with_the_new_columns_null(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Parquet written before the control plane's columns existed still reads, with them null,
    beside a file of today's schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.tables import CALLS
    from tests.unit.test_tables import calls_row

    old_schema = pa.schema([f for f in CALLS if f.name not in NEW_CALLS_COLUMNS],
                           metadata=CALLS.metadata)
    folder = tmp_path / "tables" / "calls" / "date=2024-05-01"
    folder.mkdir(parents=True)
    old_row = {k: v for k, v in calls_row("old").items() if k not in NEW_CALLS_COLUMNS}
    pq.write_table(pa.Table.from_pylist([old_row], schema=old_schema), folder / "old-0.parquet")
    new_row = calls_row("new", from_number="+4420", direction="inbound", paused_ms=1200)
    pq.write_table(pa.Table.from_pylist([new_row], schema=CALLS), folder / "new-0.parquet")
    code = main(["query", "--archive", str(tmp_path), "--format", "json",
                 "SELECT call_id, from_number, direction, paused_ms FROM calls ORDER BY call_id"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {"call_id": "new", "from_number": "+4420", "direction": "inbound", "paused_ms": 1200},
        {"call_id": "old", "from_number": None, "direction": None, "paused_ms": None},
    ]
