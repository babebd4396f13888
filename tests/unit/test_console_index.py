"""The console's calls index kept across restarts (console/index.py): a restarted index
is ready at once and reads only what was archived meanwhile; another table layout
builds it again; files that leave the archive, and erased recordings, take their rows;
unreadable files are skipped once; a large load runs in a child process. Over a local
archive written by the recorder's and analyzer's own code (the S3 reader and its child
process are in tests/integration/test_console_index.py)."""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from starlette.testclient import TestClient

from compliance.erasure import erase_recordings
from console import indexdb
from console.app import Console
from console.index import CallIndex, IndexLockedError
from infra.store.local import LocalStore
from schemas.compliance import Tombstone, encode, tombstone_key
from schemas.tables import TABLES
from tests.analyzerutil import START_NS
from tests.consoleutil import PASSWORD, archive_analyzed, console_settings, tone, users_file

DAY_NS = 86_400 * 1_000_000_000
FILES_PER_RECORDING = 3  # calls, segments, metrics


def add_call(store: LocalStore, call_id: str, work: Path, day: int = 0) -> str:
    archive_analyzed(
        store,
        call_id,
        {"inbound": tone(1000), "outbound": tone(1000, freq=330)},
        [(0, 800, f"{call_id} says hello")],
        work,
        start_ns=START_NS + day * DAY_NS,
    )
    return f"{call_id}-0"


@pytest.fixture
def archive(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "archive")
    for i in range(3):
        add_call(store, f"call-{i}", tmp_path, day=i)
    return store


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


class Opened:
    """Every CallIndex a test opens, closed at its end."""

    def __init__(self) -> None:
        self.all: list[CallIndex] = []

    def __call__(self, store: Any, directory: Path, **options: Any) -> CallIndex:
        index = CallIndex(store, directory=str(directory), **options)
        self.all.append(index)
        return index


@pytest.fixture
def opened() -> Iterator[Opened]:
    keep = Opened()
    yield keep
    for index in keep.all:
        if not index._closing.is_set():
            index.close()


def segments_of(index: CallIndex, recording_id: str) -> list[str]:
    rows = index.cursor().execute(
        "SELECT text FROM segments_idx WHERE recording_id = ? ORDER BY start_ms", [recording_id]
    )
    return [text for (text,) in rows.fetchall()]


def test_a_restarted_index_is_ready_at_once_and_reads_only_what_is_new(
    archive: LocalStore, index_dir: Path, tmp_path: Path, opened: Opened
) -> None:
    first = opened(archive, index_dir)
    assert not first.loaded  # nothing kept yet: not ready until the first load
    assert first.load() == 3 * FILES_PER_RECORDING
    assert first.loaded and first.count() == 3
    first.close()

    late = add_call(archive, "late-1", tmp_path, day=5)  # archived while it was down
    again = opened(archive, index_dir)
    assert again.loaded, "a kept index is ready before reading anything"
    assert again.count() == 3
    assert again.load() == FILES_PER_RECORDING, "only the new recording's files are read"
    assert again.count() == 4 and again.has(late)
    assert segments_of(again, late) == ["late-1 says hello"] * 2  # one a channel
    assert again.refresh() == 0


def test_an_index_built_for_other_tables_is_built_again(
    archive: LocalStore, index_dir: Path, opened: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = opened(archive, index_dir)
    first.load()
    first.close()
    before = indexdb.fingerprint()
    calls = TABLES["calls"]
    wider = calls.schema.append(pa.field("added_later", pa.string()))
    monkeypatch.setitem(TABLES, "calls", dataclasses.replace(calls, schema=wider))
    assert indexdb.fingerprint() != before, "a new column changes the fingerprint"

    again = opened(archive, index_dir)
    assert not again.loaded and again.count() == 0, "built again from nothing"
    assert again.load() == 3 * FILES_PER_RECORDING
    assert again.count() == 3
    column = again.cursor().execute("SELECT count(added_later) FROM calls_idx").fetchall()
    assert column == [(0,)], "the new column is there, null for files written before it"


def test_an_index_file_that_cannot_be_read_is_built_again(
    archive: LocalStore, index_dir: Path, opened: Opened
) -> None:
    index_dir.mkdir()
    (index_dir / "index.duckdb").write_bytes(b"not a database" * 1000)
    index = opened(archive, index_dir)
    assert not index.loaded
    index.load()
    assert index.count() == 3


def test_files_that_leave_the_archive_and_erased_recordings_take_their_rows(
    archive: LocalStore, index_dir: Path, opened: Opened
) -> None:
    index = opened(archive, index_dir)
    index.load()
    erase_recordings(archive, ["call-1-0"], reason="request 7", actor="dpo")
    index.refresh()
    assert not index.has("call-1-0") and segments_of(index, "call-1-0") == []
    assert index.count() == 2

    # A tombstone alone (the rows may sit in a compacted file that stays, rewritten under
    # the same key): its recording's rows go too.
    stone = Tombstone(
        recording_id="call-2-0",
        call_id="call-2",
        date="2025-11-26",
        erased_by="dpo",
        erased_at="2025-12-01T00:00:00Z",
        reason="request 8",
        objects=[],
    )
    archive.put_bytes(tombstone_key("call-2-0"), encode(stone), "application/json")
    assert index.refresh() == 0
    assert not index.has("call-2-0") and segments_of(index, "call-2-0") == []
    index.close()
    assert opened(archive, index_dir).count() == 1, "kept as it was left"


class NotLocal:
    """The local archive behind a store that is not a LocalStore: the fetching reader
    (the one S3 uses) instead of DuckDB's read_parquet by path."""

    def __init__(self, store: LocalStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("reader", ["local", "fetch"])
def test_an_unreadable_file_is_skipped_once_and_the_rest_loads(
    archive: LocalStore, index_dir: Path, opened: Opened, reader: str, caplog: Any
) -> None:
    bad = "tables/calls/date=2025-11-24/broken-0.parquet"
    archive.put_bytes(bad, b"PAR1 not really", "application/vnd.apache.parquet")
    store = archive if reader == "local" else NotLocal(archive)
    index = opened(store, index_dir)
    with caplog.at_level(logging.WARNING, logger="console.loader"):
        assert index.load() == 3 * FILES_PER_RECORDING + 1
    assert f"skipping {bad}" in caplog.text
    assert index.count() == 3
    assert index.refresh() == 0, "not tried again"


def test_large_loads_run_in_a_child_process(
    archive: LocalStore, index_dir: Path, tmp_path: Path, opened: Opened, caplog: Any
) -> None:
    index = opened(archive, index_dir, child_from=1)
    assert index.count() == 0 and not index.loaded
    with caplog.at_level(logging.INFO, logger="console.indexbuild"):
        # The first load: the child builds the file, then this process opens it.
        assert index.load() == 3 * FILES_PER_RECORDING
        assert re.search(r"a build process read 9 files \(\d+ rows, 0 skipped", caplog.text)
        assert index.count() == 3 and segments_of(index, "call-0-0") == ["call-0 says hello"] * 2
        # A catch-up while serving: the child fills a stage file, this process merges it.
        late = add_call(archive, "late-3", tmp_path, day=7)
        caplog.clear()
        assert index.refresh() == FILES_PER_RECORDING
        assert re.search(r"a build process read 3 files \(\d+ rows, 0 skipped", caplog.text)
    assert index.has(late) and segments_of(index, late) == ["late-3 says hello"] * 2
    assert not (index_dir / "stage.duckdb").exists()


def test_an_index_another_process_holds_is_refused(
    archive: LocalStore, index_dir: Path, opened: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened(archive, index_dir).close()  # the file exists
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('open', flush=True); "
            "sys.stdin.read()",
            str(index_dir / "index.duckdb"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        monkeypatch.setattr(indexdb, "LOCK_WAIT_S", 0.5)
        with pytest.raises(IndexLockedError, match="open in another process"):
            CallIndex(archive, directory=str(index_dir))
    finally:
        holder.communicate("", timeout=30)
    assert (index_dir / "index.duckdb").exists(), "never deleted for being locked"


def test_a_restarted_console_is_ready_and_shows_what_was_archived_meanwhile(
    archive: LocalStore, index_dir: Path, tmp_path: Path
) -> None:
    settings = console_settings(
        str(archive.root), users_file(tmp_path / "users"), console_index_dir=str(index_dir)
    )

    def calls(client: TestClient) -> list[str]:
        return re.findall(r'data-recording="([^"]+)"', client.get("/calls").text)

    def log_in(client: TestClient) -> None:
        form = client.get("/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', form)
        assert token
        answer = client.post(
            "/login",
            data={"csrf": token.group(1), "user": "viewer", "password": PASSWORD},
            follow_redirects=False,
        )
        assert answer.status_code == 303

    with TestClient(Console(settings, archive).app(), base_url="https://testserver") as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "index never loaded"
            time.sleep(0.02)
        log_in(c)
        assert sorted(calls(c)) == ["call-0-0", "call-1-0", "call-2-0"]

    late = add_call(archive, "late-2", tmp_path, day=6)
    with TestClient(Console(settings, archive).app(), base_url="https://testserver") as c:
        assert c.get("/readyz").status_code == 200, "ready at once on the kept index"
        log_in(c)
        deadline = time.monotonic() + 60
        while late not in calls(c):  # read in the background, then shown
            assert time.monotonic() < deadline, "the new recording never showed"
            time.sleep(0.05)
        assert len(calls(c)) == 4
