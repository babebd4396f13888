"""Files that survive power loss: durable directories, atomic replacement, hashing.

fsync of a file covers its bytes, not its name: a file created or renamed into
a directory survives power loss only once the directory itself was fsynced.
The local store and the local bus write through these helpers.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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


def replace_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all or nothing, and durably once this returns.

    A crash or power loss at any point leaves the old content or the new one,
    never a mix: the new bytes go to a temp file, fsynced, renamed over ``path``;
    the directory is then fsynced so the rename itself survives power loss.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
