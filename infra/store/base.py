"""The object store interface: errors, what a write returns, retention, the protocol.

Both stores (:mod:`infra.store.s3`, :mod:`infra.store.local`) implement
:class:`ObjectStore`, a deliberately small, synchronous interface (boto3 is
synchronous; async callers use ``asyncio.to_thread``). Keys are ``/``-separated
and identical in both, so the archive layout (docs/formats.md) does not depend on
the backend.

Errors::

    StoreError                      retriable = False unless said otherwise
    ├── StoreUnavailable            retriable: network error, timeout, 5xx, throttling
    ├── BucketMissingError          the bucket does not exist (start-up check)
    ├── StoreAccessError            credentials refused for the bucket
    └── ObjectLockNotEnabledError   retention asked for, bucket without Object Lock
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from infra.errors import InfraError

log = logging.getLogger(__name__)



class StoreError(InfraError):
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

    def get_file(self, key: str, path: Path) -> int:
        """Download ``key`` to the local file ``path`` in bounded memory (streamed);
        returns its size. A missing key raises ``FileNotFoundError`` (local) or a
        non-retriable ``StoreError`` (S3), like :meth:`get_bytes`."""

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``key`` (fewer past its end): seeking in audio."""

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted."""
