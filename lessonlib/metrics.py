"""Evaluation metrics: top-k accuracy and confusion matrix (classification), recall@k (retrieval).

Introduced in lesson 02_zero_shot_classification (``top_k``, ``topk_accuracy``, ``confusion_matrix``);
the retrieval metrics (``recall_at_k``, ``chance_recall_at_k``, ``caption_relevance``) come in lesson
03_image_search.

Every metric takes plain tensors or arrays (probabilities, similarities, class indices), so a lesson can
score any model, not only the ones this package builds.

Example:
    >>> topk_accuracy(torch.tensor([[0.2, 0.8], [0.6, 0.4]]), [1, 1], ks=(1,))
    {1: 0.5}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------------------ classification


def top_k(
    probs: torch.Tensor, class_names: Sequence[str], k: int = 5
) -> list[list[tuple[str, float]]]:
    """Per image, the ``k`` most probable ``(label, probability)`` pairs, best first.

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> top_k(torch.tensor([[0.25, 0.75]]), ["cat", "dog"], k=1)
        [[('dog', 0.75)]]
    """
    k = min(int(k), probs.shape[1])
    values, indices = probs.topk(k, dim=-1)
    return [
        [(class_names[i], float(v)) for v, i in zip(row_v, row_i, strict=True)]
        for row_v, row_i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def topk_accuracy(probs, targets, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Share of images whose true class is among the ``k`` most probable, for each ``k`` in ``ks``.

    Introduced in lesson 02_zero_shot_classification.

    With fewer than ``k`` classes, top-k is 1.0 by definition (every class is in the top k).

    Example:
        >>> topk_accuracy(torch.tensor([[0.2, 0.8], [0.6, 0.4]]), [1, 1], ks=(1, 2))
        {1: 0.5, 2: 1.0}
    """
    probs = torch.as_tensor(probs)
    targets = torch.as_tensor(targets).long()
    if probs.ndim != 2 or len(targets) != len(probs):
        raise ValueError(
            f"probs {tuple(probs.shape)} and targets ({len(targets)}) do not fit: give [N, C] and N labels"
        )
    if len(targets) and (targets.min() < 0 or targets.max() >= probs.shape[1]):
        raise ValueError(f"targets must be class indices in 0..{probs.shape[1] - 1}")
    ranked = probs.argsort(dim=-1, descending=True)
    result = {}
    for k in ks:
        hits = (ranked[:, : min(k, probs.shape[1])] == targets[:, None]).any(dim=-1)
        result[int(k)] = float(hits.float().mean())
    return result


def confusion_matrix(targets, predictions, n_classes: int) -> np.ndarray:
    """Counts ``[n_classes, n_classes]``: row = true class, column = predicted class.

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 0, 1], 2).tolist()
        [[1, 0], [1, 1]]
    """
    targets = np.asarray(targets, dtype=int)
    predictions = np.asarray(predictions, dtype=int)
    if targets.shape != predictions.shape:
        raise ValueError(
            f"{len(targets)} targets but {len(predictions)} predictions: give one of each"
        )
    cm = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(cm, (targets, predictions), 1)
    return cm


# ----------------------------------------------------------------------------------------- retrieval


def recall_at_k(
    similarity: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Recall@k: the fraction of queries with at least one relevant item among their top k.

    Introduced in lesson 03_image_search.

    ``similarity`` is (Q, N) query-to-item scores; ``relevant`` is a (Q, N) boolean matrix, or a (Q,)
    integer tensor giving the one relevant item of each query.

    Example:
        >>> recall_at_k(torch.eye(3), torch.arange(3), ks=(1,))
        {1: 1.0}
    """
    if similarity.ndim != 2:
        raise ValueError(
            f"similarity must be a (queries, items) matrix, got shape {tuple(similarity.shape)}"
        )
    q, n = similarity.shape
    relevant = torch.as_tensor(relevant)
    if relevant.ndim == 1:
        if relevant.shape[0] != q:
            raise ValueError(
                f"{q} queries but {relevant.shape[0]} relevant indices: give one per query"
            )
        relevant = F.one_hot(relevant.long(), n).bool()
    if tuple(relevant.shape) != (q, n):
        raise ValueError(
            f"relevant has shape {tuple(relevant.shape)}, similarity {(q, n)}: they must match"
        )
    relevant = relevant.bool()
    empty = (~relevant.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(
            f"{len(empty)} queries (e.g. query {int(empty[0])}) have no relevant item: recall is "
            "undefined for them, drop them"
        )
    bad = [kk for kk in ks if not isinstance(kk, int) or isinstance(kk, bool) or not 1 <= kk <= n]
    if bad or not ks:
        raise ValueError(
            f"ks must be integers from 1 to {n} (the number of items), got {list(ks)!r}"
        )
    top = similarity.topk(max(ks), dim=1).indices
    hit = relevant.gather(1, top)
    return {kk: float(hit[:, :kk].any(dim=1).float().mean()) for kk in ks}


def chance_recall_at_k(relevant: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Expected recall@k of a random ranking (the baseline a model must beat).

    Introduced in lesson 03_image_search. With r relevant items among n, a random top-k misses all of
    them with probability C(n - r, k) / C(n, k).

    Example:
        >>> chance_recall_at_k(torch.eye(4, dtype=torch.bool), ks=(1, 2))
        {1: 0.25, 2: 0.5}
    """
    relevant = torch.as_tensor(relevant).bool()
    n = relevant.shape[1]
    r = relevant.sum(dim=1).double()
    out = {}
    for kk in ks:
        miss = torch.ones_like(r)
        for i in range(kk):
            miss = miss * ((n - r - i).clamp(min=0) / (n - i))
        out[kk] = float((1 - miss).mean())
    return out


def caption_relevance(captions: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Queries and relevance for caption-to-image retrieval when several images share a caption.

    Introduced in lesson 03_image_search. Returns the distinct captions (the queries, sorted) and a
    (queries, images) boolean matrix: image j is relevant to a query if its caption is that query.
    For Shapes World with ``detail="full"`` a caption fixes colour, shape, size and position, so the
    relevant images are exactly the ones the caption describes.

    Example:
        >>> queries, rel = caption_relevance(["a red circle", "a blue square", "a red circle"])
        >>> queries, rel.tolist()
        (['a blue square', 'a red circle'], [[False, True, False], [True, False, True]])
    """
    if len(captions) == 0:
        raise ValueError("captions is empty: give one caption per image")
    queries = sorted(set(captions))
    row = {c: i for i, c in enumerate(queries)}
    relevant = torch.zeros(len(queries), len(captions), dtype=torch.bool)
    relevant[[row[c] for c in captions], torch.arange(len(captions))] = True
    return queries, relevant
