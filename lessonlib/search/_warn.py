"""Warnings of the image index that point at the user's line, not at a line of this package.

Introduced in lesson 03_image_search.
"""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def warn_user(message: str) -> None:
    """Warn with a ``UserWarning`` attributed to the first caller outside ``lessonlib/search/``.

    Introduced in lesson 03_image_search. A notebook then shows the warning under the cell's own line
    (``index.add(...)``), not under a line of the package's internals.

    Example:
        >>> warn_user("skipped 1 image(s) that could not be read")  # doctest: +SKIP
    """
    level, frame = 2, sys._getframe(1)  # stacklevel 2 = the caller of warn_user
    while frame is not None and _in_package(frame.f_code.co_filename):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, UserWarning, stacklevel=level)


def _in_package(filename: str) -> bool:
    return os.path.dirname(os.path.abspath(filename)) == _PACKAGE_DIR
