"""Compliance operations on a local archive built by the recorder's and analyzer's code:
verify (and tampering), holds, retention, erasure (and tombstones), exports, the CLI."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from callrec.query import connect, run
from compliance.audit import AuditLog
from compliance.erasure import erase_call, erase_number, recordings_by_number
from compliance.errors import NoNumbersError, OnHoldError
from compliance.export import check_bundle, export_call, new_key_pair
from compliance.holds import clear_hold, list_holds, set_hold
from compliance.policy import RetentionPolicy, RetentionRule
from compliance.retention import apply_retention
from compliance.verify import verify_archive, verify_recording
from infra.store.local import LocalStore
from schemas.audit import entry_key
from schemas.layout import manifest_key, peaks_key, transcript_key, wav_key
from schemas.tables import TABLES, table_key
from tests.complianceutil import archive_calls, flip_byte, run_cli, run_json

DAY = "2025-11-24"


@pytest.fixture
def archive(tmp_path: Path) -> tuple[LocalStore, list[str]]:
    store = LocalStore(tmp_path / "archive")
    store.check()
    work = tmp_path / "work"
    work.mkdir()
    return store, archive_calls(store, work, ["call-a", "call-b", "call-c"])


def kinds(report: object) -> list[tuple[str, str]]:
    return sorted((p.kind, p.key) for p in report.problems)  # type: ignore[attr-defined]


def test_a_fresh_archive_verifies_clean(archive: tuple[LocalStore, list[str]]) -> None:
    store, ids = archive
    report = verify_archive(store)
    assert report.ok, report.problems
    assert report.recordings == 3
    # WAV, waveform peaks and calls file of each recording, hashed against its manifest
    assert report.objects == 9
    assert report.bytes == sum(
        store.size(wav_key(r)) + store.size(peaks_key(r)) + store.size(table_key("calls", DAY, r))
        for r in ids
    )


def test_each_tampering_is_reported_exactly(archive: tuple[LocalStore, list[str]]) -> None:
    store, (a, b, c) = archive
    flip_byte(store, wav_key(a), 1000)
    store.delete(manifest_key(b))
    store.delete(transcript_key(c))
    store.put_bytes(f"recordings/{c}/extra.bin", b"not ours", "application/octet-stream")
    report = verify_archive(store)
    assert kinds(report) == [
        ("mismatch", wav_key(a)),
        ("missing", manifest_key(b)),
        ("missing", transcript_key(c)),
        ("unclaimed", f"recordings/{c}/extra.bin"),
    ]
    mismatch = report.problems[0]
    assert "manifest says" in mismatch.detail and mismatch.recording_id == a


def test_a_changed_calls_row_is_reported(archive: tuple[LocalStore, list[str]]) -> None:
    store, (a, _, _) = archive
    key = table_key("calls", DAY, a)
    table = pq.read_table(io.BytesIO(store.get_bytes(key)))
    table = table.set_column(
        table.schema.get_field_index("duration_ms"), "duration_ms", pa.array([1], pa.int64())
    )
    out = io.BytesIO()
    pq.write_table(table, out)
    store.put_bytes(key, out.getvalue(), "application/vnd.apache.parquet")
    report = verify_archive(store)
    # the file no longer hashes as listed, and its row disagrees with the manifest
    assert kinds(report) == [("calls_mismatch", key), ("mismatch", key)]
    assert "duration_ms=1" in next(p for p in report.problems if p.kind == "calls_mismatch").detail


def test_hold_keeps_a_recording_through_retention_and_erase(
    archive: tuple[LocalStore, list[str]],
) -> None:
    store, (a, b, c) = archive
    set_hold(store, [a], "matter 42", "ann")
    assert [h.recording_id for h in list_holds(store)] == [a]
    policy = RetentionPolicy(days=1)
    later = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    dry = apply_retention(store, policy, "ops", dry_run=True, at=later)
    assert {d.recording_id: d.outcome for d in dry.decisions} == {
        a: "held",
        b: "would_delete",
        c: "would_delete",
    }
    assert store.exists(manifest_key(b))  # dry run deleted nothing
    report = apply_retention(store, policy, "ops", at=later)
    assert report.count("deleted") == 2 and report.count("held") == 1
    assert store.list_keys("recordings/") == sorted(
        [manifest_key(a), wav_key(a), peaks_key(a), transcript_key(a)]
    )
    with pytest.raises(OnHoldError, match="legal hold"):
        erase_call(store, "call-a", "GDPR request 7", "bob")
    assert store.exists(wav_key(a))
    assert verify_archive(store).ok
    # idempotent: nothing left to do for the deleted ones
    assert apply_retention(store, policy, "ops", at=later).count("deleted") == 0

    clear_hold(store, [a], "matter closed", "ann")
    assert list_holds(store) == []
    assert apply_retention(store, policy, "ops", at=later).count("deleted") == 1
    assert store.list_keys("recordings/") == [] and store.list_keys("tables/") == []
    actions = [e.action for e in AuditLog(store).entries()]
    assert actions.count("retention.delete") == 3
    assert actions[0] == "hold.set" and "hold.clear" in actions


def test_erase_leaves_the_other_calls_and_a_tombstone_verify_accepts(
    archive: tuple[LocalStore, list[str]],
) -> None:
    store, (_, b, _) = archive
    before = {k: store.get_bytes(k) for k in store.list_keys("") if b not in k}
    report = erase_call(store, "call-b", "GDPR request 7", "bob")
    assert [s.recording_id for s in report.erased] == [b]
    assert not [k for k in store.list_keys("recordings/") + store.list_keys("tables/") if b in k]
    for key, data in before.items():  # the others' objects are byte for byte the same
        if not key.startswith("audit/"):
            assert store.get_bytes(key) == data
    con = connect(str(store.root))
    assert run(con, "SELECT call_id FROM calls ORDER BY 1")[1] == [("call-a",), ("call-c",)]
    assert run(con, "SELECT DISTINCT call_id FROM segments ORDER BY 1")[1] == [
        ("call-a",),
        ("call-c",),
    ]
    assert run(con, "SELECT recording_id, reason, objects FROM tombstones")[1] == [
        (b, "GDPR request 7", 4 + len(TABLES))  # manifest, WAV, peaks, transcript, tables
    ]
    stone = report.erased[0]
    assert {o.key for o in stone.objects} == {
        wav_key(b),
        peaks_key(b),
        manifest_key(b),
        transcript_key(b),
        *(table_key(t, DAY, b) for t in TABLES),
    }
    verified = verify_archive(store)
    assert verified.ok and verified.erased == [b] and verified.recordings == 2
    assert verify_recording(store, b).erased == [b]


def test_erase_rewrites_a_file_that_holds_several_recordings(
    archive: tuple[LocalStore, list[str]],
) -> None:
    store, (a, b, c) = archive
    # a compacted file of the whole day, beside the per-recording ones
    rows = pa.concat_tables(
        [
            pq.read_table(io.BytesIO(store.get_bytes(table_key("segments", DAY, r))))
            for r in (a, b, c)
        ]
    )
    out = io.BytesIO()
    pq.write_table(rows, out)
    compacted = f"tables/segments/date={DAY}/compacted-0001.parquet"
    store.put_bytes(compacted, out.getvalue(), "application/vnd.apache.parquet")
    report = erase_call(store, "call-b", "GDPR request 8", "bob")
    assert report.rewritten == [compacted]
    left = pq.read_table(io.BytesIO(store.get_bytes(compacted)))
    assert sorted(set(left["call_id"].to_pylist())) == ["call-a", "call-c"]
    assert left.num_rows == rows.num_rows - sum(
        1 for r in rows["call_id"].to_pylist() if r == "call-b"
    )


def test_erase_by_number_needs_the_number_columns(archive: tuple[LocalStore, list[str]]) -> None:
    store, _ = archive
    with pytest.raises(NoNumbersError, match="from_number/to_number"):
        recordings_by_number(store, "+15551234567")
    code, _ = run_cli("erase", "--archive", str(store.root), "--number", "+1555", "--reason", "x")
    assert code == 1


def test_retention_rules_by_a_column_the_archive_lacks_never_match(
    archive: tuple[LocalStore, list[str]],
) -> None:
    store, _ = archive
    policy = RetentionPolicy(days=0, rules=(RetentionRule(days=1, direction="inbound"),))
    later = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    report = apply_retention(store, policy, "ops", dry_run=True, at=later)
    assert {d.outcome for d in report.decisions} == {"kept"}
    assert RetentionRule(days=1, number_prefix="+44").matches({"from_number": "+4420"})


def test_an_export_verifies_and_fails_after_any_change(
    archive: tuple[LocalStore, list[str]], tmp_path: Path
) -> None:
    store, (a, _, _) = archive
    private, public = new_key_pair()
    bundle = tmp_path / "bundle.zip"
    result = export_call(store, "call-a", bundle, private.decode(), "ann")
    assert result.verified
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        assert zf.read(f"{a}/audio.wav") == store.get_bytes(wav_key(a))
    assert {
        f"{a}/audio.wav",
        f"{a}/manifest.json",
        f"{a}/transcript.json",
        f"{a}/custody.json",
        "verification.json",
        "audit.json",
        "SHA256SUMS",
        "SIGNATURE.json",
    } <= names
    assert check_bundle(bundle, public.decode()).ok
    _, other = new_key_pair()
    assert not check_bundle(bundle, other.decode()).ok
    for name in sorted(names - {"SHA256SUMS", "SIGNATURE.json"}):
        changed = tmp_path / "changed.zip"
        with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(changed, "w") as dst:
            for item in src.namelist():
                data = src.read(item)
                dst.writestr(item, data + b"x" if item == name else data)
        check = check_bundle(changed, public.decode())
        assert check.problems == [f"{name}: sha256 differs from SHA256SUMS (changed)"]


def test_cli_export_new_key_sign_and_check(
    archive: tuple[LocalStore, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = archive
    assert run_cli("export", "--new-key", str(tmp_path / "evidence"))[0] == 0
    monkeypatch.setenv("CALLREC_EXPORT_SIGNING_KEY", (tmp_path / "evidence.key").read_text())
    bundle = tmp_path / "b.zip"
    code, out = run_cli("export", "--archive", str(store.root), "call-a", "-o", str(bundle))
    assert code == 0, out
    code, out = run_cli("export", "--check", str(bundle), "--key", str(tmp_path / "evidence.pub"))
    assert code == 0 and "signature and every file verify" in out
    with zipfile.ZipFile(bundle, "a") as zf:
        zf.writestr("extra.txt", b"planted")
    code, out = run_cli("export", "--check", str(bundle), "--key", str(tmp_path / "evidence.pub"))
    assert code == 1 and "extra.txt: in the bundle but not in SHA256SUMS (added)" in out


def test_cli_verify_hold_and_audit(archive: tuple[LocalStore, list[str]]) -> None:
    store, (a, b, _) = archive
    root = str(store.root)
    code, report = run_json("verify", "--archive", root)
    assert code == 0 and report["ok"] and report["recordings"] == 3  # type: ignore[index]
    code, out = run_cli(
        "hold",
        "set",
        "--archive",
        root,
        "--reason",
        "matter 9",
        "--sql",
        "SELECT recording_id FROM calls WHERE call_id = 'call-b'",
    )
    assert code == 0 and f"set: {b}" in out
    con = connect(root)
    assert run(con, "SELECT recording_id, active, reason FROM holds")[1] == [(b, True, "matter 9")]
    code, out = run_cli("erase", "--archive", root, "--call-id", "call-b", "--reason", "r")
    assert code == 1 and store.exists(wav_key(b))
    flip_byte(store, wav_key(a), 2000)
    code, report = run_json("verify", "--archive", root, "--record")
    assert code == 1
    assert [(p["kind"], p["key"]) for p in report["problems"]] == [  # type: ignore[index]
        ("mismatch", wav_key(a))
    ]
    assert b'"problems": 1' in store.get_bytes("verify/last.json")

    code, out = run_cli("audit", "verify", "--archive", root)
    assert code == 0 and "OK" in out
    # an edited entry: the chain breaks after it
    entry = store.get_bytes(entry_key(1))
    store.put_bytes(entry_key(1), entry.replace(b'"cli:', b'"CLI:'), "application/json")
    code, out = run_cli("audit", "verify", "--archive", root)
    assert code == 1 and f"{entry_key(2)}: does not follow the entry before it" in out
    store.put_bytes(entry_key(1), entry, "application/json")
    assert run_cli("audit", "verify", "--archive", root)[0] == 0
    # a removed entry: a gap in the numbers
    store.delete(entry_key(1))
    code, out = run_cli("audit", "verify", "--archive", root)
    assert code == 1 and f"{entry_key(2)}: entries 1 are missing (removed?)" in out


def _control_row(store: LocalStore, call_id: str, number: str, recorded: bool) -> str:
    from control.table import write_row
    from schemas.envelope import ControlState

    state = ControlState(
        call_id=call_id, phase="completed" if recorded else "skipped", updated_ns=1,
        stream_id="s1" if recorded else None, reason=None if recorded else "no_rule_matched",
        from_number=number, to_number="+15550000", direction="inbound",
        first_seen_ns=1_764_000_000_000_000_000,
    )
    return write_row(store, state)


def test_erasure_takes_the_control_planes_row_with_the_numbers(
    archive: tuple[LocalStore, list[str]],
) -> None:
    store, _ = archive
    recorded = _control_row(store, "call-b", "+4470000001", recorded=True)
    unrecorded = _control_row(store, "call-z", "+4470000002", recorded=False)
    other = _control_row(store, "call-y", "+4470000003", recorded=False)

    report = erase_call(store, "call-b", "GDPR request 8", "bob")
    assert report.call_rows == [recorded] and not store.exists(recorded)

    # A call that was never recorded still leaves the person's number in the archive:
    # erasing by number finds it in the control table.
    report = erase_number(store, "+4470000002", "GDPR request 9", "bob")
    assert report.erased == [] and report.call_rows == [unrecorded]
    assert not store.exists(unrecorded) and store.exists(other)
    con = connect(str(store.root))
    assert run(con, "SELECT call_id FROM control")[1] == [("call-y",)]
    assert [e.detail["reason"] for e in AuditLog(store).entries() if e.action == "erase"][-1] \
        == "GDPR request 9"
