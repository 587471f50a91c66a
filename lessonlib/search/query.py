"""What a search query may be, and how its parts become one vector ("image arithmetic").

Introduced in lesson 03_image_search.

A query is a text, an image (a path, a PIL image, an array; a ``str`` naming an existing image file
counts as an image), an embedding (a 1-D tensor), or a list of those, each optionally with a weight:
``[(photo, 1.0), ("a dog", 1.0), ("a cat", -1.0)]``. ``parse_query`` checks it and returns
``(term, weight)`` pairs; ``weighted_sum`` adds the parts' unit vectors and normalises the sum.

Example:
    >>> parse_query([("a dog", 1.0), "in the snow"])
    [('a dog', 1.0), ('in the snow', 1.0)]
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from numbers import Real

import torch
import torch.nn.functional as F

from lessonlib.images import IMAGE_SUFFIXES


def check_text(text) -> None:
    """Raise if ``text`` is not a non-blank string (a text query or a text to embed).

    Introduced in lesson 03_image_search.

    Example:
        >>> check_text("a red circle")  # fine: returns None
    """
    if not isinstance(text, str):
        raise TypeError(f"a text query must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(
            "the query is empty: type a few words such as 'a red circle', or give an image to search by"
        )


def is_text(term) -> bool:
    """True for a text query part: a string that does not name an existing image file.

    Introduced in lesson 03_image_search.

    Example:
        >>> is_text("a red circle"), is_text(torch.ones(3))
        (True, False)
    """
    if not isinstance(term, str):
        return False
    is_image_file = term.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(
        os.path.expanduser(term)
    )
    return not is_image_file


def is_vector(term) -> bool:
    """True for an embedding query part (a 1-D tensor).

    Introduced in lesson 03_image_search.

    Example:
        >>> is_vector(torch.ones(3)), is_vector("a cat")
        (True, False)
    """
    return isinstance(term, torch.Tensor) and term.ndim == 1


def as_vector(term: torch.Tensor, dim: int | None) -> torch.Tensor:
    """An embedding query part as a float32 unit vector on the CPU, checked against the index's ``dim``.

    Introduced in lesson 03_image_search.

    Example:
        >>> as_vector(torch.tensor([3.0, 4.0]), 2).tolist()
        [0.6000000238418579, 0.800000011920929]
    """
    v = term.detach().float().cpu()
    if dim is not None and v.shape[0] != dim:
        raise ValueError(f"embedding query has {v.shape[0]} dimensions, the index {dim}")
    return F.normalize(v, dim=0)


def _is_weight(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def parse_query(query) -> list[tuple[object, float]]:
    """Normalise a query to a list of ``(term, weight)`` pairs, rejecting empty or malformed queries.

    Introduced in lesson 03_image_search. A bare part gets weight 1.0.

    Example:
        >>> parse_query(("a red circle", 0.5))
        [('a red circle', 0.5)]
    """
    if query is None:
        raise ValueError(
            "the query is empty (None): give a text such as 'a red circle', an image, or a list of both"
        )
    if isinstance(query, tuple) and len(query) == 2 and _is_weight(query[1]):
        query = [query]
    if isinstance(query, str) or not isinstance(query, (list, tuple)):
        query = [query]
    if len(query) == 0:
        raise ValueError(
            "the query is an empty list: give at least one text or image, e.g. ['a red circle']"
        )
    terms = []
    for part in query:
        if isinstance(part, tuple):
            if len(part) != 2 or not _is_weight(part[1]):
                raise TypeError(
                    f"a weighted query part must be (text_or_image, number), got {part!r:.80}"
                )
            term, weight = part
        else:
            term, weight = part, 1.0
        if not math.isfinite(float(weight)):
            raise ValueError(
                f"query weight {weight!r} is not a finite number: use e.g. 1.0 or -0.5"
            )
        if term is None:
            raise ValueError("a query part is None: give a text, an image or an embedding")
        if isinstance(term, str):
            check_text(term)
        terms.append((term, float(weight)))
    return terms


def weighted_sum(vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """The normalised weighted sum of the parts' unit vectors: one query vector ``(D,)``.

    Introduced in lesson 03_image_search.

    Example:
        >>> weighted_sum([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])], [1.0, -1.0]).tolist()
        [0.7071067690849304, -0.7071067690849304]
    """
    total = None
    for v, weight in zip(vectors, weights, strict=True):
        total = weight * v if total is None else total + weight * v
    norm = float(total.norm())
    if not math.isfinite(norm) or norm < 1e-6:
        raise ValueError(
            "the query's parts cancel out (their weighted sum is the zero vector): "
            "change the weights, e.g. [(image, 1.0), ('a dog', 0.5)]"
        )
    return total / norm
