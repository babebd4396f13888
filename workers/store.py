"""Where recordings and tables are archived: S3 (or MinIO) or a local directory.

Both stores implement :class:`ObjectStore`, a deliberately small, synchronous
interface (boto3 is synchronous; async callers use ``asyncio.to_thread``).
Keys are ``/``-separated and identical in both, so the archive layout
(docs/formats.md) does not depend on the backend.

Errors::

    StoreError                      retriable = False unless said otherwise
    ├── StoreUnavailable            retriable: network error, timeout, 5xx, throttling
    ├── BucketMissingError          the bucket does not exist (start-up check)
    ├── StoreAccessError            credentials refused for the bucket
    └── ObjectLockNotEnabledError   retention asked for, bucket without Object Lock
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 64 * 1024 * 1024
"""Files above this go up as multipart uploads (composite SHA-256 checksum per part)."""
MULTIPART_PART_BYTES = 8 * 1024 * 1024


class StoreError(Exception):
    retriable = False


class StoreUnavailable(StoreError):
    retriable = True


class BucketMissingError(StoreError):
    pass


class StoreAccessError(StoreError):
    pass


class ObjectLockNotEnabledError(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object as written: what the manifest lists."""

    key: str
    """Key inside the archive (without bucket or prefix)."""
    sha256: str
    """Lower-case hex SHA-256 of the object's bytes."""
    size: int
    content_type: str


@dataclass(frozen=True, slots=True)
class Retention:
    """WORM settings applied to every object of a recording."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    """S3 Object Lock mode; None = no retention."""
    days: int = 0
    """Retention period from the upload."""
    legal_hold: bool = False


class ObjectStore(Protocol):
    """The archive: put, get, list, and say where an object lives."""

    def check(self) -> None:
        """Verify at start-up that the archive is usable; raise a named ``StoreError``."""

    def uri(self, key: str) -> str:
        """Where ``key`` lives, as a URI users can open (``s3://bucket/...``, ``file://...``)."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> StoredObject: ...

    def put_file(self, key: str, path: Path, sha256: str, content_type: str) -> StoredObject: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted."""


def fsync_dir(directory: Path) -> None:
    """Make ``directory``'s entries durable: a rename into it, a file created in it.

    fsync of a file covers its bytes, not its name: after a power loss a renamed
    file can be missing (or be the old one) unless its directory was fsynced too.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """``mkdir -p`` whose new directories survive power loss (each parent is fsynced)."""
    missing: list[Path] = []
    path = directory
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise
            continue  # created meanwhile by another writer, which makes it durable
        fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


# -- local directory ---------------------------------------------------------------------


class LocalStore:
    """A directory as archive. Writes are atomic and durable: a temp file in the same
    directory, fsync, rename over the key, fsync of the directory (and of the parent of
    every directory created for the key). A reader, a process crash or a power loss
    never sees half an object; once ``put_*`` returns, the object survives power loss,
    so the manifest written last is on disk only after everything it lists.

    A temp file (``.<name>.<random>``) is left behind only by a crash in the middle
    of a write; names starting with ``.`` are never listed as keys."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def check(self) -> None:
        make_dirs(self.root)
        if not os.access(self.root, os.W_OK):
            raise StoreAccessError(f"archive directory {self.root} is not writable")

    def uri(self, key: str) -> str:
        if not key:
            return self.root.resolve().as_uri()
        return self._path(key).resolve().as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StoreError(f"key {key!r} escapes the archive directory")
        return path

    def put_bytes(self, key: str, data: bytes, content_type: str) -> StoredObject:
        self._atomic_write(key, lambda f: f.write(data))
        return StoredObject(key, hashlib.sha256(data).hexdigest(), len(data), content_type)

    def put_file(self, key: str, path: Path, sha256: str, content_type: str) -> StoredObject:
        def copy(f: Any) -> None:
            with path.open("rb") as src:
                while block := src.read(1024 * 1024):
                    f.write(block)

        self._atomic_write(key, copy)
        return StoredObject(key, sha256, path.stat().st_size, content_type)

    def _atomic_write(self, key: str, write: Any) -> None:
        target = self._path(key)
        make_dirs(target.parent)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(target.parent)

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        base = self.root.resolve()
        return sorted(
            str(p.relative_to(base))
            for p in base.rglob("*")
            if p.is_file()
            and not p.name.startswith(".")
            and str(p.relative_to(base)).startswith(prefix)
        )


# -- S3 ----------------------------------------------------------------------------------


class S3Store:
    """An S3 bucket (AWS, MinIO...) as archive, with SHA-256 checksums on every upload,
    optional server-side encryption and optional Object Lock retention and legal hold."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        sse: Literal["AES256", "aws:kms"] | None = None,
        sse_kms_key_id: str | None = None,
        retention: Retention = Retention(),
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.sse = sse
        self.sse_kms_key_id = sse_kms_key_id
        self.retention = retention
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=5,
                read_timeout=60,
                s3={"addressing_style": "path"} if endpoint_url else None,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> S3Store:
        """``s3://bucket/optional/prefix``."""
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc:
            raise StoreError(f"not an s3:// URI: {uri!r}")
        return cls(parts.netloc, parts.path, **options)

    def uri(self, key: str) -> str:
        """``s3://bucket/prefix/key``; the archive root for an empty key."""
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def check(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise BucketMissingError(f"bucket {self.bucket!r} does not exist") from None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise StoreAccessError(f"access to bucket {self.bucket!r} denied") from None
            raise _translate(exc) from None
        except Exception as exc:
            raise _translate(exc) from None
        if self.retention.mode or self.retention.legal_hold:
            try:
                conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = conf["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
            except ClientError:
                enabled = False
            if not enabled:
                raise ObjectLockNotEnabledError(
                    f"retention is configured but bucket {self.bucket!r} has no Object Lock"
                )

    def create_bucket(self, object_lock: bool = False) -> None:
        """Create the bucket if missing (local stacks and tests; production buckets are
        provisioned by the platform team, see docs/operations.md)."""
        from botocore.exceptions import ClientError

        try:
            self.client.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=object_lock)
        except ClientError as exc:
            if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise _translate(exc) from None

    def _write_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
            if self.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.sse_kms_key_id
        if self.retention.mode:
            until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retention.days)
            args["ObjectLockMode"] = self.retention.mode
            args["ObjectLockRetainUntilDate"] = until
        if self.retention.legal_hold:
            args["ObjectLockLegalHoldStatus"] = "ON"
        return args

    def put_bytes(self, key: str, data: bytes, content_type: str) -> StoredObject:
        digest = hashlib.sha256(data)
        self._call(
            self.client.put_object,
            Bucket=self.bucket,
            Key=self.prefix + key,
            Body=data,
            ContentType=content_type,
            ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
            **self._write_args(),
        )
        return StoredObject(key, digest.hexdigest(), len(data), content_type)

    def put_file(self, key: str, path: Path, sha256: str, content_type: str) -> StoredObject:
        size = path.stat().st_size
        if size <= MULTIPART_THRESHOLD:
            with path.open("rb") as body:
                self._call(
                    self.client.put_object,
                    Bucket=self.bucket,
                    Key=self.prefix + key,
                    Body=body,
                    ContentType=content_type,
                    ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
                    **self._write_args(),
                )
        else:
            from boto3.s3.transfer import TransferConfig

            self._call(
                self.client.upload_file,
                str(path),
                self.bucket,
                self.prefix + key,
                ExtraArgs={
                    "ContentType": content_type,
                    "ChecksumAlgorithm": "SHA256",
                    **self._write_args(),
                },
                # Parts in flight are held in memory: two of 8 MiB keep the recorder's RAM
                # flat in call length, where boto3's default of 10 in flight (of 16 MiB
                # parts) added ~30 MiB to a 60-minute call's peak; the upload took as long.
                Config=TransferConfig(
                    multipart_threshold=MULTIPART_THRESHOLD,
                    multipart_chunksize=MULTIPART_PART_BYTES,
                    max_concurrency=2,
                ),
            )
        return StoredObject(key, sha256, size, content_type)

    def get_bytes(self, key: str) -> bytes:
        response = self._call(self.client.get_object, Bucket=self.bucket, Key=self.prefix + key)
        data: bytes = response["Body"].read()
        return data

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _translate(exc) from None
        except Exception as exc:
            raise _translate(exc) from None
        return True

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        except Exception as exc:
            raise _translate(exc) from None
        return sorted(keys)

    @staticmethod
    def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            raise _translate(exc) from None


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _translate(exc: Exception) -> StoreError:
    """Map botocore's exceptions onto ours: transient trouble is retriable, the rest not."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = _error_code(exc)
        if status >= 500 or code in ("SlowDown", "RequestTimeout", "ServiceUnavailable"):
            return StoreUnavailable(f"S3 {code or status}: {exc}")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StoreAccessError(f"S3 refused: {exc}")
        return StoreError(f"S3 {code}: {exc}")
    if isinstance(exc, BotoCoreError | OSError):
        return StoreUnavailable(f"S3 unreachable: {exc}")
    return StoreError(repr(exc))


def open_store(uri: str, **s3_options: Any) -> ObjectStore:
    """``s3://bucket/prefix``: :class:`S3Store`; ``file:///dir`` or a path: :class:`LocalStore`."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        return S3Store.from_uri(uri, **s3_options)
    if parts.scheme == "file":
        return LocalStore(Path(parts.path))
    if parts.scheme == "":
        return LocalStore(Path(uri))
    raise StoreError(f"unsupported archive URI {uri!r}: use s3://bucket/prefix or a directory")
