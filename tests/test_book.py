"""The site builder (book/make_site.py) on its own: the lesson order, the marks it puts on cells, and its
refusal of missing or stale executed lessons. What it builds is checked in tests/built/test_site.py."""

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))
import make_site as site_build  # noqa: E402  (book/make_site.py)

from lessonlib._meta import COLAB_INSTALL_CELL  # noqa: E402


def test_lesson_order_is_the_readme_table_and_covers_every_lesson():
    names = site_build.lesson_order()
    on_disk = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert names == on_disk, "the README's lesson table and notebooks/ disagree"


def test_lesson_order_refuses_a_readme_without_a_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Course\n\n## Lessons\n\nnone yet\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no lesson table"):
        site_build.lesson_order(readme)


def _lesson():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# 01 · X\n\n[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            "(https://colab.research.google.com/x.ipynb) see [the code](../lessonlib/loss.py), "
            "[lesson 2](02_zero_shot_classification.ipynb) and ![a diagram](../images/a.png)"
        ),
        nbformat.v4.new_code_cell(COLAB_INSTALL_CELL),
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["solution"]}),
        nbformat.v4.new_markdown_cell("*Answer.* because", metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell(
            "raise NotImplementedError", metadata={"tags": ["exercise", "raises-exception"]}
        ),
        nbformat.v4.new_code_cell("y = 2"),
    ]
    return nb


def test_site_marks_cells_on_a_copy_only():
    nb = _lesson()
    site = site_build.site_notebook(nb)
    title = site.cells[0].source
    assert "colab-badge.svg" not in title and "[Open In Colab](https://colab" in title
    assert "(https://github.com/multimodal-networks/course/blob/main/lessonlib/loss.py)" in title
    assert "(02_zero_shot_classification.ipynb)" in title and "(../images/a.png)" in title
    assert site.cells[1].metadata.tags == ["remove-cell"]
    assert "hide-cell" in site.cells[2].metadata.tags
    assert site.cells[3].source.startswith("::::{admonition} Answer\n:class: dropdown")
    assert "hide-output" in site.cells[4].metadata.tags
    assert site.cells[5].metadata.tags == []
    assert nb.cells[2].metadata.tags == ["solution"] and "colab-badge" in nb.cells[0].source
    urdu = site_build.site_notebook(nb, "notebooks/ur").cells[0].source  # one folder deeper
    assert (
        "(https://github.com/multimodal-networks/course/blob/main/notebooks/lessonlib/loss.py)"
        in urdu
    )
    nb.cells[0].source = "[code](../../lessonlib/loss.py#top) [english](../00_welcome.ipynb)"
    urdu = site_build.site_notebook(nb, "notebooks/ur").cells[0].source
    assert urdu == (
        "[code](https://github.com/multimodal-networks/course/blob/main/lessonlib/loss.py#top) "
        "[english](../00_welcome.ipynb)"
    )


def test_stale_or_missing_executed_lessons_are_refused(tmp_path):
    names = site_build.lesson_order()
    with pytest.raises(SystemExit, match="missing"):
        site_build.check_executed(tmp_path, names)
    for name in names:
        nbformat.write(nbformat.v4.new_notebook(), tmp_path / f"{name}.ipynb")
    assert len(site_build.check_executed(tmp_path, names)) == len(names)
    old = time.time() - 10 * 24 * 3600
    os.utime(tmp_path / f"{names[1]}.ipynb", (old, old))
    with pytest.raises(SystemExit, match=f"{names[1]}.ipynb is older"):
        site_build.check_executed(tmp_path, names)
