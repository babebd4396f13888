"""Is a recording still what was archived? Re-hash every object its manifest lists.

The manifest (``recordings/<id>/manifest.json``) lists each other object of the
recording with its SHA-256 and size; :func:`check_recording` reads each object
again in blocks (``ObjectStore.iter_bytes``: memory bounded by the block, a 1 GB
WAV included) and compares. The review console shows the result on the call page
(docs/console.md); docs/formats.md describes the manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from infra.store import ObjectNotFoundError, ObjectStore
from schemas.layout import manifest_key
from schemas.manifest import decode_manifest

ObjectOutcome = Literal["verified", "mismatch", "missing"]


@dataclass(frozen=True, slots=True)
class ObjectCheck:
    """One listed object, re-hashed."""

    key: str
    expected_sha256: str
    """What the manifest says."""
    actual_sha256: str
    """What the stored bytes hash to now; empty when the object is missing."""
    expected_size: int
    actual_size: int
    outcome: ObjectOutcome


@dataclass(frozen=True, slots=True)
class IntegrityResult:
    """What :func:`check_recording` found for one recording."""

    recording_id: str
    manifest_found: bool
    objects: list[ObjectCheck] = field(default_factory=list)
    problem: str = ""
    """Why nothing could be checked (no manifest, unreadable manifest); empty otherwise."""

    @property
    def ok(self) -> bool:
        return self.manifest_found and not self.problem and all(
            o.outcome == "verified" for o in self.objects)


def check_recording(store: ObjectStore, recording_id: str, block: int = 1024 * 1024
                    ) -> IntegrityResult:
    """Re-hash every object the recording's manifest lists and compare with the manifest."""
    try:
        manifest = decode_manifest(store.get_bytes(manifest_key(recording_id)))
    except ObjectNotFoundError:
        return IntegrityResult(recording_id, False, problem="no manifest")
    except msgspec.DecodeError as exc:
        return IntegrityResult(recording_id, True, problem=f"unreadable manifest: {exc}")
    checks = []
    for obj in manifest.objects:
        digest, size = hashlib.sha256(), 0
        try:
            for chunk in store.iter_bytes(obj.key, block):
                digest.update(chunk)
                size += len(chunk)
        except ObjectNotFoundError:
            checks.append(ObjectCheck(obj.key, obj.sha256, "", obj.size, 0, "missing"))
            continue
        actual = digest.hexdigest()
        outcome: ObjectOutcome = (
            "verified" if actual == obj.sha256 and size == obj.size else "mismatch")
        checks.append(ObjectCheck(obj.key, obj.sha256, actual, obj.size, size, outcome))
    return IntegrityResult(recording_id, True, checks)
