"""``S3Store`` against real MinIO: the multipart path of recordings over the threshold.

A 60-minute stereo call is a 346 MB WAV: it goes up with ``upload_file`` in parts,
a different code path from the single ``put_object`` of shorter calls. The
threshold is lowered here so that a 20 MiB file takes that path in seconds.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from deploy.local import stack
from infra.store import Retention
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
