"""Figures that several lessons share: similarity heat-map, image gallery, top-k bars, confusion matrix,
search results.

Introduced in lesson 02_zero_shot_classification.

Every function takes plain inputs (lists of images, NumPy arrays or tensors, lists of strings), draws
with matplotlib, gives every figure a title and axis labels, and returns the matplotlib object it drew on
so a lesson can add to it. Images may be PIL images, paths, HxWx3 arrays or CxHxW tensors in [0, 1]
(anything ``lessonlib.images.load_image`` reads).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def _as_image(x):
    from lessonlib.images import load_image

    return load_image(x)


def _check_images(images, what: str = "images") -> list:
    images = list(images)
    if not images:
        raise ValueError(f"{what} is empty: give at least one image")
    return [_as_image(im) for im in images]


def plot_similarity(sim, images, captions: Sequence[str], ax=None, title: str | None = None):
    """Cosine similarity of captions (rows) and images (columns) as a heat-map, images drawn below.

    Introduced in lesson 02_zero_shot_classification. The layout follows OpenAI's "Interacting with
    CLIP" notebook: each cell shows its value, so the best caption of an image is easy to spot.

    ``sim`` is ``[len(captions), len(images)]`` (text features @ image features.T).

    Example:
        >>> ax = plot_similarity(text_f @ image_f.T, images, captions)  # doctest: +SKIP
    """
    plt = _plt()
    sim = _as_array(sim)
    images = _check_images(images)
    captions = list(captions)
    if sim.ndim != 2 or sim.shape != (len(captions), len(images)):
        raise ValueError(
            f"similarity has shape {sim.shape}, but there are {len(captions)} captions and "
            f"{len(images)} images: give sim as [captions, images] (text @ image.T)"
        )
    if ax is None:
        width = max(6.0, 1.2 * len(images) + 3.0)
        _, ax = plt.subplots(figsize=(width, 0.55 * len(captions) + 2.5))
    n_img, n_cap = len(images), len(captions)
    im = ax.imshow(sim, vmin=float(sim.min()), vmax=float(sim.max()), cmap="viridis", aspect="auto")
    ax.set_yticks(range(n_cap), captions)
    ax.set_xticks([])
    for i, img in enumerate(images):  # thumbnails in the band below the matrix
        ax.imshow(img, extent=(i - 0.5, i + 0.5, n_cap + 0.9, n_cap - 0.1), origin="upper")
    middle = (sim.max() + sim.min()) / 2
    for y in range(n_cap):
        for x in range(n_img):
            colour = "black" if sim[y, x] > middle else "white"
            ax.text(x, y, f"{sim[y, x]:.2f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xlim(-0.5, n_img - 0.5)
    ax.set_ylim(n_cap + 0.9, -0.5)
    ax.set_xlabel("images")
    ax.set_ylabel("captions")
    ax.set_title(title or "Cosine similarity between text and image features")
    ax.figure.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="cosine similarity")
    for side in ("left", "top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    return ax


def show_gallery(
    images,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    size: float = 2.2,
    suptitle: str | None = None,
):
    """Images in a grid with optional titles; returns the figure.

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> fig = show_gallery([ds.pil(i) for i in range(8)], [ds.captions[i] for i in range(8)])  # doctest: +SKIP
    """
    plt = _plt()
    images = _check_images(images)
    if titles is not None:
        titles = list(titles)
        if len(titles) != len(images):
            raise ValueError(
                f"{len(titles)} titles for {len(images)} images: give one title per image"
            )
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False
    )
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k])
            if titles is not None:
                ax.set_title(titles[k], fontsize=9)
    fig.suptitle(suptitle or f"{len(images)} images")
    fig.tight_layout()
    return fig


def short_name(name: str, width: int = 28) -> str:
    """A file name short enough for a caption: the last part of a path, cut to ``width`` characters.

    Introduced in lesson 03_image_search.

    Example:
        >>> short_name("photos/holidays/a_very_long_file_name_from_a_camera.jpg", width=12)
        'a_very_long…'
    """
    name = Path(name).name if ("/" in name or os.sep in name) else name
    return name if len(name) <= width else name[: width - 1] + "…"


def show_hits(images, hits, query: str = "", ncols: int | None = None, size: float = 2.2):
    """Search results as a gallery: one panel per hit titled with its rank, cosine score and name.

    Introduced in lesson 03_image_search. ``hits`` are objects with ``rank``, ``score`` and ``name``
    (``lessonlib.search.Hit``), ``images`` their pictures in the same order. Panels shrink so that the
    figure is at most 10 inches wide; names are shown with spaces for ``_``, wrapped to the panel (at most 3 lines).
    Returns the figure.

    Example:
        >>> fig = show_hits([index.image(h.position) for h in hits], hits, "a cat")  # doctest: +SKIP
    """
    import textwrap

    hits = list(hits)
    if len(hits) == 0:
        raise ValueError("no hits to show: run index.search(...) first")
    ncols = ncols or -(-len(hits) // -(-len(hits) // 6))  # at most 6 a row, rows evenly filled
    size = min(size, 10.0 / ncols)
    chars = max(10, int(size * 12))  # about what fits on one line at 9 pt

    def caption(name: str) -> str:
        words = Path(name).name if ("/" in name or os.sep in name) else name
        lines = textwrap.wrap(words.replace("_", " "), chars) or [""]
        return "\n".join(lines[:3]) + ("…" if len(lines) > 3 else "")

    titles = [f"#{hit.rank}  cos {hit.score:.3f}\n{caption(hit.name)}" for hit in hits]
    fig = show_gallery(
        images,
        titles,
        ncols=ncols,
        size=size,
        suptitle=f"top {len(hits)} results for {query or 'the query'}",
    )
    lines = max(title.count("\n") + 1 for title in titles)
    nrows = -(-len(hits) // ncols)
    width, height = fig.get_size_inches()
    fig.set_size_inches(
        width, height + nrows * 0.15 * lines
    )  # room for the titles above each image
    fig.tight_layout()
    return fig


def plot_topk_bars(
    images,
    probs,
    class_names: Sequence[str],
    k: int = 5,
    true_labels: Sequence[str] | None = None,
    ncols: int = 2,
    title: str | None = None,
):
    """Per image: the picture, and beside it the ``k`` most probable labels as horizontal bars.

    Introduced in lesson 02_zero_shot_classification (the figure of OpenAI's CLIP notebook). A bar is
    green when its label is the image's true label (``true_labels``), else blue.

    Example:
        >>> fig = plot_topk_bars(images, probs, ["cat", "dog", "person"], k=3)  # doctest: +SKIP
    """
    plt = _plt()
    images = _check_images(images)
    probs = _as_array(probs)
    class_names = list(class_names)
    if probs.shape != (len(images), len(class_names)):
        raise ValueError(
            f"probs has shape {probs.shape}, expected ({len(images)}, {len(class_names)}) = "
            "(images, class names)"
        )
    if true_labels is not None and len(true_labels) != len(images):
        raise ValueError(
            f"{len(true_labels)} true labels for {len(images)} images: give one per image"
        )
    k = max(1, min(int(k), len(class_names)))
    ncols = max(1, min(ncols, len(images)))
    nrows = -(-len(images) // ncols)
    legend = true_labels is not None
    fig, axes = plt.subplots(
        nrows, 2 * ncols, figsize=(min(10.0, 5.0 * ncols), 2.0 * nrows + 0.6 + 0.3 * legend),
        squeeze=False, gridspec_kw={"width_ratios": [1, 2.2] * ncols},
    )  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        ax_img, ax_bar = axes[r, 2 * c], axes[r, 2 * c + 1]
        ax_img.imshow(img)
        if true_labels is not None:  # over the bars: over the picture it would hit their labels
            ax_bar.set_title(f"true: {true_labels[i]}", fontsize=9, loc="left")
        order = np.argsort(-probs[i])[:k]
        labels = [class_names[j] for j in order]
        colours = [
            "tab:green" if true_labels is not None and lab == true_labels[i] else "tab:blue"
            for lab in labels
        ]
        ax_bar.axis("on")
        y = np.arange(k)
        ax_bar.barh(y, probs[i, order], color=colours)
        ax_bar.set_yticks(y, labels, fontsize=9)
        ax_bar.invert_yaxis()
        ax_bar.set_xlim(0, 1)
        ax_bar.set_xlabel("probability")
        ax_bar.tick_params(axis="x", labelsize=8)
        for s in ("top", "right"):
            ax_bar.spines[s].set_visible(False)
    fig.suptitle(title or f"Top-{k} zero-shot predictions")
    if legend:  # the bar colours carry meaning: say which
        from matplotlib.patches import Patch

        handles = [
            Patch(color="tab:green", label="true class"),
            Patch(color="tab:blue", label="other class"),
        ]
        fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07 if legend else 0, 1, 1))
    return fig


def plot_confusion(
    cm,
    class_names: Sequence[str],
    ax=None,
    normalize: bool = True,
    title: str | None = None,
    annotate: bool | None = None,
    rows: Sequence[int] | None = None,
):
    """Confusion matrix (rows: true class, columns: predicted class) as a heat-map.

    Introduced in lesson 02_zero_shot_classification. With ``normalize`` each row shows the share of
    that class's images given each prediction, so the diagonal is per-class accuracy. ``rows`` keeps only
    those true classes (e.g. the held-out ones: the other rows hold no images) and every predicted
    column; each shown row's own class is outlined. Cells are annotated (non-zero ones) when at most
    12 rows are shown, unless ``annotate`` says otherwise.

    Example:
        >>> ax = plot_confusion(confusion_matrix(y, pred, 24), class_names(), rows=[2, 7])  # doctest: +SKIP
    """
    plt = _plt()
    cm = _as_array(cm)
    class_names = list(class_names)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix has shape {cm.shape}, but there are {n} class names")
    rows = list(range(n)) if rows is None else [int(r) for r in rows]
    if not rows or not all(0 <= r < n for r in rows):
        raise ValueError(f"rows {rows} must be class indices from 0 to {n - 1}")
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    values = values[rows]
    if ax is None:
        width = min(10.0, max(5.5, 0.36 * n + 3.0))
        cell = (width - 3.0) / n  # inches per cell: the labels take about 3 in
        _, ax = plt.subplots(figsize=(width, min(width - 1, cell * len(rows) + 2.3)))
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), [class_names[r] for r in rows], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(
        title
        or ("Confusion matrix (share of each true class)" if normalize else "Confusion matrix")
    )
    if len(rows) < n:  # the diagonal is gone: outline each row's own class instead
        from matplotlib.patches import Rectangle

        for y, r in enumerate(rows):
            ax.add_patch(
                Rectangle((r - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="tab:orange", lw=2,
                          label="the true class" if y == 0 else None)
            )  # fmt: skip
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    if annotate if annotate is not None else len(rows) <= 12:
        for y in range(len(rows)):
            for x in range(n):
                if values[y, x] == 0 and len(rows) < n:
                    continue  # a sparse slice reads better with its zeros left blank
                text = f"{values[y, x]:.2f}" if normalize else f"{int(values[y, x])}"
                colour = "white" if values[y, x] > 0.6 * values.max() else "black"
                ax.text(x, y, text, ha="center", va="center", fontsize=8, color=colour)
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    cax = make_axes_locatable(ax).append_axes("right", size=0.15, pad=0.1)  # as tall as the matrix
    ax.figure.colorbar(im, cax=cax, label="share" if normalize else "count")
    return ax


# Noto Nastaliq Urdu (SIL Open Font License, lessonlib/fonts/OFL.txt), shipped with lessonlib so that
# Urdu figures draw the same on a laptop, Binder and Colab (none of which need have an Urdu font).
URDU_FONT = Path(__file__).resolve().parent / "fonts" / "NotoNastaliqUrdu-Regular.ttf"


def urdu_font(size: float | None = None):
    """The ``FontProperties`` of the course's Urdu font (Noto Nastaliq Urdu), for ``fontproperties=``.

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> ax.set_title(urdu_text("نیلی تکون"), fontproperties=urdu_font(14))  # doctest: +SKIP
    """
    from matplotlib import font_manager

    if not URDU_FONT.exists():
        raise FileNotFoundError(f"{URDU_FONT} is missing: reinstall lessonlib (pip install -e .)")
    if str(URDU_FONT) not in {f.fname for f in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(str(URDU_FONT))
    return font_manager.FontProperties(fname=str(URDU_FONT), size=size)


def complex_text_layout() -> bool:
    """Whether this matplotlib shapes complex scripts itself (3.11 and newer, built with libraqm):
    joins Urdu letters and lays the text out right to left."""
    import matplotlib.ft2font

    return bool(getattr(matplotlib.ft2font, "__libraqm_version__", None))


def urdu_text(text: str) -> str:
    """Urdu ``text`` as matplotlib must be given it to draw it right.

    Introduced in lesson 02_zero_shot_classification.

    Where matplotlib lays out complex scripts itself (``complex_text_layout()``), the text as it is.
    Older matplotlib draws each letter in its isolated form, left to right: then the letters are
    joined (arabic-reshaper) and put in display order (python-bidi); without those two packages a
    warning says so and the text comes back unchanged (drawn as separate letters in the wrong order).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}: {text!r}")
    if text.isascii() or complex_text_layout():
        return text
    try:
        import arabic_reshaper
        from bidi import get_display
    except ImportError:
        import warnings

        warnings.warn(
            "this matplotlib cannot join Urdu letters or lay them out right to left: upgrade to "
            "matplotlib 3.11+ or `pip install arabic-reshaper python-bidi`",
            stacklevel=2,
        )
        return text
    return get_display(arabic_reshaper.reshape(text))
