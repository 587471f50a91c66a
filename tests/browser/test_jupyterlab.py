"""The lessons in a real browser: JupyterLab runs a lesson, its ipywidgets render and answer typing.

nbval runs the same notebooks headless, where a widget is only a model in the kernel: it cannot see a
widget that the browser fails to draw ("Error displaying widget") or a box whose view does not reach
the kernel. These tests open a lesson in JupyterLab in chromium, run all its cells with the Run menu,
then type into its box as a student does and check that the results on screen follow.

Run them with ``pytest tests/browser -p no:cacheprovider`` (about a minute); they are skipped where no
browser is installed (see conftest.py).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

# Screenshots (the page after typing, and at any failure) outlive pytest's tmp folders, which other
# runs on the same machine clean away: CI can keep this folder as an artifact.
SCREENSHOTS = Path(tempfile.gettempdir()) / "lessonlib-browser-screenshots"
RUN_ALL_TIMEOUT_S = 240  # Run All Cells takes ~10 s for lesson 02 or 03 on 2 shared cores
OPEN_TIMEOUT_S = 90  # page, notebook and kernel ready
WIDGET_TIMEOUT_S = 30  # a typed query reaching the kernel and its answer reaching the page


class Lab:
    """A chromium page on one lesson in JupyterLab, with checks that fail with a screenshot."""

    def __init__(self, page, server, notebook: str, shots: Path):
        self.page = page
        self.server = server
        self.notebook = notebook
        self.path = server.root / notebook
        self.cells = json.loads(self.path.read_text())["cells"]
        self.shots = shots
        self.shots.mkdir(parents=True, exist_ok=True)
        (self.shots / f"{Path(notebook).stem}_failure.png").unlink(missing_ok=True)  # an old one

    def screenshot(self, name: str, element=None) -> Path:
        """The page (or one element of it) as a PNG in SCREENSHOTS; returns its path."""
        path = self.shots / f"{Path(self.notebook).stem}_{name}.png"
        try:
            (element or self.page).screenshot(path=str(path), timeout=15_000)
        except Exception as err:  # noqa: BLE001 - a failed screenshot must not hide the failure
            return Path(f"(no screenshot: {err})")
        return path

    def fail(self, message: str):
        shot = self.screenshot("failure")
        pytest.fail(
            f"{self.notebook}: {message}\nscreenshot: {shot}\nserver log: {self.server.log}",
            pytrace=False,
        )

    def check(self, condition, message: str) -> None:
        if not condition:
            self.fail(message)

    @contextmanager
    def step(self, what: str):
        """Turn a playwright timeout or error inside ``what`` into a failure with a screenshot."""
        from playwright.sync_api import Error

        try:
            yield
            return
        except Error as err:
            problem = f"while {what}: {str(err).splitlines()[0]}"
        try:
            self.fail(problem)
        except pytest.fail.Exception as failed:
            raise failed from None  # the report shows this message, not playwright's traceback

    def cell(self, index: int):
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def drawn(self, index: int, element, what: str) -> None:
        """Wait until ``element`` (a part of a widget in cell ``index``) is drawn, scrolled into view;
        else fail, showing what the cell's output is instead (e.g. a widget's text repr when the
        browser has no widget manager)."""
        from playwright.sync_api import Error

        try:
            self.cell(index).scroll_into_view_if_needed()
            element.wait_for(state="attached")
            element.scroll_into_view_if_needed()
            element.wait_for(state="visible")
            return
        except Error:
            pass
        shown = self.cell(index).locator(".jp-OutputArea").text_content(timeout=5000) or ""
        self.fail(
            f"{what} in cell {index} is not drawn as a widget; the output shows {shown[:300]!r}"
        )

    def appears(self, element, timeout_s: float = WIDGET_TIMEOUT_S) -> bool:
        """Whether ``element`` shows up within ``timeout_s`` (False, not an error, when it does not)."""
        from playwright.sync_api import Error

        try:
            element.wait_for(timeout=timeout_s * 1000)
            return True
        except Error:
            return False

    def first_code_cell(self, call: str) -> int:
        """Index of the first code cell whose source contains ``call``."""
        for i, cell in enumerate(self.cells):
            if cell["cell_type"] == "code" and call in "".join(cell["source"]):
                return i
        raise AssertionError(f"{self.notebook} has no code cell with {call!r}")

    # --- the lesson, as a student runs it -------------------------------------------------------

    def open(self) -> None:
        page = self.page
        with self.step("opening the notebook and waiting for its kernel"):
            # ?reset: a fresh workspace, not the tabs an earlier test left open on this server
            page.goto(
                f"{self.server.url}/lab/tree/notebooks/{self.notebook}"
                f"?reset&token={self.server.token}"
            )
            page.wait_for_function(
                "n => document.querySelectorAll('.jp-Notebook .jp-Cell').length === n",
                arg=len(self.cells),
                timeout=OPEN_TIMEOUT_S * 1000,
            )
            page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\|\s*Idle")).wait_for(
                timeout=OPEN_TIMEOUT_S * 1000
            )
        with self.step(
            "checking the server gives the lesson's figures (../images/, as `make lab`)"
        ):
            # JupyterLab draws only the cells on screen, so ask the server as the page would.
            figures = sorted(
                set(re.findall(r"\]\((?:\.\./)+images/([^)\s]+)\)", self.path.read_text()))
            )
            missing = [
                name
                for name in figures
                if page.request.get(
                    f"{self.server.url}/files/images/{name}?token={self.server.token}"
                ).status
                != 200
            ]
            self.check(not missing, f"JupyterLab does not serve these figures: {missing}")

    def run_all(self) -> float:
        """Run > Run All Cells and wait for the run to end; returns the seconds it took.

        The run has ended when the last cell with a prompt shows its number, or, if the kernel stopped
        early, when it stays idle with no cell running. (After an exercise cell raises, JupyterLab
        shows ``[ ]`` on the cells still queued, while the kernel goes on running them.)
        """
        page = self.page
        with self.step("choosing Run > Run All Cells"):
            page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
            page.locator('.lm-Menu li[data-command="runmenu:run-all"]').click()
        start = time.monotonic()
        state_js = """() => ({
            prompts: Array.from(
                document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')
            ).map(e => e.textContent.trim()).filter(p => p),
            idle: /\\|\\s*Idle/.test(document.querySelector('#jp-main-statusbar').textContent),
        })"""
        quiet = 0
        while True:
            state = page.evaluate(state_js)
            prompts = state["prompts"]
            busy = prompts.count("[*]:")
            last_ran = bool(prompts) and re.fullmatch(r"\[\d+\]:", prompts[-1]) is not None
            quiet = quiet + 1 if busy == 0 and state["idle"] else 0
            if busy == 0 and (last_ran or quiet >= 6):  # 3 s idle: the kernel stopped early
                return time.monotonic() - start
            if time.monotonic() - start > RUN_ALL_TIMEOUT_S:
                self.fail(
                    f"Run All Cells did not finish within {RUN_ALL_TIMEOUT_S} s "
                    f"({busy} cells still queued or running)"
                )
            time.sleep(0.5)

    def saved_cells(self) -> list[dict]:
        """Save the notebook (File > Save) until every code cell has run; returns the saved cells.

        The file written by JupyterLab is the truth about the run: an error output in a cell not
        tagged ``raises-exception`` fails at once, naming the cell and the error.
        """
        deadline = time.monotonic() + WIDGET_TIMEOUT_S
        while True:
            with self.step("saving the notebook"):
                self.page.locator("#jp-MainMenu").get_by_text("File", exact=True).click()
                self.page.locator('.lm-Menu li[data-command="docmanager:save"]').click()
                self.page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty").wait_for(
                    state="detached"
                )
            cells = json.loads(self.path.read_text())["cells"]
            for i, cell in enumerate(cells):
                expected = "raises-exception" in cell.get("metadata", {}).get("tags", [])
                for out in cell.get("outputs", []):
                    if out["output_type"] != "error":
                        continue
                    self.check(  # an exercise scaffold raises NotImplementedError, nothing else
                        expected and out["ename"] == "NotImplementedError",
                        f"cell {i} failed in the browser: {out['ename']}: {out['evalue']}\n"
                        + "".join(cell["source"])[:300],
                    )
            code = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
            never = [i for i in code if not cells[i].get("execution_count")]
            if not never:
                return cells
            if time.monotonic() > deadline:
                self.fail(f"after Run All Cells, code cells {never} never ran")
            time.sleep(1)

    def check_ran_cleanly(self, cells: list[dict]) -> None:
        """Every code cell ran, in order, and no widget shows "Error displaying widget"."""
        counts = [c["execution_count"] for c in cells if c["cell_type"] == "code"]
        self.check(counts == sorted(counts), f"cells ran out of order: {counts}")
        text = self.page.locator(".jp-Notebook").text_content() or ""
        self.check(
            "Error displaying widget" not in text,
            "a widget shows 'Error displaying widget': "
            + text[text.find("Error displaying widget") :][:200],
        )


@pytest.fixture()
def open_lab(browser, lab_server):
    """``open_lab(notebook)``: a fresh page on that lesson; its kernel is stopped afterwards."""
    contexts = []

    def open_lab(notebook: str) -> Lab:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(WIDGET_TIMEOUT_S * 1000)
        contexts.append(context)
        lab = Lab(context.new_page(), lab_server, notebook, SCREENSHOTS)
        lab.open()
        return lab

    yield open_lab
    for context in contexts:
        context.close()
    lab_server.shutdown_kernels()


def gallery_state(box) -> dict:
    """What the search box's gallery shows: its heading and the caption of every thumbnail."""
    html = box.locator(".widget-html-content")
    return {
        "heading": html.locator("> div").first.inner_text(timeout=5000).strip(),
        "captions": [" ".join(c.split()) for c in html.locator("figcaption").all_inner_texts()],
        "images": html.locator("img").count(),
    }


def test_lesson_03_search_box_renders_and_answers_typing(open_lab):
    lab = open_lab("03_image_search.ipynb")
    seconds = lab.run_all()
    lab.check_ran_cleanly(lab.saved_cells())
    print(f"lesson 03: Run All Cells took {seconds:.1f} s")

    # The lesson's first search box: its text field and its gallery are drawn by the browser.
    index = lab.first_code_cell("search_box(")
    box = lab.cell(index).locator(".widget-vbox").first
    field = box.locator(".widget-text input")
    lab.drawn(index, field, "the search box's text field")
    start_query = field.input_value()
    before = gallery_state(box)
    lab.check(
        start_query and start_query in before["heading"] and before["images"] == 8,
        f"the box should open with 8 results for {start_query!r}, shows {before}",
    )

    # A student types a new query: the gallery must follow (a query the tiny offline CLIP knows).
    query = "a red circle"
    lab.check(query != start_query, f"pick a query other than the box's own ({start_query!r})")
    with lab.step(f"typing {query!r} into the search box"):
        field.fill(query)
    lab.appears(box.locator(".widget-html b", has_text=query))  # else reported below
    after = gallery_state(box)
    lab.screenshot("typed", element=lab.cell(index))
    lab.check(
        query in after["heading"] and after["captions"] != before["captions"],
        f"typing {query!r} did not update the gallery within {WIDGET_TIMEOUT_S} s: "
        f"it still shows {after['heading']!r} with {after['captions'][:3]}...",
    )
    lab.check(
        after["images"] == 8 and all("red circle" in c for c in after["captions"]),
        f"every result for {query!r} should be a red circle (the captions are the file names): "
        f"{after['captions']}",
    )


def test_lesson_02_label_box_redraws_for_typed_labels(open_lab):
    lab = open_lab("02_zero_shot_classification.ipynb")
    seconds = lab.run_all()
    lab.check_ran_cleanly(lab.saved_cells())
    print(f"lesson 02: Run All Cells took {seconds:.1f} s")

    index = lab.first_code_cell("LabelBox(")
    cell = lab.cell(index)
    field = cell.locator(".widget-text input").first
    lab.drawn(index, field, "the label box's text field")
    lab.drawn(index, cell.locator(".widget-output img").first, "the label box's chart")
    before = label_box_state(cell)
    lab.check(
        "best label per image" in before["message"],
        f"the box should open with its answer, shows {before['message']!r}",
    )

    labels = ["green triangle", "purple cross", "yellow circle"]
    with lab.step("typing labels and pressing Enter"):
        field.fill(", ".join(labels))
        field.press("Enter")  # the box's field sends its value on Enter (continuous_update=False)
    deadline = time.monotonic() + WIDGET_TIMEOUT_S
    while True:
        after = label_box_state(cell)
        redrawn = after["message"] != before["message"] and after["chart"] not in (
            None,
            before["chart"],
        )
        if redrawn or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    lab.screenshot("typed", element=cell)
    lab.check(
        redrawn,
        f"typing labels did not redraw the box within {WIDGET_TIMEOUT_S} s: {after['message']!r}",
    )
    best = re.findall(r"([^,:]+?) \(\d\.\d\d\)", after["message"])
    lab.check(
        best and all(label.strip() in labels for label in best),
        f"the box should answer with the typed labels {labels}, shows {after['message']!r}",
    )


def label_box_state(cell) -> dict:
    """What a LabelBox shows now (no waiting): its message and its chart's image data."""
    return cell.evaluate(
        """c => ({
            message: (c.querySelector('.widget-html') || {}).textContent || '',
            chart: (c.querySelector('.widget-output img') || {src: null}).src,
        })"""
    )


def test_an_urdu_lesson_reads_right_to_left_in_jupyterlab(open_lab):
    lab = open_lab("ur/02_zero_shot_classification.ipynb")
    prose = lab.page.locator('.jp-MarkdownOutput div[lang="ur"]').first
    prose.wait_for()
    direction = prose.evaluate("d => getComputedStyle(d).direction")
    lab.check(direction == "rtl", f"the Urdu prose is laid out {direction!r}, not right to left")
