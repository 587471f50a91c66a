"""Give every cell of every lesson its RISE / reveal.js slide type, so that a lesson can be presented with
RISE (`jupyterlab-rise`) from its first cell without editing, one idea per slide.

Instructors: run it again after adding, removing or reordering cells (it is idempotent: a second run
changes nothing). It reads the figures and the size of what each code cell shows from an executed copy
of the lesson, so execute first (`make execute` writes build/executed/; the figures need matplotlib's
inline backend, so never with MPLBACKEND=Agg):

    .venv/bin/python book/slide_metadata.py                  # every lesson, or name some: 03 05
    .venv/bin/python book/slide_metadata.py --executed DIR   # executed copies elsewhere
    .venv/bin/python book/slide_metadata.py --check          # only report; exit 1 on a difference

It writes the slide types into `notebooks/NN_topic.ipynb` (cell metadata only; sources untouched) and
runs `jupytext --sync` so the MyST source `NN_topic.md` follows (commit both). It refuses a lesson whose
.md and .ipynb disagree (run `make sync` first) or whose executed copy is stale (execute it again).
A fresh execution prints slightly different text (timings), so a re-run may move a borderline cell.

The rules, in order (the first that applies wins):

1. The per-lesson OVERRIDES table below (a cell is named by the start of its source, so it survives
   added cells; an entry that matches no cell, or more than one, is an error).
2. Cell 0 (title and badges): ``slide``. Cells 1 and 2 (Colab install, `lessonlib.setup()`): ``skip``.
3. Hidden: solutions (tag ``solution``, code or markdown) and exercise self-checks (tag ``check``);
   a "Self-check..." markdown cell in the body and the code cell right after it (unless that code
   makes a figure); a code cell that only asserts and shows nothing; long helper code that shows
   nothing (no output, more than HELPER_LINES lines, e.g. the exercises' `short_run`): ``skip``.
4. Slides: ``#``/``##`` headings (sections, Summary, Exercises, References) and exercise prompts
   (``### Exercise N``, each its own slide): ``slide``. Other ``###`` headings, **Think!** questions
   and paragraphs that open with a bold lead (``**Wording changes the answer.**``): ``subslide``.
   An exercise's scaffold code (tag ``exercise``): ``-``, on its prompt's slide.
5. Everything else flows onto the current slide: code ``-``; markdown ``-``, or ``fragment`` right
   after a code cell with outputs (the reading of a result appears after the result). A new
   ``subslide`` starts (a) before a second figure, so that no slide carries more than one figure, and
   (b) when the cell would not fit: the estimated height of the slide would pass SLIDE_HEIGHT pixels
   (reveal.js 960x700 with nbconvert's 20 px text; the height model was fitted to what chromium
   measured). Either way the subslide starts at the cell's markdown lead-in when that is short
   (LEAD_IN_MAX), so that a code cell and the figure it makes stay on one slide with at most a short
   lead-in; else at the cell itself. Code taller than any slide stays after a short lead-in rather than
   leave a heading alone; the static slides fold its code and scroll, RISE needs `scroll` for it.
   A figure counts as in book/slides_check.py (images, widgets other than progress bars).

What exercises show: the prompt (its own slide) and the scaffold code cell (tag ``exercise``); the
solution and the check are skipped. The static slides drop the scaffold's output (the deliberate
NotImplementedError); RISE shows whatever the kernel printed.

Presenting with RISE: open the lesson in JupyterLab, Run > Run All Cells (the skipped set-up cells must
run; they are only hidden), select the first cell, then Alt-R (View > Render as slides). Space or the
arrows step through slides, subslides and fragments; T opens the speaker notes.
"""

from __future__ import annotations

import argparse
import ast
import base64
import io
import math
import re
import subprocess
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slides_check as sc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_EXECUTED = ROOT / "build" / "executed"

SLIDE_HEIGHT = 700  # reveal.js height nbconvert and this course use
LEAD_IN_MAX = 250  # px: the most that may stay above a code cell as its lead-in
HELPER_LINES = 25
TEXT_WIDTH = 840  # px for cell content (960 minus the prompt column)

# Per-lesson exceptions to the rules: {lesson stem: {start of the cell's source: slide type}}.
OVERRIDES: dict[str, dict[str, str]] = {
    # It introduces a helper the slides skip (rule 3): a word for the presenter, not a slide.
    "01_clip_concepts": {"The exercises at the end retrain variants of this run": "notes"},
}


# ---------------------------------------------------------------- heights (a rough model, in px)


def _text_lines(text: str, chars_per_line: int) -> int:
    return sum(max(1, math.ceil(len(line) / chars_per_line)) for line in text.splitlines() or [""])


def _image_size(data: dict, metadata: dict) -> tuple[int, int]:
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            meta = metadata.get(mime, {}) if isinstance(metadata, dict) else {}
            if "width" in meta and "height" in meta:
                return int(meta["width"]), int(meta["height"])
            from PIL import Image

            raw = base64.b64decode(sc.source({"source": data[mime]}))
            with Image.open(io.BytesIO(raw)) as img:
                return img.size
    svg = sc.source({"source": data.get("image/svg+xml", "")})
    w = re.search(r'\bwidth="([\d.]+)(pt|px)?"', svg)
    h = re.search(r'\bheight="([\d.]+)(pt|px)?"', svg)
    if w and h:
        scale = 4 / 3 if w.group(2) == "pt" else 1
        return int(float(w.group(1)) * scale), int(float(h.group(1)) * scale)
    return TEXT_WIDTH, 400


def _scaled_height(width: int, height: int) -> int:
    return int(height * min(1.0, TEXT_WIDTH / max(width, 1)))


def _markdown_image_height(text: str, base: Path) -> int:
    total = 0
    for target in re.findall(r"!\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)", sc._BADGE.sub("", text)):
        path = (base / target).resolve()
        width, height = TEXT_WIDTH, 400
        if path.suffix == ".svg" and path.is_file():
            width, height = _image_size({"image/svg+xml": path.read_text()}, {})
        elif path.is_file():
            from PIL import Image

            with Image.open(path) as img:
                width, height = img.size
        total += _scaled_height(width, height) + 20
    return total


def _blocks(text: str) -> list[list[str]]:
    """Markdown split into blocks (blank-line separated), each into its items: a heading, a list item,
    a table row or a paragraph, with the source's hard-wrapped lines joined."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        items: list[str] = []
        for line in block.splitlines():
            stripped = line.strip()
            if not items or re.match(r"(#{1,6}\s|[-*+]\s|\d+\.\s|\$\$|>|\|)", stripped):
                items.append(stripped)
            else:
                items[-1] += " " + stripped
        out.append(items)
    return out


def markdown_height(text: str, base: Path = NOTEBOOKS) -> int:
    """Fitted to the heights chromium measured for lessons 00-02 (mean error 14 px a cell)."""
    without_images = sc._MD_IMAGE.sub("", sc._BADGE.sub("Badge", text))
    height = 10
    for items in _blocks(without_images):
        height += 18
        for item in items:
            if re.match(r"#\s", item):
                height += 80
            elif re.match(r"##\s", item):
                height += 50
            elif re.match(r"#{3,6}\s", item):
                height += 35
            elif item.startswith("|"):
                height += 0 if re.match(r"\|[\s:|-]+\|?$", item) else 36
            else:
                visible = re.sub(r"\]\([^)]*\)", "]", item)  # link targets are not shown
                height += 28 * max(1, math.ceil(len(visible) / 90))
    return height + _markdown_image_height(text, base)


def output_height(out: dict, widget_state: dict | None) -> int:
    if out.get("output_type") == "stream":
        return 26 * _text_lines(out.get("text", "").rstrip("\n"), 73) + 10
    if out.get("output_type") == "error":
        return 120
    data = out.get("data", {})
    if any(m in data for m in sc.IMAGE_MIMES):
        return _scaled_height(*_image_size(data, out.get("metadata", {}))) + 10
    if sc.WIDGET_MIME in data:
        one = {"outputs": [out]}
        return 300 if sc.output_figures(one, widget_state) else 40
    if "text/markdown" in data:
        return markdown_height(sc.source({"source": data["text/markdown"]}))
    if "text/html" in data:
        text = re.sub(r"<[^>]+>", "", sc.source({"source": data["text/html"]}))
        return 28 * _text_lines(text, 90)
    if "text/plain" in data:
        return 26 * _text_lines(sc.source({"source": data["text/plain"]}), 73) + 10
    return 0


def cell_height(cell: dict, widget_state: dict | None) -> int:
    text = sc.source(cell)
    if cell["cell_type"] == "markdown":
        return markdown_height(text)
    code = 26 * (text.count("\n") + 1) + 24
    return code + sum(output_height(o, widget_state) for o in cell.get("outputs", []))


# ---------------------------------------------------------------- the rules


def _is_self_check_prose(cell: dict) -> bool:
    return cell["cell_type"] == "markdown" and re.match(r"\**Self-check", sc.source(cell).lstrip())


def _is_helper(cell: dict) -> bool:
    text = sc.source(cell)
    return (
        cell["cell_type"] == "code"
        and not cell.get("outputs")
        and text.count("\n") + 1 > HELPER_LINES
        and not sc.tags(cell)
    )


def _is_bare_check(cell: dict) -> bool:
    """Code that only asserts and shows nothing: a self-check without its prose."""
    if cell["cell_type"] != "code" or cell.get("outputs"):
        return False
    try:
        tree = ast.parse(sc.source(cell))
    except SyntaxError:
        return False
    return bool(tree.body) and all(isinstance(node, ast.Assert) for node in tree.body)


def fixed_type(index: int, cell: dict) -> str | None:
    """Rules 2-4: the slide type a cell gets whatever surrounds it, or None."""
    if index == 0:
        return "slide"
    if index in (1, 2):
        return "skip"
    tags = sc.tags(cell)
    if "solution" in tags or "check" in tags:
        return "skip"
    if _is_helper(cell) or _is_bare_check(cell):
        return "skip"
    level = sc.heading_level(cell)
    text = sc.source(cell).lstrip()
    if level in (1, 2) or re.match(r"###\s+Exercise\b", text):
        return "slide"
    if level >= 3 or re.match(r"\*\*[^*\n]{2,60}\*\*", text):
        return "subslide"  # a ### heading, a **Think!** question, a **Bold lead.** paragraph
    if "exercise" in tags:
        return "-"  # the scaffold stays with its prompt
    return None


def _override_table(stem: str, cells: list[dict]) -> dict[int, str]:
    table = OVERRIDES.get(stem, {})
    found: dict[int, str] = {}
    for prefix, kind in table.items():
        if kind not in sc.SLIDE_TYPES:
            raise ValueError(
                f"OVERRIDES[{stem!r}][{prefix!r}] = {kind!r}: use one of {sc.SLIDE_TYPES}"
            )
        hits = [i for i, c in enumerate(cells) if sc.source(c).lstrip().startswith(prefix)]
        if len(hits) != 1:
            raise ValueError(
                f"OVERRIDES[{stem!r}][{prefix!r}] matches {len(hits)} cells ({hits}); "
                "it must name exactly one: lengthen or update the prefix"
            )
        found[hits[0]] = kind
    return found


def _flow(i, cells, types, previous, start, height, figures, h, f, widget_state) -> str:
    """Rule 5 for cell i, which follows `previous` on the slide that starts at `start` (so far
    `height` px and `figures` figures). May turn `previous` (a short lead-in) into the subslide start."""
    cell = cells[i]
    fits = height + h <= SLIDE_HEIGHT
    if figures + f <= 1 and (fits or (cell["cell_type"] == "code" and height <= LEAD_IN_MAX)):
        # It fits; or it is code that overflows any slide, after no more than a short lead-in.
        after_result = cells[previous]["cell_type"] == "code" and cells[previous].get("outputs")
        return "fragment" if cell["cell_type"] == "markdown" and after_result else "-"
    lead_ok = (
        previous != start
        and cells[previous]["cell_type"] == "markdown"
        and cell["cell_type"] == "code"
        and sc.cell_figures(cells[previous], widget_state) == 0
        and cell_height(cells[previous], widget_state) <= LEAD_IN_MAX
    )
    if lead_ok:
        types[previous] = "subslide"
        return "-"
    return "subslide"


def assign(cells: list[dict], widget_state: dict | None = None, stem: str = "") -> list[str]:
    """The slide type of every cell. `cells` carry their executed outputs (figures, heights)."""
    overrides = _override_table(stem, cells)
    types: list[str | None] = [None] * len(cells)
    for i, cell in enumerate(cells):
        types[i] = overrides.get(i) or fixed_type(i, cell)
    # Body self-checks: the prose and the code right after it (unless that code makes a figure).
    for i, cell in enumerate(cells):
        if i in overrides or not _is_self_check_prose(cell):
            continue
        types[i] = "skip"
        nxt = i + 1
        if (
            nxt < len(cells)
            and nxt not in overrides
            and cells[nxt]["cell_type"] == "code"
            and types[nxt] is None
            and sc.cell_figures(cells[nxt], widget_state) == 0
        ):
            types[nxt] = "skip"

    height = figures = 0
    start = 0
    previous: int | None = None  # the previous visible cell
    for i, cell in enumerate(cells):
        kind = types[i]
        if kind in sc.HIDDEN:
            continue
        h = cell_height(cell, widget_state)
        f = sc.cell_figures(cell, widget_state)
        if kind in sc.STARTS:
            start, height, figures, previous = i, h, f, i
            continue
        if kind is None:
            kind = _flow(i, cells, types, previous, start, height, figures, h, f, widget_state)
            types[i] = kind
            if kind == "subslide":
                start, height, figures = i, 0, 0
            elif types[previous] == "subslide" and previous != start:  # the lead-in moved
                start, height, figures = previous, cell_height(cells[previous], widget_state), 0
        height += h
        figures += f
        previous = i
    return [t or "-" for t in types]


# ---------------------------------------------------------------- files


def lesson_paths(selection: list[str]) -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return paths
    chosen = [p for p in paths if any(p.name.startswith(s) for s in selection)]
    unknown = [s for s in selection if not any(p.name.startswith(s) for p in paths)]
    if unknown:
        names = ", ".join(p.stem for p in paths)
        raise SystemExit(f"no lesson starts with {unknown}; the lessons are: {names}")
    return chosen


def _check_pair(path: Path) -> None:
    import jupytext

    md = path.with_suffix(".md")
    a = [(c.cell_type, c.source.strip()) for c in jupytext.read(md).cells]
    b = [(c.cell_type, c.source.strip()) for c in nbformat.read(path, as_version=4).cells]
    if a != b:
        raise SystemExit(f"{md.name} and {path.name} disagree: run `make sync` first")


def load_executed(path: Path, executed_dir: Path) -> nbformat.NotebookNode:
    executed = executed_dir / path.name
    if not executed.is_file():
        raise SystemExit(
            f"{executed} is missing: execute the lesson first (see this script's docstring), "
            "or point --executed at a folder of executed lessons"
        )
    return nbformat.read(executed, as_version=4)


def lesson_types(path: Path, executed_dir: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    run = load_executed(path, executed_dir)
    try:
        cells = sc.merge_outputs(nb.cells, run.cells, path.name)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    return assign(cells, run.metadata.get("widgets"), path.stem)


def apply(path: Path, types: list[str]) -> int:
    """Write the slide types into the .ipynb (and, through jupytext, the .md); the number changed."""
    nb = nbformat.read(path, as_version=4)
    changed = 0
    for cell, kind in zip(nb.cells, types):
        if sc.slide_type(cell) != kind:
            cell.metadata.setdefault("slideshow", {})["slide_type"] = kind
            changed += 1
    if changed:
        nbformat.write(nb, path)
        subprocess.run(
            [str(Path(sys.executable).parent / "jupytext"), "--sync", str(path)],
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", help="lesson prefixes, e.g. 03 05 (default: all)")
    parser.add_argument("--executed", type=Path, default=DEFAULT_EXECUTED)
    parser.add_argument("--check", action="store_true", help="report differences, write nothing")
    args = parser.parse_args(argv)
    status = 0
    for path in lesson_paths(args.lessons):
        _check_pair(path)
        types = lesson_types(path, args.executed)
        nb = nbformat.read(path, as_version=4)
        differ = [i for i, (c, t) in enumerate(zip(nb.cells, types)) if sc.slide_type(c) != t]
        slides, total = sc.count_slides(
            {"metadata": {"slideshow": {"slide_type": t}}} for t in types
        )
        if args.check:
            if differ:
                status = 1
            print(
                f"{path.stem}: {len(differ)} cells differ {differ[:12]}; {slides} slides, {total} in all"
            )
            continue
        changed = apply(path, types)
        print(f"{path.stem}: {changed} cells changed; {slides} slides, {total} with subslides")
    return status


if __name__ == "__main__":
    sys.exit(main())
