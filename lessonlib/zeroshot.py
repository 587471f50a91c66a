"""Zero-shot classification: class names + prompt templates become a classifier, no training.

Introduced in lesson 02_zero_shot_classification.

The whole idea fits in three lines (``zero_shot_classifier``): write each class name into every template,
embed the prompts with the text tower, average the unit-length embeddings per class and normalise again.
An image is then classified by cosine similarity to those class vectors, scaled by the model's
temperature and pushed through a softmax (``classify``). Images and prompts are embedded by
``lessonlib.embed`` (the one embedding path every lesson shares); the scores live in ``lessonlib.metrics``.

Template sets:

* ``"single"``: one template, ``"a photo of a {}."``
* ``"clip7"``: the 7 templates the CLIP authors recommend (their ImageNet prompt-engineering notebook)
* ``"imagenet80"``: the 80 ImageNet templates of the CLIP paper, as shipped by open_clip
* ``"shapes"``: an ensemble written for Shapes World, in the tiny model's vocabulary
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from lessonlib import embed

SINGLE_TEMPLATE = ("a photo of a {}.",)


def _open_clip_templates(attr: str) -> tuple[str, ...]:
    # open_clip keeps the templates as lambdas; calling each with "{}" gives back the format string.
    from open_clip import zero_shot_metadata

    return tuple(t("{}") for t in getattr(zero_shot_metadata, attr))


CLIP_TEMPLATES_7 = _open_clip_templates("SIMPLE_IMAGENET_TEMPLATES")
IMAGENET_TEMPLATES_80 = _open_clip_templates("OPENAI_IMAGENET_TEMPLATES")
# Shapes World captions read "a [size] <colour> <shape> [at the <place>]": an ensemble over the parts of
# the caption a class name leaves out (size and place), the way CLIP's templates cover photo styles.
SHAPES_TEMPLATES = (
    "a {}",
    "a small {}",
    "a large {}",
    "a {} at the top",
    "a {} at the bottom",
    "a {} on the left",
    "a {} on the right",
)
TEMPLATE_SETS = {
    "single": SINGLE_TEMPLATE,
    "clip7": CLIP_TEMPLATES_7,
    "imagenet80": IMAGENET_TEMPLATES_80,
    "shapes": SHAPES_TEMPLATES,
}


# ------------------------------------------------------------------------------------- checking inputs


def get_templates(templates: str | Sequence[str] = "single") -> tuple[str, ...]:
    """Return a tuple of templates from a set name, one template string, or a list of them.

    Introduced in lesson 02_zero_shot_classification.

    Every template must contain ``{}`` exactly once, where the class name goes.

    Example:
        >>> len(get_templates("clip7")), get_templates("a {} in the sky")
        (7, ('a {} in the sky',))
    """
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        if "{" not in templates:
            raise ValueError(
                f"template {templates!r} is neither a template set nor contains '{{}}': choose one of "
                f"{', '.join(TEMPLATE_SETS)} or write a template such as 'a photo of a {{}}.'"
            )
        templates = (templates,)
    templates = tuple(templates)
    if not templates:
        raise ValueError(
            f"template list is empty: give at least one template such as 'a photo of a {{}}.' "
            f"or a set name ({', '.join(TEMPLATE_SETS)})"
        )
    for t in templates:
        if not isinstance(t, str):
            raise TypeError(f"template {t!r} is a {type(t).__name__}: give strings with '{{}}'")
        if t.count("{}") != 1:
            raise ValueError(
                f"template {t!r} must contain '{{}}' exactly once (where the class name goes), "
                f"found {t.count('{}')}: e.g. 'a photo of a {{}}.'"
            )
        try:
            t.format("x")
        except (IndexError, KeyError, ValueError) as err:
            raise ValueError(
                f"template {t!r} has other braces besides '{{}}' ({err}): write '{{{{' for a literal brace"
            ) from err
    return templates


def check_labels(class_names: Iterable[str]) -> list[str]:
    """Return the labels as a list after checking them: non-empty strings, at least one, no duplicates.

    Introduced in lesson 02_zero_shot_classification.

    Surrounding spaces are removed. Duplicates (ignoring case) are an error because two identical
    classes split their probability and make accuracy meaningless.

    Example:
        >>> check_labels([" cat", "dog "])
        ['cat', 'dog']
    """
    if isinstance(class_names, str):
        raise TypeError(
            f"class names must be a list of strings, got the single string {class_names!r}: "
            f"write [{class_names!r}] or split it, e.g. {class_names.split(',')!r}"
        )
    labels = []
    for name in class_names:
        if not isinstance(name, str):
            raise TypeError(f"class name {name!r} is a {type(name).__name__}: give strings")
        if not name.strip():
            raise ValueError("a class name is empty: remove it or write a word such as 'cat'")
        labels.append(name.strip())
    if not labels:
        raise ValueError("label list is empty: give at least one label, e.g. ['cat', 'dog']")
    counts = Counter(label.lower() for label in labels)
    dupes = [label for label, n in counts.items() if n > 1]
    if dupes:
        raise ValueError(
            f"duplicate labels {', '.join(repr(d) for d in dupes)}: give each class once "
            "(two copies of one class would share its probability)"
        )
    return labels


def build_prompts(
    class_names: Iterable[str], templates: str | Sequence[str] = "single"
) -> list[str]:
    """Every class name written into every template, class by class.

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> build_prompts(["cat", "dog"], ["a {}", "a photo of a {}"])
        ['a cat', 'a photo of a cat', 'a dog', 'a photo of a dog']
    """
    labels = check_labels(class_names)
    return [t.format(label) for label in labels for t in get_templates(templates)]


# ------------------------------------------------------------------------------------- the classifier


def zero_shot_classifier(
    model, tokenizer, class_names: Sequence[str], templates: str | Sequence[str] = "single"
) -> torch.Tensor:
    """Class weights ``[D, C]``: per class, the mean of its unit-length prompt embeddings, renormalised.

    Introduced in lesson 02_zero_shot_classification. Same layout and numbers as
    ``open_clip.build_zero_shot_classifier`` (checked in ``tests/test_zeroshot.py``).

    Example:
        >>> W = zero_shot_classifier(model, tokenizer, ["cat", "dog"], "clip7")  # doctest: +SKIP
        >>> W.shape  # doctest: +SKIP
        torch.Size([512, 2])
    """
    labels = check_labels(class_names)
    templates = get_templates(templates)
    prompts = [t.format(label) for label in labels for t in templates]
    emb = embed.embed_texts(model, tokenizer, prompts)  # [C*T, D], unit length, eval mode, no grad
    emb = emb.reshape(len(labels), len(templates), -1).mean(dim=1)  # the ensemble: mean per class
    emb = emb / emb.norm(dim=-1, keepdim=True)
    return emb.T


def logit_scale(model) -> float:
    """The model's learned temperature as a multiplier (``exp(logit_scale)``, capped at 100 as in CLIP).

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> logit_scale(model)  # doctest: +SKIP
        100.0
    """
    return float(model.logit_scale.detach().exp().clamp(max=100.0))


def classify(
    image_features: torch.Tensor, weights: torch.Tensor, scale: float = 100.0
) -> torch.Tensor:
    """Probabilities ``[N, C]``: softmax over classes of ``scale`` x cosine similarity.

    Introduced in lesson 02_zero_shot_classification.

    ``image_features`` are unit-length ``[N, D]`` (``lessonlib.embed.embed_images``), ``weights``
    are ``[D, C]`` (``zero_shot_classifier``).

    Example:
        >>> probs = classify(embed.embed_images(model, ds), W, logit_scale(model))  # doctest: +SKIP
    """
    if image_features.ndim != 2 or weights.ndim != 2 or image_features.shape[1] != weights.shape[0]:
        raise ValueError(
            f"image features {tuple(image_features.shape)} and class weights {tuple(weights.shape)} do "
            "not fit: give features [N, D] and weights [D, C] from the same model"
        )
    return (scale * image_features.float() @ weights.float()).softmax(dim=-1)


class ZeroShotClassifier:
    """A classifier made from words: labels + templates in, probabilities out.

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> clf = ZeroShotClassifier(model, tokenizer, ["cat", "dog"], templates="clip7")  # doctest: +SKIP
        >>> clf.predict_proba(images, preprocess)  # [N, 2], rows sum to 1  # doctest: +SKIP
    """

    def __init__(self, model, tokenizer, class_names, templates="single"):
        self.model = model
        self.class_names = check_labels(class_names)
        self.templates = get_templates(templates)
        self.weights = zero_shot_classifier(model, tokenizer, self.class_names, self.templates)
        self.scale = logit_scale(model)

    def predict_proba(self, images, preprocess=None, batch_size: int = 256) -> torch.Tensor:
        """``[N, C]`` probabilities for images (anything ``embed.embed_images`` takes) or unit features.

        Introduced in lesson 02_zero_shot_classification.

        Example:
            >>> clf.predict_proba(ds).shape  # doctest: +SKIP
            torch.Size([1000, 24])
        """
        if isinstance(images, torch.Tensor) and images.ndim == 2:
            features = images
        else:
            features = embed.embed_images(self.model, images, preprocess, batch_size)
        return classify(features, self.weights, self.scale)

    def predict(self, images, preprocess=None) -> list[str]:
        """The most probable label for each image.

        Introduced in lesson 02_zero_shot_classification.

        Example:
            >>> clf.predict(photos, preprocess)  # doctest: +SKIP
            ['cat', 'person']
        """
        return [self.class_names[i] for i in self.predict_proba(images, preprocess).argmax(-1)]


# ------------------------------------------------------------------------------------------ the photos

# The scikit-image photos of OpenAI's "Interacting with CLIP" notebook, with a one-line description each,
# plus matplotlib's photo of Grace Hopper. All ship inside those packages: no download.
PHOTO_DESCRIPTIONS = {
    "page": "a page of text about segmentation",
    "chelsea": "a facial photo of a tabby cat",
    "astronaut": "a portrait of an astronaut with the American flag",
    "rocket": "a rocket standing on a launchpad",
    "motorcycle_right": "a red motorcycle standing in a garage",
    "camera": "a person looking at a camera on a tripod",
    "horse": "a black-and-white silhouette of a horse",
    "coffee": "a cup of coffee on a saucer",
    "grace_hopper": "a portrait of a woman in a navy uniform",
}


def example_photos() -> tuple[list, list[str]]:
    """The 8 scikit-image photos and grace_hopper.jpg as RGB PIL images, with their names.

    Introduced in lesson 02_zero_shot_classification. Each is read with ``lessonlib.images.load_image``
    (grayscale photos such as ``camera`` become RGB).

    Example:
        >>> photos, names = example_photos()
        >>> len(photos), names[1]
        (9, 'chelsea')
    """
    import matplotlib.cbook
    import skimage

    from lessonlib.images import load_image

    folder = Path(skimage.data_dir)
    files = {p.stem: p for p in folder.iterdir() if p.suffix in (".png", ".jpg")}
    files["grace_hopper"] = Path(
        matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    )
    names = list(PHOTO_DESCRIPTIONS)
    missing = [n for n in names if n not in files]
    if missing:
        raise FileNotFoundError(
            f"photos {missing} are not in this scikit-image/matplotlib install ({folder}): "
            "install scikit-image>=0.22 and matplotlib>=3.7"
        )
    return [load_image(files[n]) for n in names], names
