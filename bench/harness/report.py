"""What every benchmark needs for its report: the machine, and its own section of
docs/benchmarks.md (other sections belong to other benchmarks and are kept)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

HEADER = ("# Benchmarks\n\nFigures are measured by the benchmarks in `bench/`, never by timed "
          "tests (DESIGN.md §7). Each section says the command that wrote it.\n\n")


def machine() -> str:
    """CPU count and model, memory and Python: enough to compare runs honestly."""
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
        with open("/proc/meminfo") as f:
            kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except OSError:
        memory = ""
    return f"{os.cpu_count()} CPUs ({cpu}){memory}, Python {platform.python_version()}"


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
