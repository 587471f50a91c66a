"""Slides: every lesson carries RISE slide metadata (set by book/slide_metadata.py) so that it can be
presented from its first cell, and `book/slides.py` turns a lesson into reveal.js HTML that fetches
nothing from a network and shows no solution.

These tests read the committed notebooks (no outputs), so the figures they count are the markdown
images; tests/built/test_slides_executed.py counts the figures the executed lessons make.
"""

import copy
import json
import re
import sys
from html import unescape
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))
import slides_check as sc  # noqa: E402  (book/slides_check.py)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _visible_text(html: str) -> str:
    """The page's text with the tags (syntax highlighting spans) removed, one line per source line."""
    return unescape(re.sub(r"<[^>]+>", "", html))


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request):
    return request.param


def test_every_cell_has_valid_slide_metadata(notebook):
    """A valid slide type everywhere; title a slide; install and set-up skipped; solutions skipped;
    every `##` heading starts a slide or subslide."""
    assert sc.metadata_problems(_cells(notebook)) == []


def test_sections_and_exercises_are_slides_of_their_own(notebook):
    for i, cell in enumerate(_cells(notebook)):
        text = sc.source(cell).lstrip()
        if re.match(r"## (Summary|Exercises|References)\b|### Exercise \d", text):
            assert sc.slide_type(cell) == "slide", f"{notebook.name}: cell {i} ({text[:30]!r})"


def test_checks_are_skipped_and_exercise_scaffolds_shown(notebook):
    for i, cell in enumerate(_cells(notebook)):
        if "check" in sc.tags(cell):
            assert sc.slide_type(cell) == "skip", f"{notebook.name}: self-check cell {i} is shown"
        if "exercise" in sc.tags(cell):
            assert sc.slide_type(cell) not in sc.HIDDEN, f"{notebook.name}: exercise {i} hidden"


def test_no_slide_carries_two_markdown_figures(notebook):
    assert sc.figure_problems(_cells(notebook)) == []


def test_each_lesson_is_a_slide_show(notebook):
    slides, total = sc.count_slides(_cells(notebook))
    sections = sum(sc.heading_level(c) == 2 for c in _cells(notebook))
    assert slides >= sections >= 4 and total >= slides, (slides, total, sections)


def test_the_checks_can_fail(tmp_path):
    """Deliberate bad metadata in a copy of a lesson is caught, cell by cell."""
    cells = copy.deepcopy(_cells(NOTEBOOKS[1]))
    assert sc.metadata_problems(cells) == [] and sc.figure_problems(cells) == []
    solution = next(i for i, c in enumerate(cells) if "solution" in sc.tags(c))
    heading = next(i for i, c in enumerate(cells) if sc.heading_level(c) == 2)
    cells[0]["metadata"]["slideshow"]["slide_type"] = "subslide"
    cells[1]["metadata"]["slideshow"]["slide_type"] = "-"
    cells[solution]["metadata"]["slideshow"]["slide_type"] = "fragment"
    cells[heading]["metadata"]["slideshow"]["slide_type"] = "-"
    cells[5]["metadata"]["slideshow"]["slide_type"] = "slid"
    del cells[6]["metadata"]["slideshow"]
    path = tmp_path / NOTEBOOKS[1].name
    path.write_text(json.dumps({"cells": cells}), encoding="utf-8")
    problems = "\n".join(sc.metadata_problems(_cells(path)))
    assert "cell 0 (the title) must be a 'slide'" in problems
    assert "cell 1 (install/set-up) must be 'skip'" in problems
    assert f"cell {solution}: a solution must be skipped" in problems
    assert f"cell {heading}: a '## ' heading must start a slide" in problems
    assert "cell 5: slide_type 'slid' is not one of" in problems
    assert "cell 6: slide_type None" in problems


def test_figure_counting_can_fail():
    """Two figures on one slide are caught; badges, progress bars, skipped cells and notes are not
    figures on a slide."""

    def md(text, kind="-"):
        return {
            "cell_type": "markdown",
            "source": text,
            "metadata": {"slideshow": {"slide_type": kind}},
        }

    def code(outputs, kind="-"):
        return {"cell_type": "code", "source": "x", "outputs": outputs,
                "metadata": {"slideshow": {"slide_type": kind}}}  # fmt: skip

    png = {"output_type": "display_data", "data": {"image/png": "iVBO", "text/plain": "<Figure>"}}
    bar = {"output_type": "display_data",
           "data": {sc.WIDGET_MIME: {"model_id": "bar"}, "text/plain": "0%"}}  # fmt: skip
    box = {"output_type": "execute_result", "data": {sc.WIDGET_MIME: {"model_id": "box"}}}
    widgets = {sc.WIDGET_STATE_MIME: {"state": {
        "bar": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_p", "IPY_MODEL_t"]}},
        "p": {"model_name": "FloatProgressModel", "state": {}},
        "t": {"model_name": "HTMLModel", "state": {}},
        "box": {"model_name": "VBoxModel", "state": {"children": []}}}}}  # fmt: skip
    badges = "# T\n\n[![Open In Colab](https://x/b.svg)](https://x) [![Binder](https://y.svg)](https://y)"
    ok = [
        md(badges, "slide"),
        code([bar, png]),
        md("![a figure](../images/a.png)", "subslide"),
        code([png], "skip"),
        md("![another](../images/b.png)", "notes"),
        code([box], "slide"),
    ]
    assert sc.figure_problems(ok, widgets) == []
    assert sc.markdown_figures(badges) == 0 and sc.markdown_figures('x <img src="a.png">') == 1
    bad = copy.deepcopy(ok)
    bad[2]["metadata"]["slideshow"]["slide_type"] = "fragment"  # the picture joins the plot's slide
    bad[5]["metadata"]["slideshow"]["slide_type"] = "-"
    assert sc.figure_problems(bad, widgets) == [
        "the slide starting at cell 0 carries 3 figures (cell 1: 1, cell 2: 1, cell 5: 1)"
    ]
    assert sc.figure_problems(ok) != []  # without the widget state the progress bar counts too
    two = [md("# T", "slide"), code([png, png])]
    assert "carries 2 figures (cell 1: 2)" in sc.figure_problems(two)[0]


def test_merge_refuses_a_stale_executed_copy():
    cells = _cells(NOTEBOOKS[0])
    stale = copy.deepcopy(cells)
    stale[3]["source"] = "edited"
    with pytest.raises(ValueError, match="cell 3 differs"):
        sc.merge_outputs(cells, stale, NOTEBOOKS[0].name)
    with pytest.raises(ValueError, match="execute the lesson again"):
        sc.merge_outputs(cells, stale[:-1], NOTEBOOKS[0].name)


def test_slides_html_is_offline_and_without_solutions():
    """The exporter on a committed lesson (standing in for its executed copy): every script and style
    sheet is local, no solution's code is in the page, the badges are plain links."""
    pytest.importorskip("nbconvert")
    import slides  # book/slides.py

    lesson = ROOT / "notebooks" / "00_welcome.ipynb"
    nb = slides.slide_notebook(lesson, lesson)
    html, _ = slides.exporter(widgets=False).from_notebook_node(
        nb, resources={"metadata": {"path": str(ROOT), "name": lesson.stem}}
    )
    assert slides.remote_fetches(html) == []
    for url in re.findall(r"""(?:src|href)=["']([^"']+)["']""", html):
        if re.match(r"(https?:)?//", url):
            assert not re.search(r"\.(js|css)(\?|$)", url), f"remote script or style sheet {url}"
    assert re.search(r'src="assets/requirejs/require\.js"', html)
    assert "assets/reveal.js/dist/reveal.js" in html and "mermaid" not in html.split("<body")[0]
    text = _visible_text(html)
    cells = _cells(lesson)
    shown = "\n".join(sc.source(c) for c in cells if sc.slide_type(c) != "skip")
    for cell in cells:
        lines = [ln.strip() for ln in sc.source(cell).splitlines() if len(ln.strip()) > 20]
        if "solution" in sc.tags(cell):
            own = [ln for ln in lines if ln not in shown]  # lines no shown cell has too
            assert own and not [ln for ln in own if ln in text], (
                f"a solution is on the slides: {own}"
            )
        if "exercise" in sc.tags(cell):
            assert all(ln in text for ln in lines), f"an exercise's scaffold is missing: {lines}"
    assert "colab-badge.svg" not in html and "Open In Colab</a>" in html
    # The check itself can fail: a CDN script is reported.
    assert slides.remote_fetches('<script src="https://cdn.example/x.js"></script>')
    assert slides.remote_fetches("<style>@import url('//fonts.example/css');</style>")
    assert not slides.remote_fetches('<a href="https://colab.research.google.com/x">Colab</a>')
