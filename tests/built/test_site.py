"""The course website as built by `make test` / `make site` (book/make_site.py), checked as a reader gets it.

Runs after the lessons were executed (build/executed) and the site built (build/site/_build/html):
every lesson is a page, in the README's order; no page loads anything from a network (scripts, styles,
pictures, fonts); the figures, formulas and widgets of the executed lessons are there; the solutions are
folded away. The last test opens pages in a real browser (Debian's chromium) with every request outside
the site refused and checks that formulas typeset, pictures load and the widgets draw.
"""

from __future__ import annotations

import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "book"))
import make_site as site_build  # noqa: E402  (book/make_site.py)

HTML = Path(os.environ.get("COURSE_SITE", ROOT / "build" / "site" / "_build" / "html"))
EXECUTED = Path(os.environ.get("COURSE_EXECUTED", ROOT / "build" / "executed"))
LESSONS = site_build.lesson_order()

pytestmark = pytest.mark.skipif(
    not (HTML / "index.html").exists(), reason=f"no site built at {HTML}: run `make site`"
)


class Resources(HTMLParser):
    """Every URL a page loads by itself (not the links a reader may click)."""

    LOADS = {"script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src",
             "audio": "src", "embed": "src", "object": "data"}  # fmt: skip

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in self.LOADS and attrs.get(self.LOADS[tag]):
            self.urls.append(attrs[self.LOADS[tag]])
        if tag == "link" and attrs.get("href"):
            rel = (attrs.get("rel") or "").lower()
            if any(word in rel for word in ("stylesheet", "preload", "icon", "modulepreload")):
                self.urls.append(attrs["href"])


def page(name: str) -> str:
    return (HTML / "notebooks" / f"{name}.html").read_text(encoding="utf-8")


def is_remote(url: str) -> bool:
    return bool(re.match(r"^(https?:)?//", url.strip()))


def test_every_lesson_is_a_page_in_the_readme_order():
    index = (HTML / "index.html").read_text(encoding="utf-8")
    positions = []
    for name in LESSONS:
        assert (HTML / "notebooks" / f"{name}.html").exists(), f"no page for lesson {name}"
        href = f"notebooks/{name}.html"
        assert href in index, f"the site's menu does not link {href}"
        positions.append(index.index(href))
    assert positions == sorted(positions), f"menu order {positions} is not the README's {LESSONS}"
    assert (HTML / "instructors.html").exists(), "the instructor's guide is not a page of the site"


def test_no_page_loads_anything_from_a_network():
    pages = sorted(p for p in HTML.rglob("*.html") if "_static" not in p.parts)
    assert len(pages) >= len(LESSONS) + 1
    for path in pages:
        parser = Resources()
        parser.feed(path.read_text(encoding="utf-8"))
        remote = [url for url in parser.urls if is_remote(url)]
        assert not remote, f"{path.relative_to(HTML)} loads {remote[:3]} from a network"
        for url in parser.urls:
            if url.startswith(("data:", "#")):
                continue
            local = (path.parent / url.split("?")[0].split("#")[0]).resolve()
            assert local.exists(), f"{path.relative_to(HTML)} loads {url}, which the site lacks"
    for css in HTML.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        remote = [u for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", text) if is_remote(u)]
        remote += re.findall(r"@import\s+['\"](https?:[^'\"]+)", text)
        assert not remote, f"{css.relative_to(HTML)} fetches {remote[:3]}"


def _outputs(name: str, mime: str, executed: Path = EXECUTED) -> int:
    nb = nbformat.read(executed / f"{name}.ipynb", as_version=4)
    return sum(
        mime in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code" and "remove-cell" not in cell.metadata.get("tags", [])
        for out in cell.get("outputs", [])
    )


@pytest.mark.parametrize("name", LESSONS)
def test_figures_formulas_and_widgets_of_the_executed_lesson_are_on_its_page(name):
    html = page(name)
    figures = _outputs(name, "image/png")
    shown = len(re.findall(r'<img[^>]+src="\.\./_images/', html))
    assert shown >= figures, (
        f"{name}: {figures} figures in the executed lesson, {shown} on the page"
    )
    if "$" in (ROOT / "notebooks" / f"{name}.md").read_text(encoding="utf-8"):
        assert 'class="math notranslate nohighlight"' in html, f"{name}: no formula on the page"
        assert "_static/mathjax/tex-chtml.js" in html
    if _outputs(name, "application/vnd.jupyter.widget-view+json"):
        assert "application/vnd.jupyter.widget-state+json" in html, f"{name}: widget state missing"
        assert "_static/widgets/embed.js" in html


URDU = [n for n in LESSONS if (ROOT / "notebooks" / "ur" / f"{n}.ipynb").exists()]


@pytest.mark.parametrize("name", URDU)
def test_urdu_lessons_are_pages_laid_out_right_to_left(name):
    html = (HTML / "notebooks" / "ur" / f"{name}.html").read_text(encoding="utf-8")
    assert html.count('<div dir="rtl" lang="ur">') >= 5, (
        f"ur/{name}: prose not marked right to left"
    )
    assert "_static/urdu.css" in html
    figures = _outputs(name, "image/png", EXECUTED / "ur")
    shown = len(re.findall(r'<img[^>]+src="\.\./\.\./_images/', html))
    assert figures and shown >= figures, f"ur/{name}: {figures} figures executed, {shown} shown"
    index = (HTML / "index.html").read_text(encoding="utf-8")
    assert index.index(f"notebooks/ur/{name}.html") > index.index(f"notebooks/{LESSONS[-1]}.html")


@pytest.mark.parametrize("name", LESSONS)
def test_solutions_are_folded_away(name):
    nb = nbformat.read(EXECUTED / f"{name}.ipynb", as_version=4)
    code = sum(c.cell_type == "code" and "solution" in c.metadata.get("tags", []) for c in nb.cells)
    written = sum(
        c.cell_type == "markdown" and "solution" in c.metadata.get("tags", []) for c in nb.cells
    )
    html = page(name)
    cells = re.findall(r'<div class="cell ([^"]*)"', html)
    folded = [c for c in cells if "tag_solution" in c]
    assert len(folded) == code, f"{name}: {code} code solutions, {len(folded)} on the page"
    assert all("tag_hide-cell" in c for c in folded), f"{name}: a solution is not folded"
    answers = re.findall(
        r'<div class="[^"]*\bdropdown\b[^"]*">\s*<p class="admonition-title">Answer', html
    )
    assert len(answers) == written, f"{name}: {written} written answers, {len(answers)} folded"
    assert "Open In Colab" not in html or "colab-badge.svg" not in html


@pytest.mark.browser
def test_pages_read_right_in_a_browser_with_the_network_cut_off(chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    remote, failed = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900})

            def route(request_route):
                url = request_route.request.url
                if url.startswith(("file://", "data:", "blob:")):
                    request_route.continue_()
                else:
                    remote.append(url)
                    request_route.abort()

            context.route("**/*", route)
            tab = context.new_page()
            tab.on("requestfailed", lambda r: failed.append(r.url))
            checks = {}
            pages = ["01_clip_concepts", "03_image_search"] + (
                ["ur/02_zero_shot_classification"] if URDU else []
            )
            for name in pages:
                tab.goto((HTML / "notebooks" / f"{name}.html").as_uri(), wait_until="load")
                tab.wait_for_function(
                    "() => !window.MathJax || MathJax.startup?.promise", timeout=30000
                )
                tab.wait_for_timeout(1500)
                checks[name] = tab.evaluate(
                    """() => ({
                        math: document.querySelectorAll('mjx-container').length,
                        rawMath: document.querySelectorAll('span.math').length,
                        images: Array.from(document.images).filter(i => i.currentSrc.includes('_images')).length,
                        broken: Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0).map(i => i.src),
                        widgets: document.querySelectorAll('.jupyter-widgets').length,
                        widgetErrors: document.body.innerText.includes('Error displaying widget'),
                        urduFont: document.fonts.check('16px "Noto Nastaliq Urdu"', 'نیلی تکون')
                            && Array.from(document.fonts).some(f => f.family.includes('Nastaliq')
                                && f.status === 'loaded'),
                        urduDir: Array.from(document.querySelectorAll('div[lang="ur"]'))
                            .every(d => getComputedStyle(d).direction === 'rtl'),
                    })"""
                )
                tab.screenshot(path=str(tmp_path / f"{name.replace('/', '_')}.png"))
        finally:
            browser.close()
    assert not remote, f"pages asked the network for {remote[:5]}"
    assert not failed, f"these loads failed: {failed[:5]}"
    concepts, search = checks["01_clip_concepts"], checks["03_image_search"]
    assert concepts["math"] > 0 and concepts["math"] >= concepts["rawMath"] // 2, concepts
    for name, found in checks.items():
        assert found["images"] > 0 and not found["broken"], (name, found)
    assert search["widgets"] > 0 and not search["widgetErrors"], search
    if URDU:
        ur = checks["ur/02_zero_shot_classification"]
        assert ur["urduFont"] and ur["urduDir"], (
            f"the Urdu page is not in Noto Nastaliq, right to left: {ur}"
        )
