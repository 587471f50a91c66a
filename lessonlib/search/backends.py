"""Nearest-neighbour search over unit-length embeddings: exact (torch) or approximate (FAISS).

Introduced in lesson 03_image_search.

With unit-length vectors the inner product is the cosine similarity, so exact search is one matrix
product and a ``topk``. FAISS is optional (``pip install faiss-cpu``): ``build_faiss_index`` builds an
exact ``flat`` index or an approximate ``hnsw`` / ``ivf`` one for large collections.

Example:
    >>> exact_search(torch.eye(3), torch.tensor([0.0, 1.0, 0.0]), k=1)[1].tolist()
    [1]
"""

from __future__ import annotations

import math

import numpy as np
import torch

FAISS_KINDS = ("flat", "hnsw", "ivf")


def exact_search(
    embeddings: torch.Tensor, queries: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by inner product: ``(queries @ embeddings.T).topk(k)`` -> (scores, indices).

    Introduced in lesson 03_image_search. With unit-length vectors the inner product is the cosine
    similarity. ``queries`` is (D,) or (Q, D); the result has shape (Q, k) (or (k,) for one query).

    Example:
        >>> e = torch.eye(3)
        >>> exact_search(e, torch.tensor([0.0, 1.0, 0.0]), k=1)[1].tolist()
        [1]
    """
    one = queries.ndim == 1
    q = queries[None] if one else queries
    scores, indices = (q @ embeddings.T).topk(min(k, embeddings.shape[0]), dim=1)
    return (scores[0], indices[0]) if one else (scores, indices)


def _import_faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "FAISS is not installed: `pip install faiss-cpu` (or `pip install lessonlib[search]`), "
            "or keep using the exact torch search, which is fast up to a few hundred thousand images"
        ) from err
    return faiss


def build_faiss_index(
    embeddings: torch.Tensor | np.ndarray,
    kind: str = "flat",
    *,
    nlist: int | None = None,
    nprobe: int = 16,
    hnsw_m: int = 32,
    ef_search: int = 64,
    train_size: int | None = None,
):
    """A FAISS inner-product index over ``embeddings`` (N, D).

    Introduced in lesson 03_image_search.

    ``kind``: ``"flat"`` (exact, ``IndexFlatIP``), ``"hnsw"`` (approximate graph search,
    ``IndexHNSWFlat``; ``ef_search`` trades speed for recall) or ``"ivf"`` (approximate, k-means cells,
    ``IndexIVFFlat``; searches ``nprobe`` of ``nlist`` cells; default ``nlist`` = sqrt(N), at most N / 39
    so that k-means has the 39 training points per cell FAISS asks for; k-means is trained on a random
    sample of ``train_size`` vectors, default 64 per cell).

    Example:
        >>> index = build_faiss_index(torch.eye(4), "flat")  # doctest: +SKIP
        >>> index.search(np.eye(4, dtype="float32")[:1], 1)[1]  # doctest: +SKIP
        array([[0]])
    """
    if kind not in FAISS_KINDS:
        raise ValueError(
            f"unknown FAISS index kind {kind!r}: choose one of {', '.join(FAISS_KINDS)}"
        )
    faiss = _import_faiss()
    x = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else embeddings
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (N, D) matrix, got shape {x.shape}")
    n, d = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
    else:
        nlist = max(1, min(n, nlist or min(int(math.sqrt(n)), n // 39)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        train_size = min(n, train_size or 64 * nlist)
        sample = (
            np.random.default_rng(0).choice(n, train_size, replace=False)
            if train_size < n
            else None
        )
        index.train(x if sample is None else x[np.sort(sample)])
        index.nprobe = min(nprobe, nlist)
    index.add(x)
    return index
