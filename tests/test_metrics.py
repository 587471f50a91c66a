"""lessonlib.metrics: top-k accuracy, confusion matrix (lesson 02) and recall@k (lesson 03).

Classification metrics are cross-checked against scikit-learn, chance recall against random rankings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lessonlib import metrics
from lessonlib.metrics import (
    caption_relevance,
    chance_recall_at_k,
    recall_at_k,
    top_k,
    topk_accuracy,
)

# ------------------------------------------------------------------------ classification (lesson 02)


def test_topk_accuracy_matches_sklearn():
    from sklearn.metrics import top_k_accuracy_score

    rng = np.random.default_rng(0)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(200, 12))), dim=-1)
    targets = rng.integers(0, 12, size=200)
    ours = topk_accuracy(probs, targets, ks=(1, 5))
    for k in (1, 5):
        theirs = top_k_accuracy_score(targets, probs.numpy(), k=k, labels=list(range(12)))
        assert ours[k] == pytest.approx(theirs)
    assert topk_accuracy(probs[:, :3], targets % 3, ks=(5,)) == {5: 1.0}
    with pytest.raises(ValueError, match="class indices"):
        topk_accuracy(probs, targets + 20)
    with pytest.raises(ValueError, match="do not fit"):
        topk_accuracy(probs, targets[:10])


def test_confusion_matrix_matches_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(1)
    targets, preds = rng.integers(0, 6, 300), rng.integers(0, 6, 300)
    assert (
        metrics.confusion_matrix(targets, preds, 6)
        == confusion_matrix(targets, preds, labels=range(6))
    ).all()
    with pytest.raises(ValueError, match="predictions"):
        metrics.confusion_matrix(targets, preds[:5], 6)


def test_top_k_lists_labels_best_first():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    top = top_k(probs, ["a", "b", "c"], k=2)
    assert [[name for name, _ in row] for row in top] == [["b", "c"], ["a", "c"]]
    assert top[0][0][1] == pytest.approx(0.6)
    assert len(top_k(probs, ["a", "b", "c"], k=10)[0]) == 3


# ----------------------------------------------------------------------------- retrieval (lesson 03)


def test_recall_at_k_by_hand():
    sim = torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3], [0.5, 0.9, 0.4]])
    # query 0: best is item 0 (relevant); query 1: relevant item 0 is ranked last; query 2: item 2 third.
    assert recall_at_k(sim, torch.tensor([0, 0, 2]), ks=(1, 2, 3)) == pytest.approx(
        {1: 1 / 3, 2: 1 / 3, 3: 1.0}
    )
    # Several relevant items: query 0 finds item 1 second, query 1 item 2 first, query 2 item 0 second.
    rel = torch.tensor([[False, True, False], [False, True, True], [True, False, False]])
    assert recall_at_k(sim, rel, ks=(1, 2)) == pytest.approx({1: 1 / 3, 2: 1.0})


def test_recall_bad_inputs():
    sim = torch.rand(2, 4)
    with pytest.raises(ValueError, match="no relevant item"):
        recall_at_k(sim, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="ks must be integers from 1 to 4"):
        recall_at_k(sim, torch.tensor([0, 1]), ks=(1, 5))
    with pytest.raises(ValueError, match="2 queries but 3"):
        recall_at_k(sim, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="captions is empty"):
        caption_relevance([])


def test_chance_recall_matches_random_rankings():
    rel = torch.zeros(40, 30, dtype=torch.bool)
    for q in range(40):
        rel[q, torch.randperm(30)[: 1 + q % 4]] = True
    g = torch.Generator().manual_seed(0)
    simulated = [recall_at_k(torch.rand(40, 30, generator=g), rel) for _ in range(300)]
    for k, value in chance_recall_at_k(rel).items():
        assert np.mean([s[k] for s in simulated]) == pytest.approx(value, abs=0.02)


def test_caption_relevance():
    queries, rel = caption_relevance(["b", "a", "b", "c"])
    assert queries == ["a", "b", "c"]
    assert rel.tolist() == [[0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]]
