"""The package layout: imports point one way and form no circle (issue 20).

Every import statement of `src/pqtradeoff` is read (relative ones resolved, those inside functions counted: a
lazy import is still an arrow; `from pkg import module` read as an import of the module). Layers, lowest
first; a module may import its own layer and the layers below it, never one above:

    base (errors, io, columns) < sampling < models < pipeline < experiment < demo, toy < cli, __main__

`analysis` sits beside `pipeline` and imports only base, sampling, itself and the corpus contract
(`pipeline.corpus`); `exact` imports base, sampling and models; `testing` base and sampling.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "pqtradeoff"

BASE = {"errors", "io", "columns"}
#: layer -> the layers it may import (besides itself).
ALLOWED = {
    "base": set(),
    "sampling": {"base"},
    "models": {"base", "sampling"},
    "pipeline": {"base", "sampling", "models"},
    "analysis": {"base", "sampling"},
    "exact": {"base", "sampling", "models"},
    "experiment": {"base", "sampling", "models", "pipeline", "analysis"},
    "top": {"base", "sampling", "models", "pipeline", "analysis", "exact", "experiment"},
    "testing": {"base", "sampling"},
    "cli": {"base", "sampling", "models", "pipeline", "analysis", "exact", "experiment", "top", "root"},
    "root": set(),
}
#: modules of another layer that a layer may import all the same.
EXCEPTIONS = {"analysis": {"pqtradeoff.pipeline.corpus"}}


def modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = ("pqtradeoff",) + f.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != name and not name.startswith(m + ".")}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    head = parts[1]
    if head in BASE:
        return "base"
    if head in ("demo", "toy"):
        return "top"
    if head == "__main__":
        return "cli"
    return head


def graph() -> dict[str, set[str]]:
    found = modules()
    return {m: imports(m, p, set(found)) for m, p in found.items()}


def test_every_module_has_a_layer():
    assert {layer(m) for m in graph()} <= set(ALLOWED)


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in graph().items():
        own = layer(module)
        for target in targets:
            theirs = layer(target)
            if theirs != own and theirs not in ALLOWED[own] and target not in EXCEPTIONS.get(own, ()):
                wrong.append(f"{module} ({own}) -> {target} ({theirs})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                circles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not circles, "\n".join(circles)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The reader itself: an import inside a function and a relative one are arrows."""
    pkg = tmp_path / "pqtradeoff"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text("def f():\n    from pqtradeoff.models import b\n")
    (pkg / "models" / "b.py").write_text("from . import a\n")
    known = {"pqtradeoff", "pqtradeoff.models", "pqtradeoff.models.a", "pqtradeoff.models.b"}
    assert imports("pqtradeoff.models.a", pkg / "models" / "a.py", known) == {"pqtradeoff.models.b"}
    assert imports("pqtradeoff.models.b", pkg / "models" / "b.py", known) == {"pqtradeoff.models.a"}


def test_few_modules_at_the_top_and_the_rest_in_subpackages():
    top = [p for p in PACKAGE.glob("*.py")]
    packages = [p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    assert len(top) <= 8, sorted(p.name for p in top)
    assert len(packages) >= 5
