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
    ├── ObjectLockNotEnabledError   retention asked for, bucket without Object Lock
    ├── ObjectNotFoundError         a read, range or lock query of a key that is not there
    ├── ObjectExistsError           a create-only write found the key taken
    └── ObjectLockedError           a delete refused: legal hold or unexpired retention
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
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


class ObjectNotFoundError(StoreError):
    """The key does not exist."""


class ObjectExistsError(StoreError):
    """A create-only write found the key taken (another writer was first)."""


class ObjectLockedError(StoreError):
    """The object is under a legal hold or an unexpired retention: it cannot be deleted."""


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


@dataclass(frozen=True, slots=True)
class ObjectLock:
    """The WORM state of one stored object, as the store reports it now."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"] | None
    """Retention mode; None = no retention."""
    retain_until: dt.datetime | None
    """End of the retention (UTC); None = no retention."""
    legal_hold: bool

    def blocks_delete(self, now: dt.datetime) -> bool:
        """Whether a delete at ``now`` is refused (hold, or retention not yet over)."""
        return self.legal_hold or (self.retain_until is not None and now < self.retain_until)


class ObjectStore(Protocol):
    """The archive: put, get, list, and say where an object lives."""

    def check(self) -> None:
        """Verify at start-up that the archive is usable; raise a named ``StoreError``."""

    def uri(self, key: str) -> str:
        """Where ``key`` lives, as a URI users can open (``s3://bucket/...``, ``file://...``)."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> StoredObject: ...

    def put_file(self, key: str, path: Path, sha256: str, content_type: str) -> StoredObject: ...

    def put_new(self, key: str, data: bytes, content_type: str) -> StoredObject:
        """Create ``key`` only if no object has it, atomically (S3 ``If-None-Match: *``);
        :class:`ObjectExistsError` when one does. Appends to a log need no lock."""

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; :class:`ObjectNotFoundError` when missing."""

    def get_file(self, key: str, path: Path) -> int:
        """Download ``key`` to the local file ``path`` in bounded memory (streamed);
        returns its size. A missing key raises ``FileNotFoundError`` (local) or a
        non-retriable ``StoreError`` (S3), like :meth:`get_bytes`."""

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted."""

    def size(self, key: str) -> int:
        """Bytes of the object; :class:`ObjectNotFoundError` when missing."""

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object (fewer at its end); reads only those."""

    def iter_bytes(self, key: str, block: int = 1024 * 1024) -> Iterator[bytes]:
        """The object's bytes in blocks of at most ``block``: memory bounded by the block."""

    def delete(self, key: str) -> None:
        """Remove the object for good (every version on S3); a missing key is no error.
        :class:`ObjectLockedError` when a legal hold or an unexpired retention forbids it."""

    def lock_state(self, key: str) -> ObjectLock:
        """The object's retention and legal hold now."""

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Put or lift a legal hold on the object (S3 Object Lock; a marker file locally)."""
