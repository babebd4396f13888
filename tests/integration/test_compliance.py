"""Compliance operations against real MinIO with Object Lock: holds, retention, erasure,
verify and exports on archives written by the recorder's and analyzer's own code."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import pytest

from compliance.erasure import erase_call
from compliance.errors import OnHoldError, RetainedError
from compliance.export import check_bundle, export_call, new_key_pair
from compliance.holds import clear_hold, set_hold
from compliance.policy import LockPolicy, RetentionPolicy
from compliance.retention import apply_retention
from compliance.verify import verify_archive
from deploy.local import stack
from infra.store import Retention
from infra.store.s3 import S3Store
from schemas.layout import manifest_key, transcript_key, wav_key
from schemas.tables import table_key
from tests.complianceutil import archive_calls, flip_byte
from tests.integration.recorderutil import new_bucket, s3_store

DAY = "2025-11-24"
LATER = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
"""A moment when a 1-day retention policy has expired for the test recordings."""


def versions(store: S3Store, prefix: str) -> list[str]:
    """Every version and delete marker left under ``prefix``: erased means none."""
    pages = store.client.get_paginator("list_object_versions").paginate(
        Bucket=store.bucket, Prefix=prefix
    )
    return [
        v["Key"]
        for page in pages
        for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
    ]


def test_a_held_recording_survives_retention_and_erase_and_goes_once_cleared(
    minio: stack.MinioServer, tmp_path: Path
) -> None:
    store = s3_store(minio, new_bucket(minio, object_lock=True))
    a, b = archive_calls(store, tmp_path, ["held-call", "free-call"])
    set_hold(store, [a], "matter 42", "ann")
    held_keys = [
        wav_key(a),
        manifest_key(a),
        transcript_key(a),
        *(table_key(t, DAY, a) for t in ("calls", "segments", "metrics")),
    ]
    assert all(store.lock_state(k).legal_hold for k in held_keys)

    report = apply_retention(store, RetentionPolicy(days=1), "ops", at=LATER)
    assert {d.recording_id: d.outcome for d in report.decisions} == {a: "held", b: "deleted"}
    assert versions(store, f"recordings/{b}/") == []
    with pytest.raises(OnHoldError, match="on legal hold"):
        erase_call(store, "held-call", "GDPR request 1", "bob")
    assert all(store.exists(k) for k in held_keys)
    assert verify_archive(store).ok

    clear_hold(store, [a], "matter closed", "ann")
    assert not any(store.lock_state(k).legal_hold for k in held_keys)
    report = apply_retention(store, RetentionPolicy(days=1), "ops", at=LATER)
    assert [d.outcome for d in report.decisions] == ["deleted"]
    assert versions(store, "recordings/") == [] and versions(store, "tables/") == []


def test_compliance_mode_refuses_an_early_erase_and_deletes_nothing(
    minio: stack.MinioServer, tmp_path: Path
) -> None:
    bucket = new_bucket(minio, object_lock=True)
    store = s3_store(minio, bucket, retention=Retention("COMPLIANCE", 1))
    (a,) = archive_calls(store, tmp_path, ["worm-call"])
    before = sorted(versions(store, ""))
    with pytest.raises(RetainedError) as refused:
        erase_call(store, "worm-call", "GDPR request 2", "bob")
    message = str(refused.value)
    assert message.startswith(f"{a} is under Object Lock COMPLIANCE retention until ")
    assert "it cannot be erased before then" in message and "nothing was deleted" in message
    assert sorted(versions(store, "recordings/") + versions(store, "tables/")) == sorted(
        k for k in before if not k.startswith("audit/")
    )
    assert store.list_keys("tombstones/") == []
    # retention whose policy ran out before the lock did: reported, nothing deleted
    report = apply_retention(store, RetentionPolicy(days=1), "ops")
    assert [d.outcome for d in report.decisions] == ["retained"]
    assert store.exists(wav_key(a))
    # the lock is what the policy says; a policy without one sees every object differ
    assert verify_archive(store, policy=LockPolicy("COMPLIANCE", 1)).ok
    differs = verify_archive(store, policy=LockPolicy())
    assert {p.kind for p in differs.problems} == {"lock_mismatch"}
    assert wav_key(a) in {p.key for p in differs.problems}


def test_erase_in_a_partition_with_others_leaves_them_and_verifies(
    minio: stack.MinioServer, tmp_path: Path
) -> None:
    store = s3_store(minio, new_bucket(minio, object_lock=True))
    ids = archive_calls(store, tmp_path, ["c1", "c2", "c3"])
    others = [k for k in store.list_keys("") if ids[1] not in k and not k.startswith("audit/")]
    before = {k: store.get_bytes(k) for k in others}
    report = erase_call(store, "c2", "GDPR request 3", "bob")
    assert [s.recording_id for s in report.erased] == [ids[1]]
    assert versions(store, f"recordings/{ids[1]}/") == []
    assert [k for k in versions(store, "tables/") if ids[1] in k] == []
    assert {k: store.get_bytes(k) for k in others} == before
    verified = verify_archive(store)
    assert verified.ok, verified.problems
    assert verified.erased == [ids[1]] and verified.recordings == 2


def test_verify_reports_each_tampering_exactly(minio: stack.MinioServer, tmp_path: Path) -> None:
    store = s3_store(minio, new_bucket(minio, object_lock=True))
    a, b, c = archive_calls(store, tmp_path, ["t1", "t2", "t3"])
    assert verify_archive(store).ok
    flip_byte(store, wav_key(a), 5000)
    store.delete(manifest_key(b))
    store.delete(transcript_key(c))
    store.put_bytes(f"tables/calls/date={DAY}/intruder.parquet", b"PAR1", "application/x")
    report = verify_archive(store, workers=4)
    assert sorted((p.kind, p.key) for p in report.problems) == [
        ("mismatch", wav_key(a)),
        ("missing", manifest_key(b)),
        ("missing", transcript_key(c)),
        ("unclaimed", f"tables/calls/date={DAY}/intruder.parquet"),
    ]


def test_an_export_of_an_s3_call_verifies_offline_and_fails_when_changed(
    minio: stack.MinioServer, tmp_path: Path
) -> None:
    store = s3_store(minio, new_bucket(minio, object_lock=True))
    (a,) = archive_calls(store, tmp_path, ["exported"])
    private, public = new_key_pair()
    bundle = tmp_path / "bundle.zip"
    assert export_call(store, "exported", bundle, private.decode(), "ann").verified
    assert check_bundle(bundle, public.decode()).ok
    changed = tmp_path / "changed.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(changed, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(
                name, data[:-1] + bytes([data[-1] ^ 1]) if name == f"{a}/audio.wav" else data
            )
    assert check_bundle(changed, public.decode()).problems == [
        f"{a}/audio.wav: sha256 differs from SHA256SUMS (changed)"
    ]
