"""The shape of the code: three floors, imports pointing only down, no cycles.

docs/architecture.md draws the floors. The imports are read with ``ast`` from
every module of the four packages (function-level and ``TYPE_CHECKING``
imports included: a lazy import up a floor is still a dependency up a floor).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

FLOORS: dict[str, float] = {
    "schemas": 0,  # the contracts: Wavix messages, Kafka records, tables, archive layout
    "infra": 1,  # the shared base: settings, bus, store, probes, audio, WAV, Parquet
    "compliance": 1.5,  # archive operations as a library (audit, verify, holds): on infra
    "ingest": 2,  # the services, none importing another
    "workers": 2,  # the namespace of the two Kafka workers: holds nothing itself
    "workers.recorder": 2,
    "workers.analyzer": 2,
    "control": 2,
    "console": 2,
    "callrec": 3,  # the entry points: the CLI, `up`, the simulator, wiring
}
"""Every first-party package (or service subpackage) and its floor."""

SERVICES = [name for name, floor in FLOORS.items() if floor == 2]


def unit_of(module: str) -> str | None:
    """The package of ``FLOORS`` that holds ``module``, or None for a third-party one."""
    for name in sorted(FLOORS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return None


def modules() -> Iterator[tuple[str, Path]]:
    for top in {name.split(".")[0] for name in FLOORS}:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def imports_of(module: str, is_package: bool, nodes: Iterable[ast.AST]) -> set[str]:
    """First-party modules imported by the import statements among ``nodes``."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # ``from pkg import mod`` imports a module when pkg/mod.py exists.
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if _exists(f"{base}.{alias.name}"))
    return {name for name in found if unit_of(name) is not None}


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _type_only(node: ast.stmt) -> bool:
    """An ``if TYPE_CHECKING:`` block: imports for annotations, never executed."""
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _executed(tree: ast.Module) -> Iterator[ast.AST]:
    """Every node but those inside ``if TYPE_CHECKING:`` blocks, at any depth."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in ast.iter_child_nodes(node)
                     if not (isinstance(child, ast.stmt) and _type_only(child)))


def _graphs() -> tuple[dict[str, set[str]], dict[str, set[str]], dict[str, set[str]]]:
    every: dict[str, set[str]] = {}
    runtime: dict[str, set[str]] = {}
    eager: dict[str, set[str]] = {}
    for name, path in modules():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        every[name] = imports_of(name, is_package, ast.walk(tree))
        runtime[name] = imports_of(name, is_package, _executed(tree))
        eager[name] = imports_of(name, is_package, [n for n in tree.body if not _type_only(n)])
    return every, runtime, eager


GRAPH, RUNTIME, EAGER = _graphs()
"""Every import (functions' and type-only ones included: they count for the floors);
those that can run (lazy ones in functions included); those run on import."""


def test_every_first_party_module_belongs_to_a_floor() -> None:
    assert GRAPH, "no modules found"
    homeless = [name for name in GRAPH if unit_of(name) is None]
    assert not homeless


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_or_stay_inside_the_package(module: str) -> None:
    own = unit_of(module)
    assert own is not None
    wrong = []
    for imported in sorted(GRAPH[module]):
        other = unit_of(imported)
        assert other is not None
        if other == own:
            continue
        if FLOORS[other] >= FLOORS[own]:
            kind = "across services" if FLOORS[other] == FLOORS[own] == 2 else "up a floor"
            wrong.append(f"{imported} ({other}, floor {FLOORS[other]}): {kind}")
    assert not wrong, f"{module} (floor {FLOORS[own]}) imports " + "; ".join(wrong)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_files() -> None:
    # Lazy imports (inside functions) count: a cycle hidden in a function is still two
    # files that cannot be understood, tested or moved one without the other. Type-only
    # imports (for annotations) do not: they never run.
    graph = {name: {i for i in deps if i in RUNTIME and i != name}
             for name, deps in RUNTIME.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_import_cycle_when_modules_load() -> None:
    graph = {name: {i for i in deps if i in EAGER and i != name} for name, deps in EAGER.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for module, deps in GRAPH.items():
        own = unit_of(module)
        assert own is not None
        graph.setdefault(own, set()).update(
            u for u in map(unit_of, deps) if u is not None and u != own
        )
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
