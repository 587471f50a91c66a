"""Build the course website (`make site`): the executed lessons as a static Jupyter Book 1 site, offline.

    python book/make_site.py [--executed build/executed] [--out build/site]

The lessons are not executed here: `make site` first runs them under nbval (as `make test` does), which
writes each executed lesson to build/executed/. This script then

1. checks every lesson listed in the README has an executed copy newer than its sources;
2. stages a Jupyter Book in build/book/: book/_config.yml, book/index.md, docs/*.md, the executed
   lessons in README order (the table of contents is made from the README's lesson table), images/, and
   the local copies of MathJax 3 and the widgets' HTML manager (with its fonts) from book/node_modules
   (`npm ci --prefix book`, run by `make site`);
3. marks cells for the site, on the staged copies only: solutions folded ("hide-cell" for code, a
   dropdown for a written answer), the exercise
   scaffolds' NotImplementedError folded ("hide-output"), the Colab install cell removed, the badges
   turned into plain links (their pictures would come from the network), links to files outside the
   book pointed at the repository;
4. runs `jupyter-book build` (Sphinx) into build/site/_build/html and prints the time it took.

Publish build/site/_build/html on GitHub Pages with `ghp-import -n -p -f build/site/_build/html` (see the
README).
"""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
REPO_URL = "https://github.com/multimodal-networks/course/blob/main/"
BADGE = re.compile(r"\[!\[([^\]]*)\]\([^)]*\)\]\(([^)]*)\)")
LINK = re.compile(r"(?<!!)\[([^\]]*)\]\((?!https?:|mailto:|#)([^)\s]+)\)")
MATHJAX_FILES = ["tex-chtml.js", "input/tex", "output/chtml", "ui", "a11y", "adaptors", "sre"]


def lesson_order(readme: Path = ROOT / "README.md") -> list[str]:
    """The lessons' names (``"00_welcome"``, ...) in the order of the README's lesson table."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Lessons", 1)[-1].split("\n## ", 1)[0]
    names = []
    for line in section.splitlines():
        match = re.match(r"\|\s*\[[^\]]*\]\(notebooks/(\d\d_[a-z0-9_]+)\.ipynb\)", line)
        if match:
            names.append(match.group(1))
    if not names:
        raise SystemExit(f"no lesson table found under '## Lessons' in {readme}")
    return names


def check_executed(
    executed: Path, names: list[str], notebooks: Path = ROOT / "notebooks"
) -> list[Path]:
    """The executed lessons, refusing a missing one or one older than its .md or .ipynb source."""
    paths, problems = [], []
    for name in names:
        path = executed / f"{name}.ipynb"
        sources = [notebooks / f"{name}.md", notebooks / f"{name}.ipynb"]
        newest = max(p.stat().st_mtime for p in sources if p.exists())
        if not path.exists():
            problems.append(f"{path} is missing")
        elif path.stat().st_mtime < newest:
            problems.append(f"{path} is older than {notebooks.name}/{name}.md or .ipynb")
        paths.append(path)
    if problems:
        raise SystemExit(
            "cannot build the site from stale or missing executed lessons: "
            + "; ".join(problems)
            + ". Run `make site` (it executes the lessons first) or `make test`."
        )
    return paths


def run_times(paths: list[Path]) -> dict[str, float]:
    """Seconds each executed lesson's cells took (kernel busy to idle, as recorded while it ran)."""
    from datetime import datetime

    times = {}
    for path in paths:
        total = 0.0
        for cell in nbformat.read(path, as_version=4).cells:
            timing = cell.get("metadata", {}).get("execution", {})
            if "iopub.status.busy" in timing and "iopub.status.idle" in timing:
                busy, idle = (
                    datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                    for k in ("iopub.status.busy", "iopub.status.idle")
                )
                total += (idle - busy).total_seconds()
        times[path.stem] = total
    return times


def _outside_link(match: re.Match, folder: str) -> str:
    """A link of a page that lives in ``folder`` of the repository: kept where the book has its target
    at the same place (a lesson, an Urdu twin, a picture, a sibling page in docs/), else pointed at the
    file in the repository."""
    text, target = match.group(1), match.group(2)
    path, _, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(folder, path))
    in_book = (
        resolved.startswith("images/")
        or re.fullmatch(r"notebooks/(ur/)?\d\d_[a-z0-9_]+\.(ipynb|md)", resolved)
        or (folder == "docs" and resolved.startswith("docs/"))
    )
    if in_book or resolved.startswith(".."):
        return match.group(0)
    return f"[{text}]({REPO_URL}{resolved}{'#' + anchor if anchor else ''})"


def site_notebook(nb: nbformat.NotebookNode, folder: str = "notebooks") -> nbformat.NotebookNode:
    """A copy of an executed lesson marked up for the site (the committed lessons are not changed)."""
    from lessonlib._meta import COLAB_INSTALL_CELL

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for index, cell in enumerate(nb.cells):
        tags = cell.metadata.setdefault("tags", [])
        if cell.cell_type == "markdown":
            source = BADGE.sub(r"[\1](\2)", cell.source) if index == 0 else cell.source
            cell.source = LINK.sub(lambda m: _outside_link(m, folder), source)
            if "solution" in tags:  # a written answer: folded as a dropdown the reader opens
                cell.source = f"::::{{admonition}} Answer\n:class: dropdown\n\n{cell.source}\n::::"
        elif cell.source.strip() == COLAB_INSTALL_CELL.strip():
            tags.append("remove-cell")
        elif "solution" in tags:
            tags.append("hide-cell")
        elif "exercise" in tags and "raises-exception" in tags:
            tags.append("hide-output")
    return nb


def _copy(src: Path, dst: Path) -> None:
    if not src.exists():
        raise SystemExit(f"{src} is missing: run `npm ci --prefix book` (make site does) first")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def stage_static(static: Path) -> None:
    """The local copies the pages load: MathJax 3 (CHTML output) and the widgets' renderer."""
    modules = BOOK / "node_modules"
    for part in MATHJAX_FILES:
        _copy(modules / "mathjax" / "es5" / part, static / "mathjax" / part)
    fonts = modules / "@fontsource" / "noto-nastaliq-urdu" / "files"
    for weight in (400, 700):
        name = f"noto-nastaliq-urdu-arabic-{weight}-normal.woff2"
        _copy(fonts / name, static / "fonts" / name)
    _copy(BOOK / "static" / "urdu.css", static / "urdu.css")
    manager = modules / "@jupyter-widgets" / "html-manager" / "dist"
    _copy(manager / "embed.js", static / "widgets" / "embed.js")
    for path in manager.iterdir():  # the fonts embed.js loads from beside itself
        if path.suffix in {".woff", ".woff2", ".ttf", ".eot", ".svg"}:
            _copy(path, static / "widgets" / path.name)


def stage(executed: Path, staging: Path) -> list[str]:
    """Write the book's sources to ``staging``; returns the table of contents' entries."""
    names = lesson_order()
    paths = check_executed(executed, names)
    urdu = [n for n in names if (ROOT / "notebooks" / "ur" / f"{n}.ipynb").exists()]
    urdu_paths = check_executed(executed / "ur", urdu, ROOT / "notebooks" / "ur")
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "notebooks").mkdir(parents=True)
    for name in ["_config.yml", "index.md"]:
        shutil.copy2(BOOK / name, staging / name)
    pages = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        text = LINK.sub(lambda m: _outside_link(m, "docs"), text)
        (staging / doc.name).write_text(text, encoding="utf-8")
        pages.append(doc.stem)
    for name, path in zip(names, paths):
        nb = site_notebook(nbformat.read(path, as_version=4))
        nbformat.write(nb, staging / "notebooks" / f"{name}.ipynb")
    (staging / "notebooks" / "ur").mkdir()
    for name, path in zip(urdu, urdu_paths):
        nb = site_notebook(nbformat.read(path, as_version=4), "notebooks/ur")
        nbformat.write(nb, staging / "notebooks" / "ur" / f"{name}.ipynb")
    shutil.copytree(ROOT / "images", staging / "images", ignore=shutil.ignore_patterns("src"))
    stage_static(staging / "_static")
    toc = ["format: jb-book", "root: index", "parts:", "  - caption: Lessons", "    chapters:"]
    toc += [f"      - file: notebooks/{name}" for name in names]
    if urdu:
        toc += ["  - caption: اسباق اردو میں (the lessons in Urdu)", "    chapters:"]
        toc += [f"      - file: notebooks/ur/{name}" for name in urdu]
    if pages:
        toc += ["  - caption: For instructors and readers", "    chapters:"]
        toc += [f"      - file: {page}" for page in pages]
    (staging / "_toc.yml").write_text("\n".join(toc) + "\n", encoding="utf-8")
    return names + [f"ur/{n}" for n in urdu] + pages


def build(staging: Path, out: Path) -> float:
    """Run Jupyter Book's Sphinx build; returns the seconds it took."""
    jb = Path(sys.executable).parent / "jupyter-book"
    command = [str(jb), "build", str(staging), "--path-output", str(out), "--builder", "html"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log = done.stdout + done.stderr
    (out / "build.log").parent.mkdir(parents=True, exist_ok=True)
    (out / "build.log").write_text(log, encoding="utf-8")
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    if done.returncode != 0:
        raise SystemExit(f"jupyter-book build failed (exit {done.returncode}):\n{log[-4000:]}")
    for line in warnings:
        print(line)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executed", type=Path, default=ROOT / "build" / "executed")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site")
    parser.add_argument("--staging", type=Path, default=ROOT / "build" / "book")
    parser.add_argument(
        "--check-executed",
        action="store_true",
        help="only check that every lesson has a fresh executed copy (exit 1 with the reason if not)",
    )
    args = parser.parse_args(argv)
    if args.check_executed:
        try:
            names = lesson_order()
            check_executed(args.executed, names)
            urdu = [n for n in names if (ROOT / "notebooks" / "ur" / f"{n}.ipynb").exists()]
            check_executed(args.executed / "ur", urdu, ROOT / "notebooks" / "ur")
        except SystemExit as stale:
            print(stale)
            raise SystemExit(1) from None
        return
    start = time.perf_counter()
    pages = stage(args.executed, args.staging)
    staged = time.perf_counter() - start
    times = run_times([args.executed / f"{name}.ipynb" for name in lesson_order()])
    print(
        "lessons' run time (cells, as executed): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    )
    seconds = build(args.staging, args.out)
    html = args.out / "_build" / "html"
    print(
        f"site: {len(pages)} pages in {html} (staging {staged:.1f} s, Sphinx build {seconds:.1f} s)."
        f" Open {html / 'index.html'}; publish with `ghp-import -n -p -f {html}`."
    )


if __name__ == "__main__":
    main()
