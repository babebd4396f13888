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
from tests.analyzerutil import FakeTranscriber, archive_call, pcm
from tests.unit.test_callmetrics import track
from workers.analyzer.analysis import AnalysisConfig, analyze_recording
from workers.store import LocalStore

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
