"""Shapes World: a seeded, procedural data set of coloured shapes with captions.

Introduced in lesson 01_clip_concepts.

Every offline lesson trains and tests on Shapes World. An image holds one or more objects; each object
has a shape, a colour, a size and a named position on a 3x3 grid. Captions describe the objects with
varying detail, from ``"a circle"`` or ``"a red shape"`` to ``"a small red circle at the top"``.

A fixed list of colour/shape pairs (``HELD_OUT_PAIRS``) never appears in the training split, while every
colour and every shape still does, with other partners. Zero-shot accuracy on those pairs therefore
measures whether a model learned *colour* and *shape* as separate ideas.

Images are drawn by pasting anti-aliased masks (computed once per shape and size) into a NumPy array,
which is why rendering is fast (see ``benchmarks/bench_shapes_world.py``).

Example:
    >>> ds = ShapesWorld(100, split="train", seed=0)
    >>> image, text = ds[0]
    >>> tuple(image.shape)
    (3, 32, 32)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

try:  # torch is a dependency; the fallback only keeps `render`/`caption` usable without it
    from torch.utils.data import Dataset as _Dataset
except ImportError:  # pragma: no cover
    _Dataset = object  # type: ignore[assignment,misc]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 30),
    "purple": (150, 50, 200),
    "orange": (250, 130, 10),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)
# Shapes no caption ever names; training may draw a colour-only caption's object as one of them.
UNNAMED_SHAPES: tuple[str, ...] = ("diamond", "ring")
SIZES: tuple[str, ...] = ("small", "large")
# Named cells of a 3x3 grid, row by row; the phrase is what captions say.
POSITIONS: tuple[str, ...] = (
    "at the top left",
    "at the top",
    "at the top right",
    "on the left",
    "in the middle",
    "on the right",
    "at the bottom left",
    "at the bottom",
    "at the bottom right",
)
# Never in the training split. One pair per colour; every shape keeps at least 4 training colours.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "cross"),
    ("blue", "circle"),
    ("yellow", "square"),
    ("purple", "triangle"),
    ("orange", "circle"),
)
# The zero-shot prompt of lesson 01. Captions write "an orange ..."; the tiny tokenizer reads "a" and
# "an" as the same word, so this one template serves every colour.
SIMPLE_TEMPLATE = "a {colour} {shape}"
SPLITS: tuple[str, ...] = ("train", "test", "held_out", "all")
DETAILS: tuple[str, ...] = ("shape", "colour", "simple", "size", "position", "full", "random")
BACKGROUND_RGB: tuple[int, int, int] = (0, 0, 0)
DEFAULT_IMAGE_SIZE = 32

# Fraction of the image side taken by an object of each size (bounding box of its mask).
_SIZE_FRACTION = {"small": 0.19, "large": 0.31}
# How often `detail="random"` picks each caption form (shape-only and colour-only captions push the
# model to learn colour and shape as separate words, which is what makes held-out pairs work).
RANDOM_DETAIL_WEIGHTS = {
    "shape": 0.15,
    "colour": 0.15,
    "simple": 0.3,
    "size": 0.15,
    "position": 0.1,
    "full": 0.15,
}
_SPLIT_STREAM = {"train": 1, "test": 2, "held_out": 3, "all": 4}


def _check_name(kind: str, name: object, valid: Sequence[str]) -> str:
    if not isinstance(name, str) or name.strip().lower() not in valid:
        raise ValueError(f"unknown {kind} {name!r}: choose one of {', '.join(valid)}")
    return name.strip().lower()


def check_shape(name: str) -> str:
    """Return the shape name normalised, or raise a ValueError that lists the valid shapes.

    Introduced in lesson 01_clip_concepts.

    Example:
        >>> check_shape("Circle")
        'circle'
    """
    return _check_name("shape", name, SHAPES)


def check_colour(name: str) -> str:
    """Return the colour name normalised, or raise a ValueError that lists the valid colours.

    Introduced in lesson 01_clip_concepts.

    Example:
        >>> check_colour("red")
        'red'
    """
    return _check_name("colour", name, COLOURS)


def check_size(name: str) -> str:
    """Return the size name normalised, or raise a ValueError that lists the valid sizes."""
    return _check_name("size", name, SIZES)


def check_position(name: str) -> str:
    """Return the position phrase normalised, or raise a ValueError that lists the valid ones."""
    return _check_name("position", name, POSITIONS)


def check_split(name: str) -> str:
    """Return the split name, or raise a ValueError that lists the valid splits."""
    return _check_name("split", name, SPLITS)


def all_pairs() -> list[tuple[str, str]]:
    """Every (colour, shape) pair, colour-major: the class order of ``class_names()``.

    Example:
        >>> all_pairs()[:2]
        [('red', 'circle'), ('red', 'square')]
    """
    return [(c, s) for c in COLOURS for s in SHAPES]


def seen_pairs() -> list[tuple[str, str]]:
    """The (colour, shape) pairs of the training split (all pairs minus ``HELD_OUT_PAIRS``)."""
    held = set(HELD_OUT_PAIRS)
    return [p for p in all_pairs() if p not in held]


def class_names(template: str = "{colour} {shape}") -> list[str]:
    """Class names over all colour x shape pairs, in ``all_pairs()`` order.

    Introduced in lesson 01_clip_concepts.

    Example:
        >>> class_names()[0], class_names(SIMPLE_TEMPLATE)[0]
        ('red circle', 'a red circle')
    """
    return [template.format(colour=c, shape=s) for c, s in all_pairs()]


def class_index(colour: str, shape: str) -> int:
    """Index of a (colour, shape) pair in ``class_names()``.

    Example:
        >>> class_names()[class_index("red", "square")]
        'red square'
    """
    return COLOURS.index(check_colour(colour)) * len(SHAPES) + SHAPES.index(check_shape(shape))


@dataclass(frozen=True)
class ShapeObject:
    """One object in a Shapes World image.

    ``jitter`` moves the object inside its grid cell (fractions of the cell, in [-1, 1]); ``shade``
    scales its colour a little, so that "red" is a range of reds rather than one RGB value.

    Example:
        >>> ShapeObject("circle", "red", "small", "at the top")
        ShapeObject(shape='circle', colour='red', size='small', position='at the top', jitter=(0.0, 0.0), shade=1.0)
    """

    shape: str
    colour: str
    size: str = "large"
    position: str = "in the middle"
    jitter: tuple[float, float] = (0.0, 0.0)
    shade: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", check_shape(self.shape))
        object.__setattr__(self, "colour", check_colour(self.colour))
        object.__setattr__(self, "size", check_size(self.size))
        object.__setattr__(self, "position", check_position(self.position))

    @property
    def pair(self) -> tuple[str, str]:
        """(colour, shape)."""
        return (self.colour, self.shape)


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` on coordinates u (right) and v (down), both in [-1, 1]."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82)
    if shape == "triangle":  # apex up, base at the bottom
        return (v <= 0.85) & (np.abs(u) <= (v + 1.0) / 1.85)
    if shape == "cross":  # a plus sign
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.3)
    raise ValueError(f"unknown shape {shape!r}: choose one of {', '.join(SHAPES + UNNAMED_SHAPES)}")


@functools.lru_cache(maxsize=256)
def _mask(shape: str, side: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased alpha mask (side x side x 1, float32 in [0, 1]) of a shape, cached."""
    n = side * supersample
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0
    v, u = np.meshgrid(coords, coords, indexing="ij")
    hit = _inside(shape, u, v).astype(np.float32)
    alpha = hit.reshape(side, supersample, side, supersample).mean(axis=(1, 3))
    return alpha[:, :, None]


def _check_image_size(image_size: object) -> int:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16 (pixels), got {image_size!r}")
    return image_size


def render_array(
    objects: Sequence[ShapeObject],
    image_size: int = DEFAULT_IMAGE_SIZE,
    draw_as: Sequence[str] | None = None,
) -> np.ndarray:
    """Draw objects into an (image_size, image_size, 3) uint8 array. See ``render``.

    ``draw_as`` (one name per object, from ``SHAPES + UNNAMED_SHAPES``) draws each object as that shape
    instead; training uses it to show a colour on shapes that no caption names.
    """
    image_size = _check_image_size(image_size)
    if draw_as is not None:
        draw_as = list(draw_as)
        bad = [s for s in draw_as if s not in SHAPES + UNNAMED_SHAPES]
        if bad or len(draw_as) != len(objects):
            raise ValueError(
                f"draw_as {draw_as!r}: give one shape per object, from {', '.join(SHAPES + UNNAMED_SHAPES)}"
            )
    canvas = np.empty((image_size, image_size, 3), dtype=np.float32)
    canvas[:] = BACKGROUND_RGB
    cell = image_size / 3.0
    for k, obj in enumerate(objects):
        if not isinstance(obj, ShapeObject):
            raise TypeError(f"expected ShapeObject items, got {type(obj).__name__}: {obj!r}")
        side = max(3, int(round(_SIZE_FRACTION[obj.size] * image_size)))
        row, col = divmod(POSITIONS.index(obj.position), 3)
        # Jitter moves the centre by up to a quarter of the free space left in the cell.
        free = max(0.0, cell - side) / 2.0
        cx = (col + 0.5) * cell + obj.jitter[0] * free * 0.9
        cy = (row + 0.5) * cell + obj.jitter[1] * free * 0.9
        x0 = int(round(cx - side / 2.0))
        y0 = int(round(cy - side / 2.0))
        x0 = min(max(x0, 0), image_size - side)
        y0 = min(max(y0, 0), image_size - side)
        alpha = _mask(obj.shape if draw_as is None else draw_as[k], side)
        rgb = np.clip(np.asarray(COLOUR_RGB[obj.colour], dtype=np.float32) * obj.shade, 0, 255)
        patch = canvas[y0 : y0 + side, x0 : x0 + side]
        patch += alpha * (rgb - patch)
    return canvas.astype(np.uint8)


def render(objects: Sequence[ShapeObject], image_size: int = DEFAULT_IMAGE_SIZE) -> Image.Image:
    """Draw a Shapes World scene as an RGB PIL image.

    Introduced in lesson 01_clip_concepts.

    Example:
        >>> render([ShapeObject("circle", "red")], image_size=64).size
        (64, 64)
    """
    if isinstance(objects, ShapeObject):
        objects = [objects]
    return Image.fromarray(render_array(objects, image_size))


render_scene = render


def _article(text: str) -> str:
    """``"a red circle"`` but ``"an orange circle"``."""
    return ("an " if text[0] in "aeiou" else "a ") + text


def _phrase(obj: ShapeObject, detail: str) -> str:
    words = {
        "shape": f"{obj.shape}",
        "colour": f"{obj.colour} shape",
        "simple": f"{obj.colour} {obj.shape}",
        "size": f"{obj.size} {obj.colour} {obj.shape}",
        "position": f"{obj.colour} {obj.shape} {obj.position}",
        "full": f"{obj.size} {obj.colour} {obj.shape} {obj.position}",
    }
    if detail not in words:
        raise ValueError(f"unknown detail {detail!r}: choose one of {', '.join(DETAILS)}")
    return _article(words[detail])


def _check_detail_weights(weights: dict[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict(RANDOM_DETAIL_WEIGHTS)
    forms = [d for d in DETAILS if d != "random"]
    bad = [k for k in weights if k not in forms]
    if (
        bad
        or not weights
        or any(not (isinstance(v, (int, float)) and v >= 0) for v in weights.values())
    ):
        raise ValueError(
            f"detail_weights {weights!r}: give non-negative numbers for some of {', '.join(forms)}"
        )
    if sum(weights.values()) <= 0:
        raise ValueError(
            f"detail_weights {weights!r} are all zero: give at least one positive weight"
        )
    return dict(weights)


def caption(
    objects: Sequence[ShapeObject],
    detail: str = "simple",
    rng: np.random.Generator | None = None,
    weights: dict[str, float] | None = None,
) -> str:
    """Describe a scene in words, with the chosen level of detail.

    Introduced in lesson 01_clip_concepts.

    ``detail`` is one of ``DETAILS``: ``"shape"`` ("a circle"), ``"colour"`` ("a red shape"), ``"simple"``
    ("a red circle"), ``"size"`` ("a small red circle"), ``"position"`` ("a red circle at the top"),
    ``"full"`` ("a small red circle at the top") or ``"random"`` (one of these per caption, drawn from
    ``rng`` with ``weights``, default ``RANDOM_DETAIL_WEIGHTS``). Several objects are joined with "and".

    Example:
        >>> caption([ShapeObject("circle", "red", "small", "at the top")], detail="full")
        'a small red circle at the top'
    """
    if isinstance(objects, ShapeObject):
        objects = [objects]
    if not objects:
        raise ValueError("objects is empty: give at least one ShapeObject to describe")
    if detail not in DETAILS:
        raise ValueError(f"unknown detail {detail!r}: choose one of {', '.join(DETAILS)}")
    if detail == "random":
        rng = rng if rng is not None else np.random.default_rng()
        weights = _check_detail_weights(weights)
        names = list(weights)
        p = np.asarray(list(weights.values()), dtype=np.float64)
        detail = names[rng.choice(len(names), p=p / p.sum())]
    return " and ".join(_phrase(obj, detail) for obj in objects)


def _random_scene(
    rng: np.random.Generator,
    main_pairs: Sequence[tuple[str, str]],
    other_pairs: Sequence[tuple[str, str]],
    max_objects: int,
) -> list[ShapeObject]:
    count = 1 if max_objects == 1 else int(rng.integers(1, max_objects + 1))
    cells = rng.permutation(len(POSITIONS))[:count]
    objects = []
    for k in range(count):
        pool = main_pairs if k == 0 else other_pairs
        colour, shape = pool[int(rng.integers(len(pool)))]
        objects.append(
            ShapeObject(
                shape=shape,
                colour=colour,
                size=SIZES[int(rng.integers(len(SIZES)))],
                position=POSITIONS[int(cells[k])],
                jitter=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
                shade=float(rng.uniform(0.85, 1.1)),
            )
        )
    return objects


class ShapesWorld(_Dataset):
    """A seeded Shapes World data set for a torch DataLoader: ``ds[i] -> (image, caption)``.

    Introduced in lesson 01_clip_concepts.

    Args:
        n: number of images.
        split: ``"train"`` (never a held-out pair), ``"test"`` (fresh images of the training pairs),
            ``"held_out"`` (the main object is always one of ``HELD_OUT_PAIRS``) or ``"all"``.
        seed: the same seed and split give the same scenes and captions; splits use separate streams.
        image_size: side of the square images in pixels.
        max_objects: 1 (default) or up to 9 objects per image; the first one is the main object that
            ``label(i)`` reports and the split rule applies to.
        transform: if given, called on the PIL image; else the image is a float CHW tensor in [0, 1].
        detail: caption detail (see ``caption``); ``"random"`` mixes all forms, the default for training.
        detail_weights: with ``detail="random"``, how often each form is drawn, e.g.
            ``{"shape": 1, "colour": 1, "simple": 2}`` (forms left out are never drawn; default
            ``RANDOM_DETAIL_WEIGHTS``).

    Example:
        >>> ds = ShapesWorld(8, split="held_out", seed=1)
        >>> ds.label(0) in HELD_OUT_PAIRS
        True
    """

    def __init__(
        self,
        n: int,
        split: str = "train",
        seed: int = 0,
        image_size: int = DEFAULT_IMAGE_SIZE,
        max_objects: int = 1,
        transform: Callable[[Image.Image], object] | None = None,
        detail: str = "random",
        detail_weights: dict[str, float] | None = None,
    ) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive integer (number of images), got {n!r}")
        self.split = check_split(split)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.image_size = _check_image_size(image_size)
        if not isinstance(max_objects, int) or not 1 <= max_objects <= len(POSITIONS):
            raise ValueError(
                f"max_objects must be an integer from 1 to {len(POSITIONS)}, got {max_objects!r}"
            )
        if detail not in DETAILS:
            raise ValueError(f"unknown detail {detail!r}: choose one of {', '.join(DETAILS)}")
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform must be callable (it receives a PIL image), got {transform!r}"
            )
        self.n, self.seed, self.max_objects = n, seed, max_objects
        self.transform, self.detail = transform, detail

        seen, held = seen_pairs(), list(HELD_OUT_PAIRS)
        main_pairs = {"train": seen, "test": seen, "held_out": held, "all": all_pairs()}[self.split]
        other_pairs = all_pairs() if self.split in ("held_out", "all") else seen
        rng = np.random.default_rng([seed, _SPLIT_STREAM[self.split]])
        self._objects = [_random_scene(rng, main_pairs, other_pairs, max_objects) for _ in range(n)]
        weights = _check_detail_weights(detail_weights)
        self.captions: list[str] = [
            caption(objs, detail=detail, rng=rng, weights=weights) for objs in self._objects
        ]

    def __len__(self) -> int:
        return self.n

    def _index(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"index must be an integer, got {i!r}")
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} is out of range for a ShapesWorld of {self.n} images")
        return int(i) % self.n

    def objects(self, i: int) -> list[ShapeObject]:
        """The objects of image ``i`` (the first is the main object)."""
        return list(self._objects[self._index(i)])

    def label(self, i: int) -> tuple[str, str]:
        """(colour, shape) of the main object of image ``i``."""
        return self._objects[self._index(i)][0].pair

    def labels(self) -> list[tuple[str, str]]:
        """(colour, shape) of every image's main object."""
        return [objs[0].pair for objs in self._objects]

    def class_indices(self) -> np.ndarray:
        """Index into ``class_names()`` of every image's main object."""
        return np.array([class_index(c, s) for c, s in self.labels()], dtype=np.int64)

    def array(self, i: int) -> np.ndarray:
        """Image ``i`` as an (H, W, 3) uint8 array."""
        return render_array(self._objects[self._index(i)], self.image_size)

    def pil(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image."""
        return Image.fromarray(self.array(i))

    def tensor(self, i: int):
        """Image ``i`` as a float CHW tensor in [0, 1] (no transform)."""
        import torch

        return torch.from_numpy(self.array(i)).permute(2, 0, 1).float().div_(255.0)

    def __getitem__(self, i: int):
        i = self._index(i)
        image = self.transform(self.pil(i)) if self.transform is not None else self.tensor(i)
        return image, self.captions[i]

    def __repr__(self) -> str:
        return (
            f"ShapesWorld(n={self.n}, split={self.split!r}, seed={self.seed}, image_size={self.image_size}, "
            f"max_objects={self.max_objects}, detail={self.detail!r})"
        )
