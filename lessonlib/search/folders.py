"""What a folder holds: the image files to index, and every other entry with the reason it is left out.

Introduced in lesson 03_image_search.

``ImageIndex.add_folder`` indexes the files ``list_folder`` returns and reports the rest (an ``.svg``, a
text file, a sub-folder named ``holiday.jpg``), so nothing in a folder is dropped without a word.

Example:
    >>> files, others = list_folder("photos/")  # doctest: +SKIP
    >>> others  # doctest: +SKIP
    [('photos/logo.svg', 'an SVG is a vector drawing, not an image PIL can read: convert it to .png')]
"""

from __future__ import annotations

import os
from pathlib import Path

from lessonlib.images import IMAGE_SUFFIXES, list_image_files


def list_folder(
    folder: str | os.PathLike, recursive: bool = False
) -> tuple[list[Path], list[tuple[str, str]]]:
    """``(image_files, others)``: the sorted image files of ``folder`` and (name, reason) of the rest.

    Introduced in lesson 03_image_search. Image files are those ``lessonlib.images.list_image_files``
    takes (by ending). ``others`` holds every other visible entry: files with another ending, and
    sub-folders when ``recursive=False`` (with ``recursive=True`` their files are listed one by one).
    Hidden entries (names starting with ``.``, such as ``.DS_Store`` or ``.ipynb_checkpoints``) are
    left out of both. Each reason says what would work.

    Example:
        >>> files, others = list_folder("photos/")  # doctest: +SKIP
    """
    files = list_image_files(folder, recursive=recursive)  # raises for a missing folder or a file
    folder = Path(folder).expanduser()
    taken = set(files)
    others = []
    for path in sorted(folder.glob("**/*" if recursive else "*")):
        if path in taken or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.is_dir() and recursive:
            continue  # its files are listed one by one
        others.append((str(path), _why_not(path)))
    return files, others


def _why_not(path: Path) -> str:
    if path.is_dir():
        looks_like = " named like an image" if path.suffix.lower() in IMAGE_SUFFIXES else ""
        return (
            f"a folder{looks_like}, not an image file: pass recursive=True to index the images "
            "inside it"
        )
    if not path.is_file():
        return "not a regular file (a broken link?): give image files"
    if path.suffix.lower() == ".svg":
        return "an SVG is a vector drawing, not an image PIL can read: convert it to .png"
    return (
        f"not an image file: its ending {path.suffix or '(none)'!r} is not one of "
        f"{', '.join(IMAGE_SUFFIXES)}"
    )
