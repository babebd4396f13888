"""The archive in an S3 bucket (AWS, MinIO...): checksummed uploads, SSE, Object Lock."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from infra.store.base import (
    BucketMissingError,
    ObjectExistsError,
    ObjectLock,
    ObjectLockedError,
    ObjectLockNotEnabledError,
    ObjectNotFoundError,
    Retention,
    StoreAccessError,
    StoredObject,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 64 * 1024 * 1024
"""Files above this go up as multipart uploads (composite SHA-256 checksum per part)."""
MULTIPART_PART_BYTES = 8 * 1024 * 1024


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
        retention: Retention | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.sse = sse
        self.sse_kms_key_id = sse_kms_key_id
        self.retention = retention or Retention()
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
                # Every upload carries its SHA-256 in a signed x-amz-checksum-sha256 header,
                # which S3 checks against the body: signing the payload too (botocore does
                # over plain HTTP, e.g. an in-cluster MinIO) would hash each object a second
                # time on our CPU for no extra protection.
                s3={"payload_signing_enabled": False,
                    **({"addressing_style": "path"} if endpoint_url else {})},
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

    def put_new(self, key: str, data: bytes, content_type: str) -> StoredObject:
        digest = hashlib.sha256(data)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=data,
                ContentType=content_type,
                ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
                IfNoneMatch="*",
                **self._write_args(),
            )
        except Exception as exc:
            if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise ObjectExistsError(f"{key!r} exists") from None
            raise _translate(exc) from None
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
        response = self._get(key)  # ObjectNotFoundError for a missing key, as size() has
        data: bytes = response["Body"].read()
        return data

    def get_file(self, key: str, path: Path) -> int:
        response = self._call(self.client.get_object, Bucket=self.bucket, Key=self.prefix + key)
        size = 0
        try:
            with path.open("wb") as out:
                for block in response["Body"].iter_chunks(1024 * 1024):
                    out.write(block)
                    size += len(block)
        except Exception as exc:  # the connection broke while reading the body (or disk full)
            raise _translate(exc) from None
        return size

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

    def _head(self, key: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            head = dict(self.client.head_object(Bucket=self.bucket, Key=self.prefix + key))
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFoundError(f"no object {key!r}") from None
            raise _translate(exc) from None
        except Exception as exc:
            raise _translate(exc) from None
        return head

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise StoreError(f"bad range [{start}, {end}) of {key!r}")
        if end == start:
            return b""
        response = self._get(key, Range=f"bytes={start}-{end - 1}")
        data: bytes = response["Body"].read()
        return data

    def iter_bytes(self, key: str, block: int = 1024 * 1024) -> Iterator[bytes]:
        body = self._get(key)["Body"]
        try:
            while True:
                try:
                    data = body.read(block)
                except Exception as exc:
                    raise _translate(exc) from None
                if not data:
                    return
                yield data
        finally:
            body.close()

    def _get(self, key: str, **args: Any) -> dict[str, Any]:
        try:
            response = dict(self.client.get_object(
                Bucket=self.bucket, Key=self.prefix + key, **args))
        except Exception as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFoundError(f"no object {key!r}") from None
            if _error_code(exc) == "InvalidRange":
                return {"Body": _Empty()}
            raise _translate(exc) from None
        return response

    def delete(self, key: str) -> None:
        """Every version of the key, so the bytes are gone, not hidden behind a delete
        marker (a bucket with Object Lock is versioned)."""
        full = self.prefix + key
        versions: list[dict[str, Any]] = []
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=full)
            for page in pages:
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if item["Key"] == full:
                        versions.append({"Key": full, "VersionId": item["VersionId"]})
        except Exception as exc:
            raise _translate(exc) from None
        for version in versions:
            try:
                self.client.delete_object(Bucket=self.bucket, **version)
            except Exception as exc:
                if _error_code(exc) in ("AccessDenied", "403", "ObjectLocked",
                                        "InvalidRequest"):
                    raise ObjectLockedError(
                        f"{key!r} is under a legal hold or retention: {exc}") from None
                raise _translate(exc) from None

    def lock_state(self, key: str) -> ObjectLock:
        head = self._head(key)
        until = head.get("ObjectLockRetainUntilDate")
        return ObjectLock(
            mode=head.get("ObjectLockMode"),
            retain_until=until.astimezone(dt.UTC) if until is not None else None,
            legal_hold=head.get("ObjectLockLegalHoldStatus") == "ON",
        )

    def set_legal_hold(self, key: str, on: bool) -> None:
        self._head(key)  # ObjectNotFoundError rather than S3's generic answer
        self._call(self.client.put_object_legal_hold, Bucket=self.bucket,
                   Key=self.prefix + key, LegalHold={"Status": "ON" if on else "OFF"})

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


class _Empty:
    """The body of a range past the object's end: no bytes."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        return None
