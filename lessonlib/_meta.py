"""Where the course lives, and the cells every notebook starts with.

Kept in one place so that a renamed notebook or a moved repository cannot leave a stale badge behind
(``tests/test_notebook_structure.py`` checks every notebook against these).
"""

from urllib.parse import quote

GITHUB_REPO = "multimodal-networks/course"
BRANCH = "main"

COLAB_INSTALL_CELL = (
    "# Colab only: install the course package (on a laptop or Binder it is installed already).\n"
    "import sys\n"
    "\n"
    'if "google.colab" in sys.modules:\n'
    f'    %pip install -q "lessonlib[lab] @ git+https://github.com/{GITHUB_REPO}@{BRANCH}"'
)


def colab_url(path: str) -> str:
    """Colab link for a notebook path inside the repository, e.g. ``notebooks/00_welcome.ipynb``."""
    return f"https://colab.research.google.com/github/{GITHUB_REPO}/blob/{BRANCH}/{path}"


def binder_url(path: str) -> str:
    """Binder link that opens JupyterLab on a notebook path inside the repository."""
    return f"https://mybinder.org/v2/gh/{GITHUB_REPO}/{BRANCH}?labpath={quote(path, safe='')}"


def badge_markdown(path: str) -> str:
    """The badge row that is the first line block of every notebook's first cell.

    Example:
        >>> badge_markdown("notebooks/00_welcome.ipynb").startswith("[![Open In Colab]")
        True
    """
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(path)}) "
        f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder_url(path)})"
    )
