"""Layers point down for the benchmark's part of the house: optimize < bench < tune < cli, no import circles
inside bench (imports inside functions count; type-checking-only imports do not run)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def imports(path: Path) -> set[str]:
    """ember modules ``path`` imports at run time (module level or inside functions), TYPE_CHECKING blocks left out."""
    tree = ast.parse(path.read_text())
    guarded = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ember"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ember"))
    return found


def package(name: str) -> dict[str, set[str]]:
    root = SRC / "ember" / name
    return {f"ember.{name}." + p.relative_to(root).with_suffix("").as_posix().replace("/", "."): imports(p)
            for p in root.rglob("*.py")}


def test_lower_layers_do_not_import_upper_ones():
    above = {"optimize": ("ember.bench", "ember.tune", "ember.cli"), "bench": ("ember.tune", "ember.cli"),
             "tune": ("ember.cli",)}
    for pkg, banned in above.items():
        for module, deps in package(pkg).items():
            bad = sorted(d for d in deps if d.startswith(banned))
            assert not bad, f"{module} imports {bad}, a layer above it"


def test_no_import_circle_inside_bench():
    graph = {m.removesuffix(".__init__"): {d for d in deps if d.startswith("ember.bench.")}
             for m, deps in package("bench").items()}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(d == goal or (d not in seen and reaches(d, goal, seen | {d})) for d in graph[start])

    circles = sorted(m for m in graph if m != "ember.bench" and reaches(m, m, {m}))
    assert not circles, f"modules on an import circle: {circles}"
