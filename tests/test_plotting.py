"""lessonlib.plotting and lessonlib.widgets: figures carry titles and labels; bad shapes are refused."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from lessonlib import plotting, widgets  # noqa: E402

COLOURS = ["red", "green", "blue"]


@pytest.fixture()
def images():
    return [Image.new("RGB", (24, 16), c) for c in COLOURS]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_similarity_heatmap(images):
    sim = torch.tensor([[0.3, 0.1, 0.0], [0.1, 0.25, 0.05]])
    ax = plotting.plot_similarity(sim, images, ["a red box", "a green box"])
    assert ax.get_title() and ax.get_xlabel() == "images" and ax.get_ylabel() == "captions"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a red box", "a green box"]
    assert len(ax.images) == 1 + len(images)  # the matrix plus one thumbnail per image
    assert "0.30" in [t.get_text() for t in ax.texts]
    with pytest.raises(ValueError, match=r"2 captions and 3 images"):
        plotting.plot_similarity(sim.T, images, ["a", "b"])


def test_gallery(images):
    fig = plotting.show_gallery(images, titles=COLOURS, ncols=2)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == COLOURS
    assert len(fig.axes) == 4  # 2x2 grid, last cell empty
    assert fig._suptitle is not None
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        plotting.show_gallery(images, titles=COLOURS[:2])
    with pytest.raises(ValueError, match="empty"):
        plotting.show_gallery([])


def test_topk_bars(images):
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    fig = plotting.plot_topk_bars(images, probs, COLOURS, k=2, true_labels=COLOURS)
    bar_axes = [ax for ax in fig.axes if ax.get_xlabel() == "probability"]
    assert len(bar_axes) == 3
    first = bar_axes[0]
    assert [t.get_text() for t in first.get_yticklabels()] == ["red", "green"]
    assert [round(p.get_width(), 2) for p in first.patches] == [0.7, 0.2]
    # the true label's bar is green, the other blue
    assert first.patches[0].get_facecolor() != first.patches[1].get_facecolor()
    with pytest.raises(ValueError, match="expected \\(3, 3\\)"):
        plotting.plot_topk_bars(images, probs[:2], COLOURS)


def test_confusion():
    cm = np.array([[8, 2], [1, 9]])
    ax = plotting.plot_confusion(cm, ["cat", "dog"])
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    shown = ax.images[0].get_array()
    assert np.allclose(shown, [[0.8, 0.2], [0.1, 0.9]])
    assert "0.80" in [t.get_text() for t in ax.texts]
    with pytest.raises(ValueError, match="3 class names"):
        plotting.plot_confusion(cm, ["a", "b", "c"])


def test_confusion_rows_keep_the_classes_with_images():
    cm = np.zeros((4, 4), dtype=int)
    cm[1] = [0, 6, 3, 1]
    cm[3] = [0, 0, 2, 8]
    ax = plotting.plot_confusion(cm, ["a", "b", "c", "d"], rows=[1, 3])
    assert np.allclose(ax.images[0].get_array(), [[0, 0.6, 0.3, 0.1], [0, 0, 0.2, 0.8]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "d"]
    assert len(ax.get_xticklabels()) == 4  # every predicted class keeps its column
    assert [t.get_text() for t in ax.texts] == ["0.60", "0.30", "0.10", "0.20", "0.80"]  # no zeros
    outlined = [(p.get_x(), p.get_y()) for p in ax.patches]
    assert outlined == [(0.5, -0.5), (2.5, 0.5)]  # each row's own class
    assert ax.figure.axes[-1].get_ylabel() == "share"  # the colourbar
    with pytest.raises(ValueError, match="rows \\[5\\] must be class indices from 0 to 3"):
        plotting.plot_confusion(cm, ["a", "b", "c", "d"], rows=[5])


def test_search_hits_gallery(images):
    from lessonlib.search import Hit

    hits = [
        Hit(rank=r + 1, position=r, name=f"photos/{c}.png", score=0.3 - r / 10)
        for r, c in enumerate(COLOURS)
    ]
    fig = plotting.show_hits(images, hits, query="'a box'")
    assert [ax.get_title() for ax in fig.axes] == [
        "#1  cos 0.300\nred.png",
        "#2  cos 0.200\ngreen.png",
        "#3  cos 0.100\nblue.png",
    ]
    assert fig._suptitle.get_text() == "top 3 results for 'a box'"
    with pytest.raises(ValueError, match="no hits to show"):
        plotting.show_hits([], [])


def test_short_name():
    assert plotting.short_name("a/b/cat.jpg") == "cat.jpg"
    assert plotting.short_name("x" * 40, width=10) == "x" * 9 + "…"


def test_parse_labels():
    assert widgets.parse_labels(" cat,dog ,, person") == ["cat", "dog", "person"]
    assert widgets.parse_labels("") == []


def test_label_box_updates_and_shows_errors(images):
    from lessonlib.zeroshot import check_labels

    def classify(labels):
        labels = check_labels(labels)  # the same checks the real classifier makes
        probs = np.full((len(images), len(labels)), 1.0 / len(labels))
        probs[:, 0] += 0.01
        return probs / probs.sum(1, keepdims=True)

    box = widgets.LabelBox(images, classify, initial="cat, dog")
    assert box.labels == ["cat", "dog"] and box.probs.shape == (3, 2)
    assert box.shown == ["cat", "dog"]  # the box opens with its chart drawn
    assert "best label per image: cat (0.50), cat (0.50), cat (0.50)" in box.message.value
    box.text.value = "sun, moon, star"  # what typing does
    assert box.labels == ["sun", "moon", "star"] and box.error is None
    assert box.shown == ["sun", "moon", "star"]
    assert box.update("cat, cat") is None
    assert "duplicate labels 'cat'" in box.error and "duplicate" in box.message.value
    assert box.text.value == "cat, cat" and box.shown is None  # no chart answers other labels
    assert box.update("") is None and "empty" in box.error
    assert box.update("<b>cat</b>, <b>cat</b>") is None  # the error text is shown as text, not HTML
    assert (
        "<b>" in box.error and "<b>" not in box.message.value and "&lt;b&gt;" in box.message.value
    )
    assert box.labels == ["sun", "moon", "star"]  # an error keeps the last good answer's labels
    assert widgets.parse_labels("بلی، کتا") == ["بلی", "کتا"]  # the Urdu comma separates too


def test_label_box_shows_what_classify_warns_about(images):
    import warnings

    def classify(labels):
        warnings.warn(f"unknown word {labels[0]!r}", UserWarning, stacklevel=2)
        return np.full((len(images), len(labels)), 1.0 / len(labels))

    box = widgets.LabelBox(images, classify)
    assert box.shown is None and box.probs is None  # no initial labels: nothing to show yet
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # shown in the box, not raised or printed
        box.update("crimson, blue", draw=False)
    assert box.warning == "unknown word 'crimson'" and "unknown word" in box.message.value
    assert box.text.value == "crimson, blue"  # the field shows the labels the numbers are for
