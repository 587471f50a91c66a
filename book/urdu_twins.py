"""Keep the Urdu lessons (notebooks/ur/NN_topic.md + .ipynb) in step with the English ones.

    python book/urdu_twins.py            # check every twin; exit 1 naming each difference
    python book/urdu_twins.py --sync     # copy the English code and cell metadata into the twins

A twin has the English lesson's cells, in the same order and of the same kinds: its code cells are the
English code, byte for byte, with the same metadata (tags, slide types), and its markdown cells are the
Urdu translation, wrapped in ``<div dir="rtl" lang="ur">`` so that JupyterLab and the site lay them out
right to left. After an English lesson changes, ``--sync`` copies every code cell and every cell's
metadata across; a code cell the English gained (a split cell, a new check) is inserted at its place;
a markdown cell the English gained is inserted in English with a ``TRANSLATE`` marker, and a cell the
English lost is removed, each reported, so that the translator knows what to do. It then pairs the
``.md`` with jupytext. A twin whose structure cannot be matched is left alone and reported.
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
EN, UR = ROOT / "notebooks", ROOT / "notebooks" / "ur"
RTL = '<div dir="rtl" lang="ur">'
TRANSLATE = "<!-- TRANSLATE: new English text, not yet in Urdu -->"


def lessons() -> list[str]:
    return sorted(p.stem for p in EN.glob("[0-9][0-9]_*.ipynb"))


def differences(name: str) -> list[str]:
    """What differs between the English lesson and its twin (empty when they are in step)."""
    twin = UR / f"{name}.ipynb"
    if not twin.exists():
        return [f"{name}: no Urdu twin notebooks/ur/{name}.ipynb"]
    en, ur = nbformat.read(EN / f"{name}.ipynb", 4), nbformat.read(twin, 4)
    if [c.cell_type for c in en.cells] != [c.cell_type for c in ur.cells]:
        return [
            f"{name}: cells differ in number or kind ({len(en.cells)} English, {len(ur.cells)} Urdu)"
        ]
    found = []
    for i, (a, b) in enumerate(zip(en.cells, ur.cells)):
        if a.metadata != b.metadata:
            found.append(f"{name} cell {i}: metadata differs")
        if a.cell_type == "code" and a.source != b.source:
            found.append(f"{name} cell {i}: code differs from the English")
        if a.cell_type == "markdown" and (RTL not in b.source or TRANSLATE in b.source):
            found.append(
                f"{name} cell {i}: markdown not translated (no {RTL} or a TRANSLATE marker)"
            )
    return found


def _key(cell) -> str:
    return cell.cell_type + ":" + (cell.source if cell.cell_type == "code" else "")


def sync(name: str) -> list[str]:
    """Bring the twin in step with the English lesson; returns what was done or needs a translator."""
    en = nbformat.read(EN / f"{name}.ipynb", 4)
    ur = nbformat.read(UR / f"{name}.ipynb", 4)
    notes, cells = [], []
    matcher = difflib.SequenceMatcher(a=[_key(c) for c in ur.cells], b=[_key(c) for c in en.cells])
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        old, new = ur.cells[i1:i2], en.cells[j1:j2]
        if tag == "replace" and [c.cell_type for c in old] == [c.cell_type for c in new]:
            tag = "equal"  # code edited in English, or markdown (compared by kind only)
        if tag == "equal":
            for u, e in zip(old, new):
                u.metadata = e.metadata
                if e.cell_type == "code":
                    u.source = e.source
                cells.append(u)
            continue
        for e in new:
            copy = nbformat.from_dict(e)
            if e.cell_type == "markdown":
                copy.source = f"{TRANSLATE}\n\n{e.source}"
            cells.append(copy)
            notes.append(f"{name}: inserted English cell {en.cells.index(e)} ({e.cell_type})")
        notes += [f"{name}: removed Urdu cell {ur.cells.index(u)} ({u.cell_type})" for u in old]
    ur.cells = cells
    ur.metadata = en.metadata
    nbformat.write(ur, UR / f"{name}.ipynb")
    jupytext = Path(sys.executable).parent / "jupytext"
    subprocess.run([str(jupytext), "--to", "md:myst", str(UR / f"{name}.ipynb")], check=True)
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sync", action="store_true", help="copy code and metadata into the twins")
    args = parser.parse_args(argv)
    if args.sync:
        for name in lessons():
            for note in sync(name):
                print(note)
    problems = [p for name in lessons() for p in differences(name)]
    for problem in problems:
        print(problem)
    print("twins in step" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
