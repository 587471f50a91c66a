"""What students meet in every lesson: exercises with collapsed solutions, short markdown cells, and
pretrained-only cells that still teach offline. Reads the committed notebooks; nbval executes them."""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_WORDS = 250
EXERCISE = re.compile(r"^###\s+Exercise\s+(\d+)", re.M)


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell):
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _tags(cell):
    return set(cell.get("metadata", {}).get("tags", []))


def exercise_problems(cells) -> list[str]:
    """Each "### Exercise N" needs a solution cell (tag `solution`, collapsed) before the next one."""
    problems, current, solved = [], None, False
    for cell in cells + [
        {"cell_type": "markdown", "source": "### Exercise 0 (end)", "metadata": {}}
    ]:
        match = EXERCISE.search(_source(cell)) if cell["cell_type"] == "markdown" else None
        if match:
            if current is not None and not solved:
                problems.append(f"exercise {current} has no solution cell")
            current, solved = match.group(1), False
            continue
        if "solution" in _tags(cell):
            if not cell.get("metadata", {}).get("jupyter", {}).get("source_hidden"):
                problems.append(
                    f"exercise {current}: its solution is not collapsed (source_hidden)"
                )
            solved = True
        if "exercise" in _tags(cell) and cell["cell_type"] == "code":
            if "raise NotImplementedError" in _source(cell) and "raises-exception" not in _tags(
                cell
            ):
                problems.append(
                    f"exercise {current}: a raising scaffold needs the raises-exception tag"
                )
    return problems


def offline_notice_only(source: str) -> bool:
    """True for a cell whose offline path is empty or only prints: `if cfg.mode == "pretrained": ...`
    with no `else`, or an `else` that only calls print."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics
        return False
    for node in tree.body:
        if not isinstance(node, ast.If):
            continue
        test = ast.unparse(node.test).replace("'", '"')
        if test != 'cfg.mode == "pretrained"':
            continue
        others = [
            n
            for n in tree.body
            if n is not node and not isinstance(n, (ast.Import, ast.ImportFrom))
        ]
        if others:
            return False  # the cell does other work too
        if not node.orelse:
            return True
        return all(
            isinstance(n, ast.Expr)
            and isinstance(n.value, ast.Call)
            and getattr(n.value.func, "id", "") == "print"
            for n in node.orelse
        )
    return False


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request):
    return request.param


def test_every_exercise_has_a_collapsed_solution(notebook):
    cells = _cells(notebook)
    assert any(EXERCISE.search(_source(c)) for c in cells if c["cell_type"] == "markdown"), (
        f"{notebook.name}: no '### Exercise N' cells"
    )
    assert exercise_problems(cells) == []


def test_course_has_enough_exercises():
    total = sum(
        len(EXERCISE.findall(_source(c)))
        for path in NOTEBOOKS
        for c in _cells(path)
        if c["cell_type"] == "markdown"
    )
    assert total >= 29, total


def test_markdown_cells_are_short(notebook):
    for i, cell in enumerate(_cells(notebook)):
        if cell["cell_type"] == "markdown":
            words = len(_source(cell).split())
            assert words <= MAX_WORDS, f"{notebook.name}: markdown cell {i} has {words} words"


def test_summary_exercises_references_are_separate_cells(notebook):
    for cell in _cells(notebook):
        if cell["cell_type"] == "markdown":
            heads = re.findall(r"^## (Summary|Exercises|References)\b", _source(cell), re.M)
            assert len(heads) <= 1, f"{notebook.name}: {heads} share one cell"


def test_pretrained_cells_teach_offline_too(notebook):
    for i, cell in enumerate(_cells(notebook)):
        if cell["cell_type"] == "code":
            assert not offline_notice_only(_source(cell)), (
                f"{notebook.name}: code cell {i} only prints a notice offline; give it an else: "
                "branch that makes the same point with the tiny models"
            )


def test_the_checks_can_fail():
    """The checks above catch what they are for."""
    md = {"cell_type": "markdown", "metadata": {}}
    code = {"cell_type": "code", "metadata": {}}
    cells = [
        {**md, "source": "### Exercise 1: x"},
        {**code, "source": "raise NotImplementedError", "metadata": {"tags": ["exercise"]}},
        {**md, "source": "### Exercise 2: y"},
        {**code, "source": "x = 1", "metadata": {"tags": ["solution"]}},
    ]
    problems = exercise_problems(cells)
    assert any("exercise 1 has no solution" in p for p in problems)
    assert any("raises-exception" in p for p in problems)
    assert any("not collapsed" in p for p in problems)
    assert offline_notice_only('if cfg.mode == "pretrained":\n    run()\nelse:\n    print("no")')
    assert offline_notice_only('if cfg.mode == "pretrained":\n    run()')
    assert not offline_notice_only('if cfg.mode == "pretrained":\n    run()\nelse:\n    tiny()')
