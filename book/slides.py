"""Build static reveal.js slides for every lesson (`make slides`), to open from disk or any static host,
offline: nothing is fetched from a network when they are viewed.

    python book/slides.py [03 05 ...] [--executed build/executed] [--out build/slides]

For each lesson it takes the slide types from the committed notebook (`notebooks/NN_topic.ipynb`, set
by `book/slide_metadata.py`) and the outputs from its executed copy (`--executed`, default
build/executed/; execute with the inline backend, i.e. without MPLBACKEND=Agg, or the figures are
missing), and writes `build/slides/NN_topic.slides.html` with nbconvert's SlidesExporter and the
template in book/templates/reveal_offline/.

What the slides show, and what they leave out:
- skipped cells are dropped before the export (Colab install, set-up, solutions, self-checks), so no
  solution's code is in the HTML; `notes` cells go to the speaker view (press S);
- an exercise shows its prompt and its scaffold code cell without its output (the scaffold raises
  NotImplementedError on purpose);
- the Colab and Binder badges become plain links (their pictures would come from the network);
- the figures in markdown (`../images/*.png|svg`) are embedded in the HTML;
- the code of a long cell with outputs (more than 12 lines) is folded under a "code (N lines)" toggle,
  so its figure is on screen when the slide opens; a slide still taller than the screen scrolls.

Every script and style sheet comes from build/slides/assets/, a copy of the few files needed from
book/node_modules (`npm ci --prefix book`): reveal.js (with its notes plugin and the white theme's
fonts), require.js, jQuery, MathJax 2 (TeX input, CommonHTML output, its woff fonts) and, when a lesson
saved widgets, the widgets' HTML manager (font-awesome is not copied: nbconvert 7's reveal template no
longer loads it, and the widgets' manager carries its own icon fonts). URLs are relative, so build/slides/ can be zipped and moved.
After writing, every `src=`, stylesheet `href=`, CSS `url()` and `import` in the HTML is checked to be
local; a remote one is an error.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slides_check as sc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TEMPLATES = ROOT / "book" / "templates"
NODE_MODULES = ROOT / "book" / "node_modules"

BADGE = re.compile(r"\[!\[([^\]]*)\]\([^)]*\)\]\(([^)]*)\)")
MD_IMAGE_TARGET = re.compile(r"(!\[(?:[^\[\]]|\[[^\]]*\])*\]\()([^)\s]+)")

# What is copied from book/node_modules to <out>/assets: {package: files or folders inside it}; each
# package.json comes along for its version and licence.
ASSETS = {
    "reveal.js": [
        "package.json",
        "LICENSE",
        "dist/reveal.js",
        "dist/reveal.css",
        "dist/theme/white.css",
        "dist/theme/fonts/source-sans-pro/LICENSE",
        "dist/theme/fonts/source-sans-pro/source-sans-pro.css",
        "dist/theme/fonts/source-sans-pro/*.woff",
        "plugin/notes/notes.js",
    ],
    "requirejs": ["package.json", "require.js"],  # MIT, says its package.json
    "jquery": ["package.json", "LICENSE.txt", "dist/jquery.min.js"],
    "mathjax2": [
        "package.json",
        "LICENSE",
        "MathJax.js",
        "config/TeX-AMS_CHTML-full.js",
        "config/Safe.js",
        "extensions/*.js",
        "extensions/TeX",
        "extensions/HTML-CSS",
        "jax/input/TeX",
        "jax/output/CommonHTML",
        "jax/element",
        "fonts/HTML-CSS/TeX/woff",
    ],
}
WIDGET_ASSETS = {
    "@jupyter-widgets/html-manager": [
        "package.json",  # BSD-3-Clause, says its package.json
        "dist/embed-amd.js",
        "dist/*.woff2",
        "dist/*.woff",
    ],
}
MATHJAX_CONFIG = "TeX-AMS_CHTML-full,Safe"

# A URL the browser fetches by itself (not a link the reader clicks).
_FETCHED = re.compile(
    r"""(?:\bsrc\s*=\s*["']|<link\b[^>]*\bhref\s*=\s*["']|url\(\s*["']?|\bimport\b[^;'"]*["']"""
    r"""|require\(\s*\[?\s*["'])(https?:)?//""",
    re.I,
)


def copy_assets(out: Path, node_modules: Path, widgets: bool) -> int:
    """Copy the needed files into out/assets; return their total size in bytes."""
    if not node_modules.is_dir():
        raise SystemExit(
            f"{node_modules} is missing: install the slides' JavaScript with `npm ci --prefix book`"
        )
    assets = out / "assets"
    if assets.exists():
        shutil.rmtree(assets)
    wanted = dict(ASSETS)
    if widgets:
        wanted.update(WIDGET_ASSETS)
    total = 0
    for package, patterns in wanted.items():
        base = node_modules / package
        for pattern in patterns:
            matches = sorted(base.glob(pattern))
            if not matches:
                raise SystemExit(
                    f"{base / pattern} is missing: reinstall with `npm ci --prefix book` "
                    "(book/package-lock.json pins the versions these paths come from)"
                )
            for src in matches:
                files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
                for f in files:
                    dest = assets / package.split("/")[-1] / f.relative_to(base)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dest)
                    total += f.stat().st_size
    return total


def exporter(widgets: bool):
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    a = "assets"
    config = Config()
    config.SlidesExporter.reveal_url_prefix = f"{a}/reveal.js"
    config.SlidesExporter.reveal_theme = "white"
    config.SlidesExporter.reveal_scroll = True  # a slide taller than the screen scrolls
    config.SlidesExporter.reveal_number = "c/t"
    config.SlidesExporter.require_js_url = f"{a}/requirejs/require.js"
    config.SlidesExporter.jquery_url = f"{a}/jquery/dist/jquery.min.js"
    config.SlidesExporter.mathjax_url = f"{a}/mathjax2/MathJax.js?config={MATHJAX_CONFIG}"
    config.SlidesExporter.font_awesome_url = ""  # nbconvert 7's reveal template does not use it
    config.SlidesExporter.widget_renderer_url = (
        f"{a}/html-manager/dist/embed-amd.js" if widgets else ""
    )
    config.SlidesExporter.jupyter_widgets_base_url = f"{a}/"  # unused when the URL above is set
    config.SlidesExporter.embed_images = True
    config.SlidesExporter.exclude_input_prompt = True
    config.SlidesExporter.exclude_output_prompt = True
    config.SlidesExporter.extra_template_basedirs = [str(TEMPLATES)]
    config.SlidesExporter.template_name = "reveal_offline"
    return SlidesExporter(config=config)


def slide_notebook(lesson: Path, executed: Path) -> nbformat.NotebookNode:
    """The lesson with its executed outputs, ready for the exporter: skipped cells dropped, exercise
    scaffolds without outputs, badges as links."""
    nb = nbformat.read(lesson, as_version=4)
    run = nbformat.read(executed, as_version=4)
    try:
        cells = sc.merge_outputs(nb.cells, run.cells, lesson.name)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    problems = sc.metadata_problems(cells)
    if problems:
        raise SystemExit(f"{lesson.name}: " + "; ".join(problems))
    kept = []
    for cell in cells:
        cell = nbformat.from_dict(copy.deepcopy(dict(cell)))
        if sc.slide_type(cell) == "skip":
            continue
        if cell.cell_type == "code" and "exercise" in sc.tags(cell):
            cell.outputs = []
        if cell.cell_type == "markdown":
            cell.source = MD_IMAGE_TARGET.sub(_from_root, BADGE.sub(r"[\1](\2)", cell.source))
        kept.append(cell)
    nb.cells = kept
    if "widgets" in run.metadata:
        nb.metadata["widgets"] = run.metadata["widgets"]
    nb.metadata["title"] = nb.cells[0].source.splitlines()[0].lstrip("# ").strip()
    return nb


def _from_root(match: re.Match) -> str:
    """A markdown image's target relative to the repository root, where nbconvert may embed it from
    (it embeds nothing outside the folder it is given, and the lessons' figures are in ../images)."""
    target = match.group(2)
    if re.match(r"[a-z]+:", target):
        return match.group(0)
    path = (NOTEBOOKS / target).resolve()
    if not path.is_file() or not path.is_relative_to(ROOT):
        raise SystemExit(
            f"a lesson's markdown shows {target}, which is not a file in the repository"
        )
    return match.group(1) + path.relative_to(ROOT).as_posix()


def remote_fetches(html: str) -> list[str]:
    """The remote URLs a browser would fetch on its own while showing `html` (not clicked links)."""
    found = []
    for match in _FETCHED.finditer(html):
        found.append(html[match.start() : match.end() + 60].replace("\n", " "))
    return found


def build(names: list[str], executed_dir: Path, out: Path, node_modules: Path) -> list[Path]:
    lessons = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if names:
        unknown = [n for n in names if not any(p.name.startswith(n) for p in lessons)]
        if unknown:
            known = ", ".join(p.stem for p in lessons)
            raise SystemExit(f"no lesson starts with {unknown}; the lessons are: {known}")
        lessons = [p for p in lessons if any(p.name.startswith(n) for n in names)]
    missing = [str(executed_dir / p.name) for p in lessons if not (executed_dir / p.name).is_file()]
    if missing:
        raise SystemExit(
            f"no executed copy: {', '.join(missing)}. Execute the lessons first (make test or "
            "make site write build/executed/), or pass --executed DIR"
        )
    notebooks = {p: slide_notebook(p, executed_dir / p.name) for p in lessons}
    widgets = any("widgets" in nb.metadata for nb in notebooks.values())
    out.mkdir(parents=True, exist_ok=True)
    size = copy_assets(out, node_modules, widgets)
    print(f"assets: {size / 1e6:.1f} MB in {out / 'assets'}")
    written = []
    for lesson, nb in notebooks.items():
        html, _ = exporter("widgets" in nb.metadata).from_notebook_node(
            nb, resources={"metadata": {"path": str(ROOT), "name": lesson.stem}}
        )
        remote = remote_fetches(html)
        if remote:
            raise SystemExit(
                f"{lesson.stem}: the slides would fetch from the network: {remote[:3]}"
            )
        target = out / f"{lesson.stem}.slides.html"
        target.write_text(html, encoding="utf-8")
        slides, total = sc.count_slides(nb.cells)
        print(
            f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: "
            f"{slides} slides, {total} with subslides, {len(html) / 1e6:.1f} MB"
        )
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", help="lesson prefixes, e.g. 03 05 (default: all)")
    parser.add_argument("--executed", type=Path, default=ROOT / "build" / "executed")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "slides")
    parser.add_argument("--node-modules", type=Path, default=NODE_MODULES)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    build(args.lessons, args.executed, args.out, args.node_modules)
    print(f"slides built in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
