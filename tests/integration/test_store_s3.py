"""``S3Store`` against real MinIO: multipart uploads, ranges, legal holds and retention.

A 60-minute stereo call is a 346 MB WAV: it goes up with ``upload_file`` in parts,
a different code path from the single ``put_object`` of shorter calls. The
threshold is lowered here so that a 20 MiB file takes that path in seconds.
"""

from __future__ import annotations

import datetime
import hashlib
import random
from pathlib import Path

import pytest

from deploy.local import stack
from infra.store import (
    ObjectExistsError,
    ObjectLock,
    ObjectLockedError,
    ObjectNotFoundError,
    Retention,
)
from infra.store import s3 as store_module
from infra.store.s3 import MULTIPART_PART_BYTES
from tests.integration.recorderutil import new_bucket, s3_store


def test_a_file_over_the_multipart_threshold_goes_up_in_parts_intact(
    minio: stack.MinioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MULTIPART_THRESHOLD", MULTIPART_PART_BYTES + 1)
    data = random.Random(11).randbytes(2 * MULTIPART_PART_BYTES + 12345)  # three parts
    path = tmp_path / "audio.wav"
    path.write_bytes(data)
    bucket = new_bucket(minio, object_lock=True)
    store = s3_store(minio, bucket, retention=Retention("GOVERNANCE", 1, legal_hold=True))

    stored = store.put_file("recordings/big-0/audio.wav", path,
                            hashlib.sha256(data).hexdigest(), "audio/wav")

    assert stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("recordings/big-0/audio.wav") == data
    head = store.client.head_object(Bucket=bucket, Key="recordings/big-0/audio.wav",
                                    ChecksumMode="ENABLED")
    assert head["ContentType"] == "audio/wav"
    # S3 checks each part's SHA-256 on arrival; the object's is the composite of 3 parts.
    assert head["ChecksumSHA256"].endswith("-3")
    # Retention and legal hold reach a multipart object like any other.
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockLegalHoldStatus"] == "ON"


def test_ranges_blocks_and_sizes_read_only_what_is_asked(minio: stack.MinioServer) -> None:
    store = s3_store(minio, new_bucket(minio))
    data = random.Random(5).randbytes(3 * 1024 * 1024 + 7)
    store.put_bytes("recordings/r-0/audio.wav", data, "audio/wav")

    assert store.size("recordings/r-0/audio.wav") == len(data)
    assert store.get_range("recordings/r-0/audio.wav", 1000, 1010) == data[1000:1010]
    assert store.get_range("recordings/r-0/audio.wav", len(data) - 3, len(data) + 50) == data[-3:]
    assert store.get_range("recordings/r-0/audio.wav", len(data) + 5, len(data) + 9) == b""
    blocks = list(store.iter_bytes("recordings/r-0/audio.wav", block=1024 * 1024))
    assert b"".join(blocks) == data and max(map(len, blocks)) <= 1024 * 1024
    with pytest.raises(ObjectNotFoundError):
        store.size("recordings/nope-0/audio.wav")
    with pytest.raises(ObjectNotFoundError):
        list(store.iter_bytes("recordings/nope-0/audio.wav"))


def test_a_legal_hold_refuses_deletes_until_it_is_lifted(minio: stack.MinioServer) -> None:
    bucket = new_bucket(minio, object_lock=True)
    store = s3_store(minio, bucket)
    store.put_bytes("recordings/h-0/audio.wav", b"audio", "audio/wav")
    assert store.lock_state("recordings/h-0/audio.wav") == ObjectLock(None, None, False)

    store.set_legal_hold("recordings/h-0/audio.wav", True)
    assert store.lock_state("recordings/h-0/audio.wav").legal_hold
    with pytest.raises(ObjectLockedError):
        store.delete("recordings/h-0/audio.wav")
    assert store.get_bytes("recordings/h-0/audio.wav") == b"audio"

    store.set_legal_hold("recordings/h-0/audio.wav", False)
    store.delete("recordings/h-0/audio.wav")
    assert not store.exists("recordings/h-0/audio.wav")
    # Every version went, not only the latest: nothing is left behind a delete marker.
    versions = store.client.list_object_versions(Bucket=bucket, Prefix="recordings/h-0/")
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")
    store.delete("recordings/h-0/audio.wav")  # already gone: no error


def test_compliance_retention_refuses_an_early_delete(minio: stack.MinioServer) -> None:
    bucket = new_bucket(minio, object_lock=True)
    store = s3_store(minio, bucket, retention=Retention("COMPLIANCE", 1))
    store.put_bytes("recordings/c-0/audio.wav", b"audio", "audio/wav")

    state = store.lock_state("recordings/c-0/audio.wav")
    now = datetime.datetime.now(datetime.UTC)
    assert state.mode == "COMPLIANCE" and state.retain_until is not None
    assert state.blocks_delete(now) and not state.blocks_delete(state.retain_until)
    with pytest.raises(ObjectLockedError):
        store.delete("recordings/c-0/audio.wav")
    assert store.get_bytes("recordings/c-0/audio.wav") == b"audio"


def test_a_create_only_write_never_replaces_an_object(minio: stack.MinioServer) -> None:
    store = s3_store(minio, new_bucket(minio))
    store.put_new("audit/000000000000.json", b"first", "application/json")
    with pytest.raises(ObjectExistsError):
        store.put_new("audit/000000000000.json", b"second", "application/json")
    assert store.get_bytes("audit/000000000000.json") == b"first"


@pytest.mark.parametrize("backend", ["s3", "local"])
def test_objects_come_back_to_a_file_and_in_ranges_from_both_stores(
    minio: stack.MinioServer, tmp_path: Path, backend: str
) -> None:
    from infra.store import ObjectStore, StoreError
    from infra.store.local import LocalStore

    store: ObjectStore = (s3_store(minio, new_bucket(minio)) if backend == "s3"
                          else LocalStore(tmp_path / "archive"))
    data = random.Random(5).randbytes(3 * 1024 * 1024 + 17)  # several download blocks
    store.put_bytes("recordings/r-0/audio.wav", data, "audio/wav")

    out = tmp_path / "copy.wav"
    assert store.get_file("recordings/r-0/audio.wav", out) == len(data)
    assert out.read_bytes() == data
    assert store.get_range("recordings/r-0/audio.wav", 44, 1044) == data[44:1044]
    assert store.get_range("recordings/r-0/audio.wav", len(data) - 5, len(data) + 100) == data[-5:]
    assert store.get_range("recordings/r-0/audio.wav", len(data) + 10, len(data) + 20) == b""
    assert store.get_range("recordings/r-0/audio.wav", 7, 7) == b""
    with pytest.raises((FileNotFoundError, StoreError)):
        store.get_file("recordings/none-0/audio.wav", tmp_path / "none.wav")
