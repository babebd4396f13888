"""Evidence export: one call as a signed ZIP that can be checked offline.

The bundle (``callrec export CALL_ID -o bundle.zip``)::

    <recording_id>/audio.wav          the recording, byte for byte
    <recording_id>/manifest.json      the recorder's manifest (sha256 of every object)
    <recording_id>/transcript.json    when the call was analysed
    <recording_id>/custody.json       streams, ingest pods, connections, repair counts
    <recording_id>/tables/<t>.parquet the recording's table rows
    verification.json                 a fresh ``verify`` of each recording, at export time
    audit.json                        the call's audit entries and the head of the chain
    SHA256SUMS                        "<sha256>  <name>" for every file above
    SIGNATURE.json                    Ed25519 signature over SHA256SUMS, and the public key

The signature covers SHA256SUMS, which covers every file: changing, adding or
removing any file breaks the check. ``callrec export --check bundle.zip --key
PUB`` verifies with a public key obtained separately (the one inside the
bundle only says which key signed; trusting it would prove nothing).
Keys: ``callrec export --new-key`` (docs/compliance.md, "Evidence export").
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from compliance.audit import AuditLog
from compliance.errors import NotFoundError, SigningKeyError
from compliance.policy import LockPolicy
from compliance.recordings import (
    iso,
    load_manifest,
    now,
    recordings_of_call,
)
from compliance.verify import verify_recording
from infra.store import ObjectNotFoundError, ObjectStore
from schemas.layout import manifest_key, transcript_key
from schemas.tables import TABLES, table_key

SUMS = "SHA256SUMS"
SIGNATURE = "SIGNATURE.json"
BLOCK = 1024 * 1024


def new_key_pair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def load_private_key(text: str) -> Any:
    """An Ed25519 private key from PEM (PKCS#8) or the raw 32 bytes in base64."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"the signing key is not an Ed25519 private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError("the signing key is not an Ed25519 key")
    return key


def load_public_key(text: str) -> Any:
    """An Ed25519 public key from PEM or the raw 32 bytes in base64."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"not an Ed25519 public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError("not an Ed25519 public key")
    return key


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw: bytes = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def key_id(public_key: Any) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key: names a key in reports."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path
    call_id: str
    recordings: list[str]
    files: dict[str, str]
    """Bundle file name -> sha256."""
    key_id: str
    verified: bool
    """Whether the fresh verification found every recording intact."""


class _Bundle:
    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.sums: dict[str, str] = {}

    def add_bytes(self, name: str, data: bytes) -> None:
        self.zf.writestr(name, data)
        self.sums[name] = hashlib.sha256(data).hexdigest()

    def add_object(self, name: str, store: ObjectStore, key: str) -> None:
        digest = hashlib.sha256()
        with self.zf.open(name, "w", force_zip64=True) as out:
            for block in store.iter_bytes(key, BLOCK):
                digest.update(block)
                out.write(block)
        self.sums[name] = digest.hexdigest()

    def sums_bytes(self) -> bytes:
        return "".join(f"{sha}  {name}\n" for name, sha in sorted(self.sums.items())).encode()


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode() + b"\n"


def export_call(
    store: ObjectStore,
    call_id: str,
    out: Path,
    signing_key: str,
    actor: str,
    address: str = "",
    policy: LockPolicy | None = None,
    audit: AuditLog | None = None,
) -> ExportResult:
    """Write the signed evidence bundle of ``call_id`` to ``out`` (see the module docstring).
    :class:`NotFoundError` when the archive has no recording of the call."""
    key = load_private_key(signing_key)
    rec_ids = recordings_of_call(store, call_id)
    if not rec_ids:
        raise NotFoundError(f"no recording of call {call_id!r} in the archive")
    audit = audit or AuditLog(store)
    audit.append(
        actor=actor,
        address=address,
        action="export",
        target=call_id,
        detail={"recordings": ",".join(rec_ids), "bundle": out.name},
    )
    verifications: dict[str, Any] = {}
    tmp = out.with_name(f".{out.name}.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        bundle = _Bundle(zf)
        for rec_id in rec_ids:
            manifest = load_manifest(store, rec_id)
            if manifest is None:
                continue
            for obj in manifest.objects:
                name = obj.key.rsplit("/", 1)[-1]
                if obj.key.startswith("tables/"):
                    continue
                bundle.add_object(f"{rec_id}/{name}", store, obj.key)
            bundle.add_object(f"{rec_id}/manifest.json", store, manifest_key(rec_id))
            if store.exists(transcript_key(rec_id)):
                bundle.add_object(f"{rec_id}/transcript.json", store, transcript_key(rec_id))
            for table in TABLES:
                try:
                    bundle.add_object(
                        f"{rec_id}/tables/{table}.parquet",
                        store,
                        table_key(table, manifest.date, rec_id),
                    )
                except ObjectNotFoundError:
                    continue
            bundle.add_bytes(
                f"{rec_id}/custody.json",
                _json(
                    {
                        "call_id": manifest.call_id,
                        "recording_id": rec_id,
                        "complete": manifest.complete,
                        "reason": manifest.reason,
                        "streams": msgspec.to_builtins(manifest.streams),
                        "counts": msgspec.to_builtins(manifest.counts),
                    }
                ),
            )
            verifications[rec_id] = verify_recording(store, rec_id, policy).as_dict()
        bundle.add_bytes(
            "verification.json", _json({"verified_at": iso(now()), "recordings": verifications})
        )
        head_seq, head_hash = audit.head()
        entries = [
            msgspec.to_builtins(e)
            for e in audit.entries()
            if e.target == call_id or e.detail.get("recording_id") in rec_ids
        ]
        bundle.add_bytes(
            "audit.json",
            _json({"head": {"seq": head_seq, "sha256": head_hash}, "entries": entries}),
        )
        sums = bundle.sums_bytes()
        zf.writestr(SUMS, sums)
        public = key.public_key()
        zf.writestr(
            SIGNATURE,
            _json(
                {
                    "algorithm": "Ed25519",
                    "signed": SUMS,
                    "key_id": key_id(public),
                    "public_key": base64.b64encode(_raw_public(public)).decode(),
                    "signature": base64.b64encode(key.sign(sums)).decode(),
                    "exported_at": iso(now()),
                    "exported_by": actor,
                    "call_id": call_id,
                }
            ),
        )
    tmp.replace(out)
    ok = all(v["ok"] for v in verifications.values())
    return ExportResult(out, call_id, rec_ids, dict(bundle.sums), key_id(public), ok)


@dataclass
class BundleCheck:
    """What :func:`check_bundle` found."""

    files: int = 0
    key_id: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_bundle(path: Path, public_key: str) -> BundleCheck:
    """Verify a bundle offline: the signature over SHA256SUMS with ``public_key``, then
    every file against SHA256SUMS, and no file unlisted."""
    from cryptography.exceptions import InvalidSignature

    public = load_public_key(public_key)
    check = BundleCheck(key_id=key_id(public))
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if SUMS not in names or SIGNATURE not in names:
            check.problems.append(f"not a callrec bundle: {SUMS} or {SIGNATURE} is missing")
            return check
        sums = zf.read(SUMS)
        try:
            signature = base64.b64decode(json.loads(zf.read(SIGNATURE))["signature"])
            public.verify(signature, sums)
        except (InvalidSignature, ValueError, KeyError, TypeError):
            check.problems.append(
                f"the signature over {SUMS} does not verify with key {check.key_id}"
            )
        listed: dict[str, str] = {}
        for line in sums.decode(errors="replace").splitlines():
            sha, _, name = line.partition("  ")
            listed[name] = sha
        for name in sorted(names - {SUMS, SIGNATURE} - set(listed)):
            check.problems.append(f"{name}: in the bundle but not in {SUMS} (added)")
        for name, sha in sorted(listed.items()):
            if name not in names:
                check.problems.append(f"{name}: listed in {SUMS} but missing (removed)")
                continue
            digest = hashlib.sha256()
            with zf.open(name) as f:
                while block := f.read(BLOCK):
                    digest.update(block)
            check.files += 1
            if digest.hexdigest() != sha:
                check.problems.append(f"{name}: sha256 differs from {SUMS} (changed)")
    return check
