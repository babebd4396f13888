"""Text files of the local stack: log tails for error messages, atomic writes.

Used by install.py (install logs, log4j configs), process.py and kafka.py
(start-up diagnostics, ``server.properties``) and cli.py (``stack.json``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def error_lines(path: Path, offset: int = 0, limit: int = 20) -> str:
    """ERROR/FATAL lines of a log4j log after byte ``offset``, each with its exception line."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return ""
    found: list[str] = []
    for index, line in enumerate(lines):
        if "] ERROR " in line or "] FATAL " in line:
            found.append(line)
            following = lines[index + 1] if index + 1 < len(lines) else ""
            if following and not following.startswith(("[", "\t")):
                found.append("    " + following)
    return "\n".join(found[:limit])


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it already holds exactly that."""
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name, delete=False) as tmp:
        tmp.write(text)
    Path(tmp.name).replace(path)
