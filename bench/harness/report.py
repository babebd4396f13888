"""What every benchmark needs for its report: the machine, tables, and its own section
of docs/benchmarks.md (other sections belong to other benchmarks and are kept)."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HEADER = ("# Benchmarks\n\nFigures are measured by the benchmarks in `bench/`, never by timed "
          "tests. The targets are listed in `bench/README.md`. Each section says the command "
          "that wrote it.\n\n")


# -- the machine -------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the architecture when it has none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def machine(memory: bool = True) -> str:
    """CPU count and model, memory and Python: enough to compare runs honestly."""
    extra = ""
    if memory:
        try:
            with open("/proc/meminfo") as f:
                kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
            extra = f", {kib / 2**20:.0f} GiB RAM"
        except OSError:
            extra = ""
    return f"{os.cpu_count()} CPUs ({cpu_model()}){extra}, Python {platform.python_version()}"


def machine_facts() -> dict[str, str]:
    """The machine as separate facts: nproc, cpu, ram, kernel, python."""
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        nproc = ""
    mem = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    return {
        "nproc": nproc,
        "cpu": cpu_model(),
        "ram": f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_version() -> str:
    """``git describe --always --dirty`` of this checkout, or "unknown"."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


# -- tables ------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    """A figure for a table: thousands separated, "n/a" for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, for a terminal."""
    widths = [max(len(r[i]) for r in [list(head), *rows]) for i in range(len(head))]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
           "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- docs --------------------------------------------------------------------------------


def replace_section(path: Path, heading: str, section: str) -> None:
    """Put ``section`` (starting with ``heading``) in place of that section of ``path``."""
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    body = section.rstrip("\n") + "\n\n"
    if pattern.search(text):
        text = pattern.sub(lambda _: body, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text.rstrip("\n") + "\n")
