"""Structure of every lesson notebook: badges that point at the notebook itself, the Colab install guard,
the setup cell, closing sections, self-checks, no stored outputs, clean metadata, a size limit, and the
MyST source (``NN_topic.md``) in step with the committed notebook (``NN_topic.ipynb``).

Executing the notebooks is nbval's job (`make test` runs it); this file checks what execution cannot.
"""

import json
import re
from pathlib import Path

import pytest

from lessonlib._meta import COLAB_INSTALL_CELL, badge_markdown, binder_url, colab_url

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_BYTES = 500_000


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell):
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def test_there_are_lessons():
    names = [p.name for p in NOTEBOOKS]
    assert "00_welcome.ipynb" in names
    for name in names:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", name), f"{name}: use NN_topic.ipynb"
    for source in (ROOT / "notebooks").glob(
        "*.md"
    ):  # a source without its notebook is not a lesson
        assert source.with_suffix(".ipynb").exists(), (
            f"{source.name} has no .ipynb: run `make sync`"
        )


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request):
    return request.param


def test_size_limit(notebook):
    assert notebook.stat().st_size < MAX_BYTES, f"{notebook.name}: strip outputs or large images"


def test_first_cell_has_title_and_own_badges(notebook):
    first = _cells(notebook)[0]
    rel = f"notebooks/{notebook.name}"
    assert first["cell_type"] == "markdown"
    text = _source(first)
    assert text.startswith(f"# {notebook.name[:2]} "), (
        f"{notebook.name}: title must start '# {notebook.name[:2]} '"
    )
    assert badge_markdown(rel) in text, f"{notebook.name}: badges must point at {rel}"
    # No badge may point at another notebook (a renamed or copied notebook keeps a stale badge otherwise).
    for url in re.findall(
        r"\]\((https://(?:colab\.research\.google\.com/github|mybinder\.org/v2)[^)]+)\)", text
    ):
        assert url in (colab_url(rel), binder_url(rel)), f"{notebook.name}: stale badge {url}"


def test_colab_install_guard_is_the_second_cell(notebook):
    cell = _cells(notebook)[1]
    assert cell["cell_type"] == "code" and _source(cell) == COLAB_INSTALL_CELL


def test_setup_is_the_third_cell(notebook):
    cell = _cells(notebook)[2]
    assert cell["cell_type"] == "code" and "lessonlib.setup(" in _source(cell)


def test_ends_with_summary_exercises_references(notebook):
    markdown = "\n".join(_source(c) for c in _cells(notebook) if c["cell_type"] == "markdown")
    positions = [markdown.find(f"## {h}") for h in ("Summary", "Exercises", "References")]
    assert all(p >= 0 for p in positions), (
        f"{notebook.name}: needs ## Summary, ## Exercises, ## References"
    )
    assert positions == sorted(positions), (
        f"{notebook.name}: Summary, then Exercises, then References"
    )


def test_has_self_checks(notebook):
    code = "\n".join(_source(c) for c in _cells(notebook) if c["cell_type"] == "code")
    assert re.search(r"^\s*assert ", code, re.M), (
        f"{notebook.name}: add self-check cells with assert"
    )


def test_stored_without_outputs_and_clean_metadata(notebook):
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{notebook.name}: cell {i} has stored outputs"
            assert cell.get("execution_count") is None, (
                f"{notebook.name}: cell {i} has an execution count"
            )
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
    assert set(nb["metadata"]) <= {"kernelspec", "language_info", "jupytext"}, (
        f"{notebook.name}: clean the metadata"
    )
    assert nb["metadata"].get("jupytext") == {"formats": "ipynb,md:myst"}, (
        f"{notebook.name}: pair it with its MyST source: jupytext --set-formats ipynb,md:myst"
    )


def _comparable(cells):
    """What must agree between a lesson's .md and its .ipynb: cell type, source and metadata."""
    return [
        (c["cell_type"], _source(c).strip("\n"), json.dumps(c.get("metadata", {}), sort_keys=True))
        for c in cells
    ]


def test_myst_source_and_notebook_are_in_sync(notebook):
    """The .md is what instructors edit; the .ipynb is what Colab and Binder open. They must agree
    cell by cell, or one of them holds an edit the other lost (fix: `make sync`, then commit both)."""
    import jupytext

    source = notebook.with_suffix(".md")
    assert source.is_file(), f"{notebook.name}: its MyST source {source.name} is missing"
    from_md = _comparable(jupytext.read(source)["cells"])
    from_ipynb = _comparable(_cells(notebook))
    assert len(from_md) == len(from_ipynb), (
        f"{source.name} has {len(from_md)} cells, {notebook.name} {len(from_ipynb)}: run `make sync`"
    )
    for i, (a, b) in enumerate(zip(from_md, from_ipynb)):
        assert a == b, (
            f"cell {i} differs between {source.name} and {notebook.name}: run `make sync`"
        )


def test_sync_check_catches_an_edit(tmp_path):
    """The check above can fail: an edit to a copy of a lesson's .md shows up as a difference."""
    import jupytext

    source = NOTEBOOKS[0].with_suffix(".md")
    edited = tmp_path / source.name
    edited.write_text(source.read_text(encoding="utf-8").replace("Welcome", "Welcom", 1))
    assert _comparable(jupytext.read(edited)["cells"]) != _comparable(_cells(NOTEBOOKS[0]))


def test_code_reads_no_file_relative_to_the_notebooks_folder(notebook):
    """A code cell that opens "../something" works only where the notebook sits in notebooks/ of a
    clone: not on Colab (only the package is installed) nor in another folder (e.g. a translation).
    Data the lessons read ships inside lessonlib (importlib.resources)."""
    for i, cell in enumerate(_cells(notebook)):
        source = "".join(cell["source"])
        if cell["cell_type"] == "code":
            assert not re.search(r"[\'\"]\.\./", source), (
                f"{notebook.name} cell {i} reads a path relative to the notebook's folder: "
                "ship the file in lessonlib and read it with importlib.resources.files('lessonlib')"
            )


def test_markdown_precedes_code(notebook):
    """Markdown before code says what the next cell does: no long runs of bare code cells."""
    run = 0
    for cell in _cells(notebook)[3:]:
        run = run + 1 if cell["cell_type"] == "code" else 0
        assert run <= 3, (
            f"{notebook.name}: more than 3 code cells in a row without a word of explanation"
        )


def test_welcome_links_every_lesson_and_only_existing_ones():
    text = "\n".join(_source(c) for c in _cells(ROOT / "notebooks" / "00_welcome.ipynb"))
    linked = set(re.findall(r"\]\((\d\d_[a-z0-9_]+\.ipynb)\)", text))
    existing = {p.name for p in NOTEBOOKS} - {"00_welcome.ipynb"}
    assert linked == existing, (
        f"missing from the course map: {existing - linked}; broken: {linked - existing}"
    )


def test_readme_badges_and_links_point_at_real_notebooks():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in re.findall(r"(notebooks/\d\d_[a-z0-9_]+\.ipynb)", readme):
        assert (ROOT / path).exists(), f"README links {path}, which does not exist"
    assert "make lab" in readme and "make test" in readme


def test_binder_and_colab_install_what_the_lessons_import():
    """Binder (environment.yml + postBuild) and Colab (the install cell) install the `lab` extra, which
    must hold what the lessons need beyond the core: FAISS (lesson 03, section 7) and jupytext."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    lab = " ".join(extras["lab"])
    for package in ("faiss-cpu", "jupytext", "jupyterlab", "ipykernel"):
        assert package in lab, f"the lab extra must install {package}"
    post_build = (ROOT / "postBuild").read_text()
    assert re.search(r'pip install .*-e "\.\[lab\]"', post_build), "postBuild must install .[lab]"
    assert "lessonlib[lab]" in COLAB_INSTALL_CELL, (
        "Colab's install cell must install lessonlib[lab]"
    )
    env = (ROOT / "environment.yml").read_text()
    assert "torch" in env and "download.pytorch.org/whl/cpu" in env, "Binder needs CPU torch"


def test_jupyterlab_saves_widget_state():
    """A reopened lesson shows its widgets (not "Error displaying widget"): make lab and Binder install
    JupyterLab settings that save widget state with the notebook."""
    settings = json.loads((ROOT / "lab-settings" / "overrides.json").read_text())
    assert settings["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True
    assert "lab-settings/overrides.json" in (ROOT / "postBuild").read_text()
    assert "lab-settings/overrides.json" in (ROOT / "Makefile").read_text()
