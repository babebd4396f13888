"""The archive in a local directory (embedded mode, tests): atomic, durable writes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from infra.durable import fsync_dir, make_dirs
from infra.store.base import (
    ObjectExistsError,
    ObjectLock,
    ObjectLockedError,
    ObjectNotFoundError,
    StoreAccessError,
    StoredObject,
    StoreError,
)

HOLD_SUFFIX = ".hold"
"""A legal hold on ``dir/name`` is the marker file ``dir/.name.hold`` (hidden, never a key)."""


class LocalStore:
    """A directory as archive. Writes are atomic and durable: a temp file in the same
    directory, fsync, rename over the key, fsync of the directory (and of the parent of
    every directory created for the key). A reader, a process crash or a power loss
    never sees half an object; once ``put_*`` returns, the object survives power loss,
    so the manifest written last is on disk only after everything it lists.

    A temp file (``.<name>.<random>``) is left behind only by a crash in the middle
    of a write; names starting with ``.`` are never listed as keys.

    A directory has no Object Lock: a legal hold is a marker file beside the object
    (``.<name>.hold``, written durably) that :meth:`delete` honours, so every delete
    path (retention, erasure) refuses a held object as S3 does. Retention is not
    enforced on a directory: the compliance tools apply the configured policy."""

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

    def put_new(self, key: str, data: bytes, content_type: str) -> StoredObject:
        target = self._path(key)
        make_dirs(target.parent)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # link() fails if the name exists: create-only, and the content is whole
            # before the name appears.
            os.link(tmp, target)
        except FileExistsError:
            raise ObjectExistsError(f"{key!r} exists") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        fsync_dir(target.parent)
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
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"no object {key!r}") from None

    def get_file(self, key: str, path: Path) -> int:
        size = 0
        with self._path(key).open("rb") as src, path.open("wb") as dst:
            while block := src.read(1024 * 1024):
                dst.write(block)
                size += len(block)
        return size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted. Only the directory that can hold the prefix is
        read (``recordings/abc`` reads ``recordings/`` for names starting ``abc``) and only
        the subtrees that match are walked: never the whole archive."""
        base = self.root.resolve()
        folder, _, start = prefix.rpartition("/")
        top = self._path(folder) if folder else base
        keys: list[str] = []
        try:
            entries = list(os.scandir(top))
        except (FileNotFoundError, NotADirectoryError):
            return []
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.startswith(start):
                continue
            if entry.is_file(follow_symlinks=False):
                keys.append(f"{folder}/{entry.name}" if folder else entry.name)
            elif entry.is_dir(follow_symlinks=False):
                for dirpath, dirnames, filenames in os.walk(entry.path):
                    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                    rel = Path(dirpath).relative_to(base).as_posix()
                    keys.extend(f"{rel}/{name}" for name in filenames
                                if not name.startswith("."))
        return sorted(keys)

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {key!r}")
        return path

    def size(self, key: str) -> int:
        return self._existing(key).stat().st_size

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise StoreError(f"bad range [{start}, {end}) of {key!r}")
        with self._existing(key).open("rb") as f:
            f.seek(start)
            return f.read(end - start)

    def iter_bytes(self, key: str, block: int = 1024 * 1024) -> Iterator[bytes]:
        with self._existing(key).open("rb") as f:
            while data := f.read(block):
                yield data

    def _hold_marker(self, path: Path) -> Path:
        return path.with_name(f".{path.name}{HOLD_SUFFIX}")

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self._hold_marker(path).exists():
            raise ObjectLockedError(f"{key!r} is under a legal hold")
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    def lock_state(self, key: str) -> ObjectLock:
        path = self._existing(key)
        return ObjectLock(mode=None, retain_until=None,
                          legal_hold=self._hold_marker(path).exists())

    def set_legal_hold(self, key: str, on: bool) -> None:
        marker = self._hold_marker(self._existing(key))
        if on:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)
        fsync_dir(marker.parent)
