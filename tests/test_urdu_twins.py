"""The Urdu twins of the lessons (notebooks/ur/) cannot drift from the English ones: same cells, same
code byte for byte, same metadata (tags, slide types), every markdown cell translated and laid out right
to left, badges pointing at the Urdu notebook itself. `python book/urdu_twins.py --sync` repairs a drift
after an English lesson changed (see its docstring)."""

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))
import urdu_twins  # noqa: E402  (book/urdu_twins.py)

from lessonlib._meta import badge_markdown  # noqa: E402

LESSONS = urdu_twins.lessons()


@pytest.mark.parametrize("name", LESSONS)
def test_twin_matches_the_english_lesson(name):
    assert urdu_twins.differences(name) == []


@pytest.mark.parametrize("name", LESSONS)
def test_twin_badges_open_the_urdu_notebook_and_pictures_resolve(name):
    nb = nbformat.read(ROOT / "notebooks" / "ur" / f"{name}.ipynb", 4)
    assert badge_markdown(f"notebooks/ur/{name}.ipynb") in nb.cells[0].source
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for target in re.findall(r"\]\((\.\./[^)\s]+)\)", cell.source):
                assert (ROOT / "notebooks" / "ur" / target).resolve().exists(), (name, target)


def test_a_drift_is_caught_and_synced_back(tmp_path, monkeypatch):
    name = "00_welcome"
    (tmp_path / "ur").mkdir()
    for suffix in (".ipynb", ".md"):
        (tmp_path / f"{name}{suffix}").write_bytes(
            (ROOT / "notebooks" / f"{name}{suffix}").read_bytes()
        )
        (tmp_path / "ur" / f"{name}{suffix}").write_bytes(
            (ROOT / "notebooks" / "ur" / f"{name}{suffix}").read_bytes()
        )
    monkeypatch.setattr(urdu_twins, "EN", tmp_path)
    monkeypatch.setattr(urdu_twins, "UR", tmp_path / "ur")
    en = nbformat.read(tmp_path / f"{name}.ipynb", 4)
    code = next(i for i, c in enumerate(en.cells) if c.cell_type == "code" and i > 2)
    en.cells[code].source += "\nprint('changed in English')"
    en.cells.insert(code + 1, nbformat.v4.new_code_cell("x = 1"))
    nbformat.write(en, tmp_path / f"{name}.ipynb")
    assert urdu_twins.differences(name), "the drift went unnoticed"
    notes = urdu_twins.sync(name)
    assert any("inserted English cell" in n for n in notes)
    assert urdu_twins.differences(name) == []
    ur = nbformat.read(tmp_path / "ur" / f"{name}.ipynb", 4)
    assert ur.cells[code].source.endswith("print('changed in English')")


def test_the_glossary_page_is_made_from_the_term_lists():
    import glossary  # book/glossary.py

    assert (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8") == glossary.render(), (
        "docs/glossary.md is out of date: run `python book/glossary.py`"
    )
    entries = glossary.terms()
    assert len(entries) > 100 and "embedding" in entries and "cosine similarity" in entries


def test_readme_ur_gives_the_two_commands_and_links_every_urdu_lesson():
    text = (ROOT / "README.ur.md").read_text(encoding="utf-8")
    assert "make lab" in text and "make test" in text and 'dir="rtl"' in text
    for name in LESSONS:
        assert f"(notebooks/ur/{name}.ipynb)" in text, name
        assert badge_markdown(f"notebooks/ur/{name}.ipynb") in text, name
    for target in re.findall(r"\]\(((?!https?:)[^)\s]+)\)", text):
        assert (ROOT / target).exists(), target
    assert "(README.ur.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
