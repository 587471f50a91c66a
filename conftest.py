"""pytest plugin for the course: keep what nbval executed (``--executed-dir DIR``).

nbval runs every lesson in a kernel and checks that no cell fails, but throws the outputs away. With
``--executed-dir build/executed`` (``make test`` passes it) each lesson that ran without a failure is also
written there with its outputs, as Jupyter itself would store them: nbclient's own message handling
(``clear_output``, display updates, widget state for the static site), so the site and the slides are
built from the very run that tested them, and nothing executes the lessons twice. A lesson with a failed
or skipped-on-timeout cell is not written, and an older copy of it is removed, so nothing stale is built.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--executed-dir",
        default=None,
        help="write each notebook nbval executed without a failure, with its outputs, to this folder",
    )


def pytest_configure(config):
    folder = config.getoption("executed_dir", default=None)
    if folder:
        config.pluginmanager.register(ExecutedNotebooks(Path(folder)), "course-executed-notebooks")


class _Record:
    """One notebook being recorded: a copy of nbval's notebook and an nbclient that fills it."""

    def __init__(self, nbfile):
        from nbclient import NotebookClient

        self.path = Path(str(nbfile.fspath))
        self.nb = copy.deepcopy(nbfile.nb)
        for cell in self.nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
                cell.metadata.pop("execution", None)
        self.client = NotebookClient(self.nb, store_widget_state=True, record_timing=True)
        self.client.reset_execution_trackers()
        self.failed = False

    def cell_index(self, item) -> int:
        return next(i for i, cell in enumerate(item.parent.nb.cells) if cell is item.cell)


class ExecutedNotebooks:
    """Feeds every kernel message of an nbval cell to nbclient and writes the notebooks at the end."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.records: dict[str, _Record] = {}

    def _record(self, item) -> _Record:
        key = str(item.parent.fspath)
        if key not in self.records:
            self.records[key] = _Record(item.parent)
        return self.records[key]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        from nbclient.exceptions import CellExecutionComplete

        if type(item).__name__ != "IPyNbCell":
            yield
            return
        record = self._record(item)
        index = record.cell_index(item)
        cell = record.nb.cells[index]
        cell.metadata["execution"] = {}
        kernel, nbfile = item.parent.kernel, item.parent
        record.client.kc = kernel.kc  # nbclient's Output-widget mimic answers the kernel through it
        record.client.clear_before_next_output = False  # as nbclient sets it for each cell it runs
        current = {}
        execute, receive = kernel.execute_cell_input, nbfile.get_kernel_message

        def execute_and_note(source, allow_stdin=None):
            current["msg_id"] = execute(source, allow_stdin=allow_stdin)
            return current["msg_id"]

        def receive_and_record(*args, **kwargs):
            msg = receive(*args, **kwargs)
            if msg["parent_header"].get("msg_id") == current.get("msg_id"):
                try:
                    record.client.process_message(msg, cell, index)
                except CellExecutionComplete:
                    pass
            return msg

        kernel.execute_cell_input, nbfile.get_kernel_message = execute_and_note, receive_and_record
        try:
            yield
        finally:
            kernel.execute_cell_input, nbfile.get_kernel_message = execute, receive

    def pytest_runtest_logreport(self, report):
        if report.failed and ".ipynb" in report.nodeid:
            for key, record in self.records.items():
                if report.nodeid.split("::")[0].endswith(Path(key).name):
                    record.failed = True

    def pytest_sessionfinish(self, session):
        import nbformat

        self.folder.mkdir(parents=True, exist_ok=True)
        notebooks = Path(str(session.config.rootpath)) / "notebooks"
        for record in self.records.values():
            # build/executed/NN_topic.ipynb, and build/executed/ur/NN_topic.ipynb for an Urdu twin
            inside = record.path.resolve().is_relative_to(notebooks.resolve())
            name = record.path.resolve().relative_to(notebooks.resolve()) if inside else None
            target = self.folder / (name or record.path.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if record.failed:
                target.unlink(missing_ok=True)
                continue
            record.client.set_widgets_metadata()
            nbformat.write(record.nb, target)
