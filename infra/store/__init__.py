"""Where recordings and tables are archived: S3 (or MinIO) or a local directory.

The interface and errors are in :mod:`infra.store.base` (re-exported here); the
backends are :mod:`infra.store.s3` and :mod:`infra.store.local`, and
:func:`open_store` picks one from the archive URI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from infra.store.base import (
    BucketMissingError,
    ObjectExistsError,
    ObjectLock,
    ObjectLockedError,
    ObjectLockNotEnabledError,
    ObjectNotFoundError,
    ObjectStore,
    Retention,
    StoreAccessError,
    StoredObject,
    StoreError,
    StoreUnavailable,
)
from infra.store.local import LocalStore
from infra.store.s3 import S3Store

__all__ = [
    "BucketMissingError",
    "LocalStore",
    "ObjectExistsError",
    "ObjectLock",
    "ObjectLockNotEnabledError",
    "ObjectLockedError",
    "ObjectNotFoundError",
    "ObjectStore",
    "Retention",
    "S3Store",
    "StoreAccessError",
    "StoreError",
    "StoreUnavailable",
    "StoredObject",
    "open_store",
]


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
