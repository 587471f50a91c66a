"""The shape of lessonlib as a whole: no import loops, one idea per (short) module, each module saying
which lesson introduces it, and no public function with a wall of parameters.

These read the source with ``ast``; nothing is imported, so a module that would fail to import is
reported by its own tests, not here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lessonlib"
MODULES = {
    ".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): p
    for p in sorted(ROOT.rglob("*.py"))
}
MAX_LINES = 550  # "about 500": a module a student can read in one sitting
MAX_PARAMS = 8  # more settings than this go into a config dataclass


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the lessonlib modules it imports, at the top or inside a function."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # from . import x / from .x import y
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            deps |= {c for c in candidates if c in modules and c != name}
        # A package's __init__ is imported with any of its modules; that edge is not a loop.
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_loop_in_lessonlib():
    cycle = find_cycle(import_graph(MODULES))
    assert cycle is None, "import loop: " + " -> ".join(cycle)


def test_the_loop_finder_finds_a_loop(tmp_path):
    """The check above can fail: two modules that import each other (one inside a function) are caught."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import f\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg import a\n")
    modules = {"pkg": tmp_path / "pkg" / "__init__.py"}
    modules |= {f"pkg.{m}": tmp_path / "pkg" / f"{m}.py" for m in "ab"}
    assert find_cycle(import_graph(modules)) == ["pkg.a", "pkg.b", "pkg.a"]


def test_low_modules_do_not_import_generation():
    """The tiny CLIP's module stays below lesson 04's generation code (it was imported upwards once)."""
    graph = import_graph(MODULES)
    for low in (
        "lessonlib.models",
        "lessonlib.registry",
        "lessonlib.checkpoints",
        "lessonlib.embed",
    ):
        assert not graph[low] & {"lessonlib.generate", "lessonlib.critics"}, low


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_names_its_lesson(name):
    doc = ast.get_docstring(ast.parse(MODULES[name].read_text(encoding="utf-8"))) or ""
    assert doc, f"{name} has no docstring"
    if name == "lessonlib._meta":
        return
    assert re.search(r"lesson 0\d_[a-z_]+", doc), (
        f"{name}: its docstring must say which lesson introduces it ('Introduced in lesson 01_...')"
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_short(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it (one idea per module)"


def _public_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node.name, node
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and (
                    not item.name.startswith("_") or item.name == "__init__"
                ):
                    yield f"{node.name}.{item.name}", item


@pytest.mark.parametrize("name", sorted(MODULES))
def test_public_functions_have_few_parameters(name):
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    for fname, fn in _public_functions(tree):
        args = fn.args
        named = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        named = [a for a in named if a not in ("self", "cls")]
        assert len(named) <= MAX_PARAMS, (
            f"{name}.{fname} takes {len(named)} parameters: put the settings in a config dataclass"
        )
