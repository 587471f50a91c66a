"""What a lesson's slides are, and what is on each: shared by `slide_metadata.py` (which assigns the
slide types), `slides.py` (which builds the reveal.js HTML) and the tests (`tests/test_slides.py` on the
committed notebooks, `tests/built/test_slides_executed.py` on the executed ones).

A *slide* here is what RISE and reveal.js show at once: a cell whose slide type is ``slide`` or
``subslide``, plus the ``-`` and ``fragment`` cells after it, up to the next ``slide``/``subslide``.
``skip`` cells are not shown and ``notes`` cells go to the speaker view, so neither counts. A cell with
no slide type is ``-`` (what RISE and nbconvert assume).

A *figure* is an image output of a code cell (``image/png``, ``image/svg+xml`` or ``image/jpeg``; one
per output however many of those formats it carries), an HTML output holding ``<img``, a widget (one
figure per widget output, except a progress bar, which is a status line), or an image in a markdown
cell (``![..](..)`` or ``<img``), except badges (an image that is itself a link, ``[![..](..)](..)``).

Import it with ``sys.path.insert(0, str(ROOT / "book"))``; `book/` is not a package.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SLIDE_TYPES = ("slide", "subslide", "fragment", "-", "skip", "notes")
STARTS = ("slide", "subslide")
HIDDEN = ("skip", "notes")
IMAGE_MIMES = ("image/png", "image/svg+xml", "image/jpeg")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
PROGRESS_MODELS = {"FloatProgressModel", "IntProgressModel"}

# ![alt](target) where alt may hold brackets and newlines; a badge is such an image inside a link.
_MD_IMAGE = re.compile(r"!\[(?:[^\[\]]|\[[^\]]*\])*\]\([^)]*\)", re.S)
_BADGE = re.compile(r"\[\s*!\[(?:[^\[\]]|\[[^\]]*\])*\]\([^)]*\)\s*\]\([^)]*\)", re.S)
_HTML_IMG = re.compile(r"<img\b", re.I)


def source(cell: Mapping) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def tags(cell: Mapping) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def slide_type(cell: Mapping) -> str | None:
    """The cell's slide type as stored, or None when it has none."""
    return cell.get("metadata", {}).get("slideshow", {}).get("slide_type")


def heading_level(cell: Mapping) -> int:
    """1 for a markdown cell that starts with '# ', 2 for '## ', 3 for '### '; 0 otherwise."""
    if cell.get("cell_type") != "markdown":
        return 0
    match = re.match(r"(#{1,6})\s", source(cell).lstrip("\n"))
    return len(match.group(1)) if match else 0


def markdown_figures(text: str) -> int:
    """Images in markdown text, badges (linked images) left out."""
    without_badges = _BADGE.sub("", text)
    return len(_MD_IMAGE.findall(without_badges)) + len(_HTML_IMG.findall(without_badges))


def _widget_models(widget_state: Mapping | None) -> dict:
    if not widget_state:
        return {}
    return widget_state.get(WIDGET_STATE_MIME, {}).get("state", {})


def _is_progress_bar(model_id: str, models: Mapping) -> bool:
    """A tqdm bar: a progress model, or a box whose children include one."""
    model = models.get(model_id)
    if model is None:
        return False
    if model.get("model_name") in PROGRESS_MODELS:
        return True
    children = model.get("state", {}).get("children", [])
    ids = [c.removeprefix("IPY_MODEL_") for c in children if isinstance(c, str)]
    return any(models.get(i, {}).get("model_name") in PROGRESS_MODELS for i in ids)


def output_figures(cell: Mapping, widget_state: Mapping | None = None) -> int:
    """Figures among a code cell's outputs. `widget_state` is the notebook's metadata["widgets"]
    (without it every widget counts, progress bars included)."""
    models = _widget_models(widget_state)
    count = 0
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if any(m in data for m in IMAGE_MIMES):
            count += 1
        elif WIDGET_MIME in data:
            model_id = data[WIDGET_MIME].get("model_id", "")
            count += 0 if _is_progress_bar(model_id, models) else 1
        elif "text/html" in data and _HTML_IMG.search(source({"source": data["text/html"]})):
            count += 1
    return count


def cell_figures(cell: Mapping, widget_state: Mapping | None = None) -> int:
    if cell.get("cell_type") == "markdown":
        return markdown_figures(source(cell))
    if cell.get("cell_type") == "code":
        return output_figures(cell, widget_state)
    return 0


@dataclass
class Slide:
    """One slide: the index of the cell that starts it, its kind, and the indices of its visible cells."""

    start: int
    kind: str
    cells: list[int] = field(default_factory=list)


def group_slides(cells: list[Mapping]) -> list[Slide]:
    """The slides, in order. Visible cells before the first slide/subslide open a slide of their own,
    as nbconvert and RISE do."""
    slides: list[Slide] = []
    for i, cell in enumerate(cells):
        kind = slide_type(cell) or "-"
        if kind in HIDDEN:
            continue
        if kind in STARTS or not slides:
            slides.append(Slide(i, kind if kind in STARTS else "slide", []))
        slides[-1].cells.append(i)
    return slides


def figure_problems(cells: list[Mapping], widget_state: Mapping | None = None) -> list[str]:
    """One message per slide that carries more than one figure."""
    problems = []
    for slide in group_slides(cells):
        per_cell = {i: cell_figures(cells[i], widget_state) for i in slide.cells}
        total = sum(per_cell.values())
        if total > 1:
            where = ", ".join(f"cell {i}: {n}" for i, n in per_cell.items() if n)
            problems.append(
                f"the {slide.kind} starting at cell {slide.start} carries {total} figures ({where})"
            )
    return problems


def metadata_problems(cells: list[Mapping]) -> list[str]:
    """What RISE needs to present a lesson from its first cell: a valid slide type on every cell, the
    title a slide, the install and set-up cells (1 and 2) and every solution skipped, and every `##`
    heading starting a slide or subslide."""
    problems = []
    for i, cell in enumerate(cells):
        kind = slide_type(cell)
        if kind not in SLIDE_TYPES:
            problems.append(
                f"cell {i}: slide_type {kind!r} is not one of {', '.join(SLIDE_TYPES)}"
                " (run book/slide_metadata.py)"
            )
            continue
        if "solution" in tags(cell) and kind != "skip":
            problems.append(f"cell {i}: a solution must be skipped, not {kind!r}")
        if heading_level(cell) == 2 and kind not in STARTS:
            problems.append(
                f"cell {i}: a '## ' heading must start a slide or subslide, not {kind!r}"
            )
    if cells and slide_type(cells[0]) != "slide":
        problems.append(f"cell 0 (the title) must be a 'slide', not {slide_type(cells[0])!r}")
    for i in (1, 2):
        if len(cells) > i and slide_type(cells[i]) != "skip":
            problems.append(
                f"cell {i} (install/set-up) must be 'skip', not {slide_type(cells[i])!r}"
            )
    return problems


def merge_outputs(committed: list[Mapping], executed: list[Mapping], name: str = "") -> list[dict]:
    """The committed cells (their slide metadata) with the executed copy's outputs. The two must hold
    the same cells with the same sources, or the executed copy is stale."""
    if len(committed) != len(executed):
        raise ValueError(
            f"{name}: the executed copy has {len(executed)} cells, the lesson {len(committed)}: "
            "execute the lesson again"
        )
    merged = []
    for i, (a, b) in enumerate(zip(committed, executed)):
        if a.get("cell_type") != b.get("cell_type") or source(a).strip() != source(b).strip():
            raise ValueError(
                f"{name}: cell {i} differs between the lesson and its executed copy: "
                "execute the lesson again"
            )
        cell = dict(a)
        if a.get("cell_type") == "code":
            cell["outputs"] = b.get("outputs", [])
        merged.append(cell)
    return merged


def count_slides(cells: Iterable[Mapping]) -> tuple[int, int]:
    """(horizontal slides, all slides including subslides)."""
    slides = group_slides(list(cells))
    return sum(s.kind == "slide" for s in slides), len(slides)
