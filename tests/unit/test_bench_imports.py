"""Every benchmark module imports: benchmarks are not run in CI, so a module moved under
them (bench/harness/) would otherwise break them unnoticed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"
MODULES = sorted(
    ".".join(p.relative_to(BENCH.parent).with_suffix("").parts)
    for p in BENCH.rglob("*.py")
    if p.name != "__init__.py" and p.stem != "fuzz_atheris"  # atheris is not a dependency
)


@pytest.mark.parametrize("module", MODULES)
def test_the_benchmark_module_imports(module: str) -> None:
    importlib.import_module(module)
