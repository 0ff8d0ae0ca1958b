"""The tree's rules, read from the source (every import counts, those inside functions too):
the two halves never import each other, no module imports itself back through others, and no
folder is a pile (issue 27: a newcomer finds each step's home)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.harness.paths import REPO

PACKAGES = ("trainer", "launcher", "runcontract")
MOST_MODULES_SIDE_BY_SIDE = 15


def module_files() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = module_files()


def imported_modules(path: Path) -> set[str]:
    """The project modules a file imports (``from a.b import c`` is a.b.c when that is a module)."""
    def known(name: str) -> str:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        return name

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(known(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in MODULES else known(node.module))
    names.discard("")
    return names


GRAPH = {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a set of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_walk_sees_the_whole_tree():
    assert {"trainer.training.loop", "trainer.corpus.memmaps", "launcher.box.factory", "launcher.store.s3",
            "launcher.managed.controller", "runcontract.run_files"} <= set(MODULES)
    assert "launcher.box.base" in GRAPH["launcher.box.factory"]  # imports are read, those in functions too


@pytest.mark.parametrize("half, other", [("trainer", "launcher"), ("launcher", "trainer")])
def test_the_halves_never_import_each_other(half, other):
    crossing = {name: sorted(m for m in deps if m.split(".")[0] == other)
                for name, deps in GRAPH.items() if name.split(".")[0] == half}
    assert {name: deps for name, deps in crossing.items() if deps} == {}


def test_no_import_cycles():
    assert import_cycles(GRAPH) == []


def test_the_cycle_finder_finds_one():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_folder_piles_up_modules():
    folders = {path.parent for top in (*PACKAGES, "tests", "bench", "infra") for path in (REPO / top).rglob("*.py")}
    crowded = {str(folder.relative_to(REPO)): count for folder in folders
               if (count := len(list(folder.glob("*.py")))) > MOST_MODULES_SIDE_BY_SIDE}
    assert crowded == {}
