"""Fixtures shared by several test files."""

import os
import shutil
from pathlib import Path

import pytest
import torch

DEFAULT_CHROMIUM = "/usr/bin/chromium"
NO_BROWSER = "no browser: install Debian's chromium (`apt-get install chromium`; CI does)"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: drives a real browser (Debian's chromium via playwright)"
    )


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the chromium binary ($CHROMIUM, else `chromium` on the PATH, else /usr/bin/chromium);
    the test is skipped, with the reason, where there is none or playwright is missing. Never
    `playwright install`: the tests drive the system's chromium."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or DEFAULT_CHROMIUM
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"{NO_BROWSER} (no executable {path}; or set $CHROMIUM to one)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("no browser: playwright's Python package is missing (pip install -e '.[dev]')")
    return path


@pytest.fixture(autouse=True, scope="session")
def threads_by_the_course_policy():
    """The unit tests use torch's threads as the lessons do: lessonlib's thread policy (one thread when
    the machine is already busy, where two were measured many times slower), or $LESSONLIB_THREADS."""
    from lessonlib.environment import set_threads

    before = torch.get_num_threads()
    set_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def one_torch_thread():
    """Tiny models run far faster on one thread (BENCHMARKS.md, lesson 01); restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
