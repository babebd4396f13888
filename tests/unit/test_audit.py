"""The audit trail: appends from several writers form one chain; tampering is reported."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec

from callrec.query import connect, run
from compliance.audit import AuditLog, decode_entry, entry_bytes, verify_log
from infra.store.local import LocalStore
from schemas.audit import GENESIS, entry_key


def filled(tmp_path: Path, n: int = 5) -> LocalStore:
    store = LocalStore(tmp_path)
    log = AuditLog(store)
    for i in range(n):
        log.append(actor="ann", action="play", target=f"call-{i}", address="10.0.0.1",
                   detail={"range": f"bytes={i}-"})
    return store


def test_entries_form_a_chain_and_the_head_is_found_without_listing(tmp_path: Path) -> None:
    store = filled(tmp_path, 7)
    entries = list(AuditLog(store).entries())
    assert [e.seq for e in entries] == list(range(7))
    assert entries[0].prev == GENESIS
    assert AuditLog(store).head()[0] == 6
    report = verify_log(store)
    assert report.ok and report.entries == 7 and report.head_seq == 6


def test_two_writers_in_parallel_never_fork_the_chain(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    logs = [AuditLog(store), AuditLog(store)]  # two processes, each with its own head

    def write(log: AuditLog, who: str) -> None:
        for i in range(40):
            log.append(actor=who, action="view", target=f"c{i}")

    threads = [threading.Thread(target=write, args=(log, f"w{i}")) for i, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = verify_log(store)
    assert report.ok, report.problems
    assert report.entries == 80


def test_an_edited_entry_is_detected(tmp_path: Path) -> None:
    store = filled(tmp_path)
    path = tmp_path / entry_key(2)
    entry = decode_entry(path.read_bytes())
    path.write_bytes(entry_bytes(msgspec.structs.replace(entry, actor="mallory")))
    report = verify_log(store)
    assert not report.ok
    assert any(entry_key(3) in p and "does not follow" in p for p in report.problems)


def test_a_removed_entry_is_detected(tmp_path: Path) -> None:
    store = filled(tmp_path)
    (tmp_path / entry_key(1)).unlink()
    problems = verify_log(store).problems
    assert any(entry_key(2) in p and "missing" in p for p in problems)


def test_an_inserted_entry_is_detected(tmp_path: Path) -> None:
    store = filled(tmp_path)
    (tmp_path / "audit" / "extra.json").write_text("{}")
    assert any("not an audit entry" in p for p in verify_log(store).problems)


def test_the_audit_view_answers_sql(tmp_path: Path) -> None:
    filled(tmp_path, 3)
    (tmp_path / "tables").mkdir()
    columns, rows = run(connect(str(tmp_path)),
                        "SELECT seq, actor, action, target, detail->>'range' AS r "
                        "FROM audit ORDER BY seq")
    assert columns == ["seq", "actor", "action", "target", "r"]
    assert rows == [(0, "ann", "play", "call-0", "bytes=0-"), (1, "ann", "play", "call-1",
                    "bytes=1-"), (2, "ann", "play", "call-2", "bytes=2-")]
