"""Archiving one recording costs the same whatever else the archive holds: the parts of a
call are found at their exact keys, never by listing (docs/benchmarks.md, archive growth)."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec

from infra.store.local import LocalStore
from schemas.layout import manifest_key
from schemas.manifest import decode_manifest, manifest_bytes
from schemas.tables import recording_id
from tests.unit.test_archive import recording
from workers.recorder.archive import archive_recording


class CountingStore(LocalStore):
    """A local archive that counts the requests it serves, as S3 would bill them."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.lists: list[str] = []
        self.reads: list[str] = []

    def list_keys(self, prefix: str) -> list[str]:
        self.lists.append(prefix)
        return super().list_keys(prefix)

    def get_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().get_bytes(key)


def populate(store: LocalStore, template_key: str, call_ids: list[str]) -> None:
    """Other calls' manifests, written directly (their WAVs do not matter here)."""
    template = decode_manifest(store.get_bytes(template_key))
    for call_id in call_ids:
        rec_id = recording_id(call_id, 0)
        manifest = msgspec.structs.replace(template, call_id=call_id, recording_id=rec_id)
        store.put_bytes(manifest_key(rec_id), manifest_bytes(manifest), "application/json")


def test_archiving_reads_only_the_calls_own_manifests(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "archive")
    seed = archive_recording(
        store, recording(tmp_path, "seed", range(1, 11), start=True, close=True), tmp_path
    )
    seed_key = manifest_key(seed.event.recording_id)
    # Calls whose ids start with "c1-": their recordings share the prefix recordings/c1-.
    populate(store, seed_key, [f"c1-{n}" for n in range(200)])
    shutil.rmtree(tmp_path / "archive" / "recordings" / seed.event.recording_id)
    store.lists.clear()
    store.reads.clear()

    first = archive_recording(
        store, recording(tmp_path, "a", range(1, 51), start=True, close=False), tmp_path
    )
    assert (first.event.recording_id, first.already_archived) == ("c1-0", False)
    assert store.lists == [] and store.reads == [], "no other call's manifest, no listing"

    again = archive_recording(
        store, recording(tmp_path, "b", range(1, 51), start=True, close=False), tmp_path
    )
    assert (again.event.recording_id, again.already_archived) == ("c1-0", True)
    assert store.lists == [] and store.reads == [manifest_key("c1-0")]


def test_listing_reads_only_the_directory_of_the_prefix(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "archive")
    for key in (
        "recordings/ab-0/manifest.json",
        "recordings/ab-0/audio.wav",
        "recordings/abc-0/manifest.json",
        "recordings/b-0/manifest.json",
        "tables/calls/date=2025-01-01/ab-0.parquet",
        "top.json",
    ):
        store.put_bytes(key, b"x", "application/octet-stream")
    assert store.list_keys("recordings/ab") == [
        "recordings/ab-0/audio.wav",
        "recordings/ab-0/manifest.json",
        "recordings/abc-0/manifest.json",
    ]
    assert store.list_keys("recordings/ab-") == [
        "recordings/ab-0/audio.wav",
        "recordings/ab-0/manifest.json",
    ]
    assert store.list_keys("recordings/ab-0/") == [
        "recordings/ab-0/audio.wav",
        "recordings/ab-0/manifest.json",
    ]
    assert store.list_keys("tables/") == ["tables/calls/date=2025-01-01/ab-0.parquet"]
    assert store.list_keys("nothing/here") == []
    assert len(store.list_keys("")) == 6
