"""The slides of the executed lessons: no slide carries more than one figure, counted on the outputs
the lessons really make (build/executed/, or $COURSE_EXECUTED), and the reveal.js decks `make slides`
wrote (build/slides/, or $COURSE_SLIDES) load nothing from a network.

The slide types come from the committed notebooks (book/slide_metadata.py sets them), the outputs from
the executed copies; a copy whose cells differ from the lesson is stale and fails.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "book"))
import slides_check as sc  # noqa: E402  (book/slides_check.py)

EXECUTED = Path(os.environ.get("COURSE_EXECUTED", ROOT / "build" / "executed"))
SLIDES = Path(os.environ.get("COURSE_SLIDES", ROOT / "build" / "slides"))
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

needs_executed = pytest.mark.skipif(
    not any(EXECUTED.glob("[0-9][0-9]_*.ipynb")),
    reason=f"no executed lessons in {EXECUTED}: run `make test` (or set COURSE_EXECUTED)",
)


def executed(lesson: Path):
    path = EXECUTED / lesson.name
    if not path.is_file():
        pytest.skip(f"{path} is missing (its execution failed or was not run)")
    run = nbformat.read(path, as_version=4)
    committed = nbformat.read(lesson, as_version=4)
    return sc.merge_outputs(committed.cells, run.cells, lesson.name), run.metadata.get("widgets")


@needs_executed
@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_no_slide_carries_more_than_one_figure(lesson):
    cells, widgets = executed(lesson)
    assert sc.figure_problems(cells, widgets) == [], (
        f"{lesson.name}: split the slide (book/slide_metadata.py), or the cell that makes two figures"
    )


@needs_executed
def test_the_executed_lessons_have_figures():
    """Figures are what the check above counts: a run under MPLBACKEND=Agg stores none (and every
    slide would pass for the wrong reason). A lesson that calls plt.show() must hold a picture."""
    missing = []
    for lesson in LESSONS:
        if not (EXECUTED / lesson.name).is_file():
            continue
        cells, _ = executed(lesson)
        code = [c for c in cells if c["cell_type"] == "code"]
        shows = any("plt.show()" in sc.source(c) for c in code)
        images = sum(
            any(m in o.get("data", {}) for m in sc.IMAGE_MIMES) for c in code for o in c["outputs"]
        )
        if shows and not images:
            missing.append(lesson.stem)
    assert not missing, (
        f"{missing} call plt.show() but their executed copies in {EXECUTED} hold no picture: "
        "execute with matplotlib's inline backend (MPLBACKEND unset, not Agg)"
    )


def _decks():
    return sorted(SLIDES.glob("[0-9][0-9]_*.slides.html"))


needs_slides = pytest.mark.skipif(
    not (SLIDES / "assets").is_dir(), reason=f"no slides built in {SLIDES}: run `make slides`"
)


@needs_slides
def test_every_lesson_has_a_deck_that_loads_only_local_files():
    import slides  # book/slides.py

    assert [d.name for d in _decks()] == [f"{p.stem}.slides.html" for p in LESSONS]
    for deck in _decks():
        html = deck.read_text(encoding="utf-8")
        assert slides.remote_fetches(html) == [], deck.name
        for url in re.findall(r"""<(?:script|link)\b[^>]*\b(?:src|href)=["']([^"']+)""", html):
            assert url.startswith("assets/"), f"{deck.name} loads {url}"
            assert (SLIDES / url.split("?")[0]).is_file(), f"{deck.name}: {url} was not copied"


@needs_slides
@pytest.mark.browser
def test_decks_show_in_a_browser_with_no_request_leaving_the_machine(chromium):
    """Two decks in chromium: reveal.js starts with the slides the metadata defines, the formulas
    typeset, and every request is a local file."""
    from playwright.sync_api import sync_playwright

    chosen = [d for d in _decks() if d.name[:2] in ("01", "03")] or _decks()[:1]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        requests, failed = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("requestfailed", lambda r: failed.append(r.url))
        try:
            for deck in chosen:
                page.goto(deck.as_uri())
                # nbconvert's template loads reveal.js through require.js: no global Reveal.
                reveal = "require('assets/reveal.js/dist/reveal.js')"
                page.wait_for_function(
                    f"window.require && require.defined('assets/reveal.js/dist/reveal.js') "
                    f"&& {reveal}.isReady()"
                )
                total = page.evaluate(f"{reveal}.getTotalSlides()")
                lesson = ROOT / "notebooks" / deck.name.replace(".slides.html", ".ipynb")
                assert total == sc.count_slides(nbformat.read(lesson, as_version=4).cells)[1]
                markdown = [c.source for c in nbformat.read(lesson, as_version=4).cells
                            if c.cell_type == "markdown" and sc.slide_type(c) not in sc.HIDDEN]  # fmt: skip
                if any(re.search(r"\$[^$\s][^$]*\$", m) for m in markdown):
                    page.wait_for_function(
                        "document.querySelectorAll('.MathJax_CHTML, mjx-container').length > 0",
                        timeout=20_000,
                    )
        finally:
            browser.close()
    remote = [u for u in requests if not u.startswith(("file://", "data:", "blob:"))]
    assert remote == [] and failed == [], (remote[:5], failed[:5])
