"""The house rules of ``src/ember`` that a reader should be able to rely on (DESIGN.md, issue #15).

- Layers only point down: a module imports from its own package or from a lower layer, never from a layer above
  or from a sibling package of its own layer (imports inside functions count too), so there is no import circle.
- Short pieces: no function body over 50 lines, no class over 300 lines.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "ember"

# bottom to top; a package not listed is a test failure (place it when adding it)
LAYERS: list[set[str]] = [
    {"errors", "__init__"},
    {"fixes"},
    {"progress", "batching", "config", "hardware"},
    {"data"},
    {"models"},
    {"store"},
    {"fidelity"},
    {"recycle", "encoders", "optimize"},
    {"bench"},
    {"tune", "compress", "scale"},
    {"cli"},
    {"__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
MAX_FUNCTION_BODY = 50
MAX_CLASS = 300


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        out.append((".".join(rel.parts), ast.parse(path.read_text(), str(path))))
    return out


def _top(module: str) -> str:
    return module.split(".")[0]


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(tree: ast.Module, module: str) -> set[str]:
    """ember modules imported anywhere in ``tree`` (relative to the ember package)."""
    found = set()
    package = module.rsplit(".", 1)[0] if "." in module else ""
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                names = [".".join([*base, node.module or ""]).strip(".")]
                names = ["ember." + n for n in names]
            else:
                names = [node.module or ""]
        else:
            continue
        for n in names:
            if n == "ember" or n.startswith("ember."):
                rest = n[len("ember.") :] if n != "ember" else "__init__"
                found.add(rest)
    return found


def test_every_package_has_a_layer():
    unknown = sorted({_top(m) for m, _ in _modules()} - set(RANK))
    assert not unknown, f"place these packages in LAYERS: {unknown}"


def test_layers_only_point_down():
    wrong = []
    for module, tree in _modules():
        if module == "__init__":  # the lazy public namespace re-exports every verb by name
            continue
        src = _top(module)
        for target in _imports(tree, module):
            dst = _top(target)
            if dst == src or dst not in RANK or src not in RANK:
                continue
            if RANK[dst] >= RANK[src]:
                wrong.append(f"{module} imports {target} ({src} is layer {RANK[src]}, {dst} layer {RANK[dst]})")
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


def test_no_import_circles():
    """No module reaches itself through imports (inside functions too), within a package as across them."""
    modules = dict(_modules())
    graph = {}
    for module, tree in modules.items():
        targets = set()
        for target in _imports(tree, module):
            # "from ember.x import y" may name a module x.y or a name in x (its __init__)
            for candidate in (target, f"{target}.__init__"):
                if candidate in modules and candidate != module:
                    targets.add(candidate)
        graph[module] = targets
    circles, state = [], {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1 and not n.endswith("__init__"):  # a package's __init__ re-exports its modules
                circles.append(" -> ".join(path[path.index(n):] + [n]) if n in path else f"{m} -> {n}")
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles:\n" + "\n".join(circles)


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring is not code
    if not body:
        return 0
    return node.end_lineno - body[0].lineno + 1  # type: ignore[operator]


@pytest.mark.parametrize("kind", ["function", "class"])
def test_pieces_stay_short(kind):
    long = []
    for module, tree in _modules():
        for node in ast.walk(tree):
            if kind == "function" and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = _body_lines(node)
                if n > MAX_FUNCTION_BODY:
                    long.append(f"{module}.{node.name}: body {n} lines")
            elif kind == "class" and isinstance(node, ast.ClassDef):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > MAX_CLASS:
                    long.append(f"{module}.{node.name}: {n} lines")
    limit = MAX_FUNCTION_BODY if kind == "function" else MAX_CLASS
    assert not long, f"{kind}s over {limit} lines:\n" + "\n".join(long)
