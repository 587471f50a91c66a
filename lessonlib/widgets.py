"""ipywidgets boxes used in lessons; each also works headless (nbval, a script) through plain calls.

Introduced in lesson 02_zero_shot_classification (``LabelBox``); ``search_box`` comes in lesson
03_image_search.

A box is built from ordinary functions: ``LabelBox.update(text)`` does exactly what typing into the box
does (and setting ``search_box(...).children[0].value`` what typing a query does), so a notebook's
self-check cell can call it and test the result, and nothing depends on a browser.

Example:
    >>> parse_labels("cat, dog")
    ['cat', 'dog']
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotations only: importing widgets stays cheap
    from lessonlib.search import Hit, ImageIndex


def parse_labels(text: str) -> list[str]:
    """Comma-separated labels as typed by a student: ``"cat, dog,,person "`` -> ``['cat', 'dog', 'person']``.

    Introduced in lesson 02_zero_shot_classification. The Urdu comma ``،`` separates labels too.

    Example:
        >>> parse_labels("cat, dog,,person ")
        ['cat', 'dog', 'person']
    """
    if not isinstance(text, str):
        raise TypeError(f"labels must be typed as text, got {type(text).__name__}")
    return [part.strip() for part in text.replace("،", ",").split(",") if part.strip()]


class LabelBox:
    """Type labels, see the zero-shot probabilities for a few images.

    Introduced in lesson 02_zero_shot_classification.

    ``classify(labels) -> probs`` is any function that maps a list of labels to a ``[N, len(labels)]``
    probability array for the box's N images (e.g. a ``ZeroShotClassifier`` built on the fly). The box
    opens with the chart for ``initial``. Bad input (an empty list, a duplicate label, a template without
    ``{}``) is shown in the box as the error text, not raised, so a student can fix it and try again;
    warnings (e.g. a word the tiny tokenizer does not know) are shown under the box too. What the box
    shows is always for the labels in its text field: ``update(text)`` writes ``text`` there.

    Example:
        >>> box = LabelBox(images, classify, "cat, dog")  # doctest: +SKIP
        >>> box.widget  # displays the box in Jupyter  # doctest: +SKIP
    """

    def __init__(
        self,
        images: Sequence,
        classify: Callable[[list[str]], object],
        initial: str = "",
        titles: Sequence[str] | None = None,
        k: int = 5,
    ):
        import ipywidgets as widgets

        from lessonlib.images import load_image

        self.images = [load_image(im) for im in images]
        if not self.images:
            raise ValueError("LabelBox needs at least one image")
        self.classify = classify
        self.titles = list(titles) if titles is not None else None
        self.k = k
        self.labels: list[str] = []
        self.probs = None
        self.error: str | None = None
        self.warning: str | None = None  # what classify() warned about, e.g. unknown words
        self.shown: list[str] | None = None  # the labels of the chart on screen (None: no chart)
        self._syncing = False
        self.text = widgets.Text(
            value=initial,
            description="labels:",
            placeholder="comma-separated, e.g. cat, dog, person",
            continuous_update=False,
            layout=widgets.Layout(width="70%"),
        )
        self.button = widgets.Button(description="classify", button_style="primary")
        self.message = widgets.HTML()
        self.output = widgets.Output()
        self.widget = widgets.VBox(
            [widgets.HBox([self.text, self.button]), self.message, self.output]
        )
        self.button.on_click(lambda _: self.update(self.text.value))
        self.text.observe(self._typed, names="value")
        if initial:  # the box opens with an answer, not with an empty space
            self.update(initial)

    def _typed(self, change) -> None:
        if not self._syncing:  # update() writing its text into the field is not typing
            self.update(change["new"])

    def update(self, text: str, draw: bool = True):
        """Classify with the labels in ``text``; returns the probabilities (or None after an error).

        Introduced in lesson 02_zero_shot_classification.

        Example:
            >>> box.update('cat, dog').shape  # doctest: +SKIP
            (4, 2)
        """
        import numpy as np

        if isinstance(text, str) and text != self.text.value:  # show the labels the numbers are for
            self._syncing = True
            try:
                self.text.value = text
            finally:
                self._syncing = False
        try:
            labels = parse_labels(text)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                probs = self.classify(labels)
            probs = probs.detach().cpu().numpy() if hasattr(probs, "detach") else np.asarray(probs)
        except (ValueError, TypeError) as err:
            self.error, self.probs, self.warning = str(err), None, None
            self.message.value = f"<span style='color:#b00'>&#9888; {html.escape(str(err))}</span>"
            self._clear()  # an old chart under a new error would answer labels no longer typed
            return None
        notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        self.error, self.labels, self.probs = None, labels, probs
        self.warning = " ".join(dict.fromkeys(notes)) or None
        best = [f"{labels[j]} ({probs[i, j]:.2f})" for i, j in enumerate(probs.argmax(axis=1))]
        message = html.escape("best label per image: " + ", ".join(best))
        if self.warning:
            message += f"<br><span style='color:#a50'>&#9888; {html.escape(self.warning)}</span>"
        self.message.value = message
        if draw:
            self._draw()
        else:
            self._clear()
        return probs

    def _clear(self) -> None:
        self.output.clear_output()
        self.shown = None

    def _draw(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        from lessonlib.plotting import plot_topk_bars

        self.output.clear_output(wait=True)
        with self.output:
            fig = plot_topk_bars(
                self.images,
                self.probs,
                self.labels,
                k=self.k,
                title="Zero-shot probabilities for your labels",
            )
            display(fig)
            plt.close(fig)
        self.shown = list(self.labels)

    def _ipython_display_(self):  # so that a bare `box` in a cell shows the widget
        from IPython.display import display

        display(self.widget)


def search_box(index: ImageIndex, k: int = 8, value: str = "", thumb: int = 96):
    """A text box with a live result gallery under it (ipywidgets): type a query, see the top ``k``.

    Introduced in lesson 03_image_search. Returns a ``VBox(text, gallery)`` that already shows the
    results for ``value`` (so a lesson run top to bottom shows a filled gallery), and updates them as
    you type. ``box.hits`` holds the latest results (so a test or a later cell can read them). A query
    the index refuses (e.g. an empty one) shows the error text instead of the gallery.

    Example:
        >>> box = search_box(index, k=6)  # doctest: +SKIP
        >>> box.children[0].value = "a red circle"  # what typing does  # doctest: +SKIP
    """
    import ipywidgets as widgets

    text = widgets.Text(
        value=value,
        placeholder="type a query, e.g. a red circle",
        description="search:",
        continuous_update=True,
        layout=widgets.Layout(width="60%"),
    )
    gallery = widgets.HTML()
    box = widgets.VBox([text, gallery])
    box.hits = []

    def update(_change=None) -> None:
        query = text.value
        if not query.strip():
            box.hits = []
            gallery.value = "<i>type a few words to search the images</i>"
            return
        try:
            box.hits = index.search(query, k=k)
        except ValueError as err:
            box.hits = []
            gallery.value = f"<i>{html.escape(str(err))}</i>"
            return
        gallery.value = (
            f"<div style='font-size:12px'>top {len(box.hits)} results for "
            f"<b>{html.escape(query)}</b></div>" + _gallery_html(index, box.hits, thumb)
        )

    text.observe(update, names="value")
    update()
    return box


def _gallery_html(index: ImageIndex, hits: Sequence[Hit], thumb: int) -> str:
    """The hits as inline PNG thumbnails with rank, score and name (HTML for an ipywidgets.HTML)."""
    import base64
    import io

    from PIL import Image

    from lessonlib.plotting import short_name

    cells = []
    for hit in hits:
        img = index.image(hit.position)
        # Small images (Shapes World is 32 px) are enlarged with crisp pixels, photos shrunk smoothly.
        resample = Image.NEAREST if img.width < thumb else Image.BILINEAR
        img = img.resize((thumb, max(1, round(thumb * img.height / img.width))), resample)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = base64.b64encode(buf.getvalue()).decode()
        cells.append(
            f'<figure style="display:inline-block;margin:4px;text-align:center">'
            f'<img src="data:image/png;base64,{data}" width="{thumb}"/>'
            f'<figcaption style="font-size:10px;width:{thumb}px;overflow-wrap:anywhere">'
            f"#{hit.rank} cos {hit.score:.3f}<br/>"
            f"{html.escape(short_name(hit.name, width=48).replace('_', ' '))}</figcaption></figure>"
        )
    return "".join(cells)
