"""Build a lesson notebook from a list of cells, with the standard first cells.

Used by scripts/make_notebook_NN.py. Every notebook starts with: a title + badge row, the Colab install
guard, and the setup cell; tests/test_notebook_structure.py checks that.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lessonlib._meta import COLAB_INSTALL_CELL, badge_markdown  # noqa: E402


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str):
    return nbformat.v4.new_code_cell(text.strip("\n"))


def build(path: str, title: str, intro: str, cells: list, setup_code: str | None = None) -> Path:
    """Write notebooks/<path> with the standard opening cells, then ``cells``; outputs stay empty."""
    rel = f"notebooks/{path}"
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    opening = [
        md(f"# {title}\n\n{badge_markdown(rel)}\n\n{intro.strip()}"),
        code(COLAB_INSTALL_CELL),
        code(setup_code or "import lessonlib\n\ncfg = lessonlib.setup()"),
    ]
    nb.cells = opening + cells
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    out = ROOT / rel
    nbformat.validate(nb)
    nbformat.write(nb, out)
    return out
