"""Fixtures of the real-browser tests: Debian's chromium (driven by playwright) and a JupyterLab server.

The tests are marked ``browser``. They are skipped, with the reason, only where no browser is installed
(no ``$CHROMIUM``, no ``chromium`` on the PATH or at /usr/bin/chromium, or no ``playwright`` Python
package); CI installs both (``apt-get install chromium``; playwright is in the ``dev`` extra).
``playwright install`` is never needed: the tests drive the system's chromium.

``lab_server`` starts ``jupyter lab`` from this Python environment as ``make lab`` does (the served
folder is a temporary copy of ``notebooks/``, so running a lesson never writes into the repository;
``images/`` is copied beside it, as the kernels see the repository), with the course's app settings
(``lab-settings/overrides.json``, which ``make venv`` installs for ``make lab``; the fixture checks
that the server serves them). It listens on 127.0.0.1 only, with a random token, and is always stopped
afterwards, kernels included.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60  # the server must answer within this (it takes ~3 s on a quiet laptop)


@pytest.fixture(scope="session")
def browser(chromium):
    """One headless chromium for the session (a fresh page per test)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass
class LabServer:
    """A running JupyterLab: its address, token, served folder and log file."""

    url: str
    token: str
    root: Path  # the copy of notebooks/ (the server serves its parent, as `make lab` does)
    log: Path
    process: subprocess.Popen

    def api(self, method: str, path: str, timeout: float = 10.0):
        """Call the server's REST API; returns the decoded JSON (None for an empty answer)."""
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel of the server (a test's lesson keeps no CPU busy after it)."""
        for kernel in self.api("GET", "/api/kernels"):
            try:
                self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=30)
            except urllib.error.HTTPError as err:  # already gone
                if err.code != 404:
                    raise

    def log_tail(self, n: int = 60) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_course(dest: Path) -> Path:
    """notebooks/*.ipynb (not their .md sources: jupytext would pair them) and images/ beside them."""
    notebooks = dest / "notebooks"
    notebooks.mkdir(parents=True)
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        shutil.copy(nb, notebooks / nb.name)
    (notebooks / "ur").mkdir()
    for nb in sorted((REPO / "notebooks" / "ur").glob("*.ipynb")):  # the Urdu twins
        shutil.copy(nb, notebooks / "ur" / nb.name)
    shutil.copytree(REPO / "images", dest / "images")  # the lessons' figures: ../images/*.png
    return notebooks


def _server_env(tmp: Path) -> dict[str, str]:
    """The server's (and so its kernels') environment: offline lessons, one thread, no user config."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # `make test` sets Agg; the kernels draw inline, as a student's do
    env.update(
        LESSONLIB_MODE="offline",
        LESSONLIB_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        # Nothing from ~/.jupyter or ~/.local/share/jupyter: the environment's own kernel and
        # extensions (sys.prefix) and an empty user-settings folder, as on a fresh laptop.
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "user-settings"),
    )
    # The one user setting: no "Would you like to get notified about Jupyter news?" toast on the page.
    notification = tmp / "user-settings/@jupyterlab/apputils-extension"
    notification /= "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return env


def _check_course_settings(server: LabServer, overrides: dict) -> None:
    """Fail unless the server serves every value of lab-settings/overrides.json (as the defaults of
    the plugins' settings: the server writes the overrides into the schemas it sends the page)."""
    for plugin, wanted in overrides.items():
        schema = server.api("GET", f"/lab/api/settings/{plugin}")["schema"]["properties"]
        served = {k: schema.get(k, {}).get("default") for k in wanted}
        wrong = {k: served[k] for k, v in wanted.items() if served[k] != v}
        if wrong:
            pytest.fail(
                f"JupyterLab does not use lab-settings/overrides.json: {plugin} has {wrong}, "
                f"the course sets {wanted}; log {server.log}:\n" + server.log_tail()
            )


def _answers(server: LabServer) -> bool:
    try:
        server.api("GET", "/api/status", timeout=2)
        return True
    except (OSError, urllib.error.URLError):
        return False


def _stop(process: subprocess.Popen, server: LabServer) -> None:
    """Stop the server and every process it started (kernels run in sessions of their own)."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.poll() is None:
        try:  # the clean way: the server shuts its kernels down, then exits
            server.api("POST", "/api/shutdown", timeout=10)
            process.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired, urllib.error.URLError):
            pass
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    for child in children:  # what the server left behind (a kernel it could not stop)
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=10)


@pytest.fixture(scope="session")
def lab_server(chromium, tmp_path_factory) -> LabServer:
    """JupyterLab on 127.0.0.1 serving a temporary copy of the lessons; always stopped afterwards."""
    tmp = tmp_path_factory.mktemp("lab")
    root = _copy_course(tmp / "course")
    # The course's app settings, read from the repository (`make venv` copies the same file into
    # <venv>/share/jupyter/lab/settings for `make lab`), so the test sees the settings as committed.
    app_settings = tmp / "app-settings"
    app_settings.mkdir()
    shutil.copy(REPO / "lab-settings/overrides.json", app_settings / "overrides.json")
    overrides = json.loads((app_settings / "overrides.json").read_text())
    env = _server_env(tmp)
    token = secrets.token_hex(16)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "server.log"
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",  # CI containers run as root; harmless otherwise
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--notebook-dir={root.parent}",  # the course's root, as `make lab` serves it (../images)
        f"--LabApp.app_settings_dir={app_settings}",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    server = LabServer(url=url, token=token, root=root, log=log, process=process)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(server):
            if process.poll() is not None:
                pytest.fail(
                    f"jupyter lab exited with code {process.returncode}; log {log}:\n"
                    + server.log_tail()
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"jupyter lab did not answer on {url} within {START_TIMEOUT_S} s; "
                    f"log {log}:\n" + server.log_tail()
                )
            time.sleep(0.5)
        _check_course_settings(server, overrides)
        yield server
    finally:
        _stop(process, server)
