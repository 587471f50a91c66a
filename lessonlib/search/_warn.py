"""Warnings of the image index that point at the user's line, not at a line of this package.

Introduced in lesson 03_image_search.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Where Jupyter and IPython keep a cell's code: ipykernel writes /tmp/ipykernel_<pid>/<hash>.py, plain
# IPython names it <ipython-input-N-hash>. Neither name means anything to a student (nor is it the same
# on two machines), so a warning raised from a cell says "<cell>" instead.
_CELL_FILE = re.compile(r"(ipykernel_\d+[/\\]\d+\.py$)|(^<ipython-input-)")


def warn_user(message: str) -> None:
    """Warn with a ``UserWarning`` attributed to the first caller outside ``lessonlib/search/``.

    Introduced in lesson 03_image_search. A notebook then shows the warning under the cell's own line
    (``index.add(...)``), not under a line of the package's internals, and names the cell ``<cell>``
    rather than the kernel's temporary file (``/tmp/ipykernel_1234/5678.py``).

    Example:
        >>> warn_user("skipped 1 image(s) that could not be read")  # doctest: +SKIP
    """
    level, frame = 2, sys._getframe(1)  # stacklevel 2 = the caller of warn_user
    while frame is not None and _in_package(frame.f_code.co_filename):
        level, frame = level + 1, frame.f_back
    if frame is not None and _CELL_FILE.search(frame.f_code.co_filename):
        globals_ = frame.f_globals
        warnings.warn_explicit(
            message,
            UserWarning,
            filename="<cell>",
            lineno=frame.f_lineno,
            module=globals_.get("__name__", "__main__"),
            registry=globals_.setdefault("__warningregistry__", {}),
        )
        return
    warnings.warn(message, UserWarning, stacklevel=level)


def _in_package(filename: str) -> bool:
    return os.path.dirname(os.path.abspath(filename)) == _PACKAGE_DIR
