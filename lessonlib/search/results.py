"""What the image index hands back: a search result (``Hit``) and the report of an ``add`` (``AddReport``).

Introduced in lesson 03_image_search.

Example:
    >>> Hit(rank=1, position=0, name="cat.jpg", score=0.31).rank
    1
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """What ``ImageIndex.add`` did.

    Introduced in lesson 03_image_search.

    ``added``: images now in the index; ``embedded``: how many went through the model; ``from_cache``:
    added without running the model (found in the cache, or a duplicate of another image in the same
    call); ``skipped``: (name, reason) of every image that could not be read.

    Example:
        >>> print(AddReport(added=2, embedded=2))
        added 2 images: 2 embedded now, 0 from the cache, 0 skipped (0.0 s)
    """

    added: int = 0
    embedded: int = 0
    from_cache: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        text = (
            f"added {self.added} images: {self.embedded} embedded now, {self.from_cache} from the cache, "
            f"{len(self.skipped)} skipped ({self.seconds:.1f} s)"
        )
        for name, reason in self.skipped[:5]:
            text += f"\n  skipped {name}: {reason}"
        if len(self.skipped) > 5:
            text += f"\n  ... and {len(self.skipped) - 5} more (see report.skipped)"
        return text
