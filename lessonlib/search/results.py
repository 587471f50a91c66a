"""What the image index hands back: a search result (``Hit``) and the report of an ``add`` (``AddReport``).

Introduced in lesson 03_image_search.

Example:
    >>> Hit(rank=1, position=0, name="cat.jpg", score=0.31).rank
    1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath

from lessonlib.images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Hit:
    """One search result: ``rank`` (1 = best), ``position`` (row in the index), ``name``, ``score``.

    Introduced in lesson 03_image_search.

    Example:
        >>> Hit(rank=1, position=0, name="cat.jpg", score=0.31).name
        'cat.jpg'
    """

    rank: int
    position: int
    name: str
    score: float


@dataclass
class AddReport:
    """What ``ImageIndex.add`` (or ``add_folder``) did.

    Introduced in lesson 03_image_search.

    ``added``: images now in the index; ``embedded``: how many went through the model; ``from_cache``:
    added without running the model because the cache already held them; ``duplicates``: images with
    the same content as another image of the same call (embedded once, added under each name);
    ``skipped``: (name, reason) of everything that was not added: images that could not be read and,
    for a folder, entries that are not image files (another ending such as ``.svg`` or ``.txt``, or a
    sub-folder when ``recursive=False``). So ``added == embedded + from_cache + duplicates``.

    Example:
        >>> print(AddReport(added=2, embedded=2))
        added 2 images: 2 embedded now, 0 from the cache, 0 skipped (0.0 s)
        >>> print(AddReport(added=3, embedded=2, duplicates=1, skipped=[("/photos/a.svg", "not an image")]))
        added 3 images: 2 embedded now, 0 from the cache, 1 duplicate (same content as another image here: embedded once), 1 skipped (0.0 s)
          skipped a.svg: not an image
    """

    added: int = 0
    embedded: int = 0
    from_cache: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    duplicates: int = 0

    def __str__(self) -> str:
        twins = ""
        if self.duplicates:
            plural = "s" if self.duplicates > 1 else ""
            twins = (
                f"{self.duplicates} duplicate{plural} (same content as another image here: "
                "embedded once), "
            )
        text = (
            f"added {self.added} images: {self.embedded} embedded now, {self.from_cache} from the cache, "
            f"{twins}{len(self.skipped)} skipped ({self.seconds:.1f} s)"
        )
        for name, reason in self.skipped[:5]:
            text += f"\n  skipped {display_name(name)}: {short_reason(name, reason)}"
        if len(self.skipped) > 5:
            text += f"\n  ... and {len(self.skipped) - 5} more (see report.skipped)"
        return text


def display_name(name: str) -> str:
    """The last part of a path (``/tmp/x/photos/cat.jpg`` -> ``cat.jpg``): short and the same anywhere.

    Introduced in lesson 03_image_search.

    Example:
        >>> display_name("/home/me/photos/cat.jpg")
        'cat.jpg'
    """
    return PurePath(name).name or name


def short_reason(name: str, reason: str) -> str:
    """``reason`` with the full path ``name`` replaced by its last part (see ``display_name``).

    Introduced in lesson 03_image_search.

    Example:
        >>> short_reason("/tmp/x/a.png", "'/tmp/x/a.png' is damaged")
        "'a.png' is damaged"
    """
    return reason.replace(name, display_name(name)) if name else reason


def skipped_message(
    report: AddReport,
    unreadable: list[tuple[str, str]],
    not_images: list[tuple[str, str]],
    folder: PurePath | None,
) -> str:
    """The warning of an ``add``: every kind of skip with a few names each, and what works.

    Introduced in lesson 03_image_search. ``unreadable`` are image files that could not be read,
    ``not_images`` a folder's other entries (``folders.list_folder``); names are shown without their
    folder, so the message reads the same on any machine.

    Example:
        >>> report = AddReport(added=2, skipped=[("/x/a.svg", "an SVG")])
        >>> skipped_message(report, [], report.skipped, None)[:57]
        'skipped 1 entry: 1 file with another ending (a.svg): give'
    """

    def names(entries):
        shown = ", ".join(display_name(name) for name, _ in entries[:4])
        return shown + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")

    def count(entries, one, many):
        return f"{len(entries)} {one if len(entries) == 1 else many}"

    where = f" of folder '{folder.name}'" if folder is not None else ""
    parts = []
    if unreadable:
        name, reason = unreadable[0]
        others = f"; also {names(unreadable[1:])}" if len(unreadable) > 1 else ""
        parts.append(
            f"{count(unreadable, 'image file', 'image files')} that could not be read "
            f"({short_reason(name, reason)}{others})"
        )
    folders = [e for e in not_images if e[1].startswith("a folder")]
    files = [e for e in not_images if not e[1].startswith("a folder")]
    if files:
        parts.append(
            f"{count(files, 'file', 'files')} with another ending ({names(files)}): give "
            f"{', '.join(IMAGE_SUFFIXES)} files, or convert (an .svg, say) to .png first"
        )
    if folders:
        parts.append(
            f"{count(folders, 'sub-folder', 'sub-folders')} ({names(folders)}): pass "
            "recursive=True to index the images inside"
        )
    return (
        f"skipped {len(report.skipped)} entr{'y' if len(report.skipped) == 1 else 'ies'}{where}: "
        + "; ".join(parts)
        + (
            f". The other {report.added} image(s) were added"
            if report.added
            else ". No image was added"
        )
        + "; report.skipped lists each entry and why."
    )
