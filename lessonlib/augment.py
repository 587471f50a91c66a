"""Caption-aware augmentations: change a picture only where its caption does not say what changed.

Introduced in lesson 01_clip_concepts.

A caption that names no colour ("a circle") is true of a circle of any colour, so the picture may be
redrawn in a colour no caption ever names (``RecolourWhenColourUnsaid``); the model then cannot learn
"circles are red" from captions that never said so, which is what lets it name colour + shape pairs it
never saw. ``ReshapeWhenShapeUnsaid`` does the same for shapes; ``RepeatTheObject`` draws the object
several times, captioned as such (lesson 04's critics learn to count copies).

Example:
    >>> from lessonlib.data import ShapesWorld
    >>> recoloured = RecolourWhenColourUnsaid(ShapesWorld(8, detail="random"), p=1.0)
    >>> len(recoloured)
    8
"""

from __future__ import annotations

import numpy as np
import torch

# Colours that no caption names, far in hue from the six named ones (brown, a dark orange, is not);
# used only for images whose caption names no colour.
UNNAMED_RGB: dict[str, tuple[int, int, int]] = {
    "grey": (200, 200, 200),
    "cyan": (0, 190, 190),
}


class RecolourWhenColourUnsaid(torch.utils.data.Dataset):
    """Training augmentation: images whose caption names no colour get a colour no caption names.

    Introduced in lesson 01_clip_concepts.

    A caption like "a triangle" says nothing about colour, so the picture may show any colour. Redrawing
    its objects in grey or cyan (``UNNAMED_RGB``, random brightness) shows the image tower
    every shape in more colours than the six named ones, which teaches it to recognise shapes apart from
    colours. No image of a held-out colour + shape pair is added: the new colours are none of the six.

    Example:
        >>> from lessonlib.data import ShapesWorld
        >>> ds = RecolourWhenColourUnsaid(ShapesWorld(50, detail="shape"))
        >>> image, text = ds[0]
        >>> text.split()[-1] in ("circle", "square", "triangle", "cross")
        True
    """

    def __init__(self, dataset, p: float = 1.0, seed: int = 0, palette=None) -> None:
        from lessonlib.data import COLOURS

        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        palette = UNNAMED_RGB if palette is None else palette
        clash = sorted(set(palette) & set(COLOURS))
        if clash or not palette:
            raise ValueError(
                f"palette {list(palette)!r} must be non-empty and name no caption colour ({', '.join(COLOURS)})"
            )
        self.dataset, self.p, self.seed = dataset, p, seed
        self.colours = torch.tensor(list(palette.values()), dtype=torch.float32) / 255.0
        from lessonlib.urdu import COLOUR_WORDS_UR

        self.colour_words = set(COLOURS) | COLOUR_WORDS_UR  # English and Urdu captions

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, text = self.dataset[i]
        if self.p == 0.0 or self.colour_words & set(text.split()):
            return image, text
        rng = np.random.default_rng([self.seed, int(i)])
        if rng.random() >= self.p:
            return image, text
        # On the black background a pixel is coverage x colour, so its brightest channel gives coverage.
        coverage = image.max(dim=0).values
        coverage = coverage / coverage.max().clamp_min(1e-6)
        colour = self.colours[int(rng.integers(len(self.colours)))] * float(rng.uniform(0.6, 1.0))
        return coverage[None] * colour[:, None, None], text


class ReshapeWhenShapeUnsaid(torch.utils.data.Dataset):
    """Training augmentation: images whose caption names no shape show a shape no caption names.

    Introduced in lesson 01_clip_concepts.

    The mirror image of ``RecolourWhenColourUnsaid``: a caption like "a red shape" says nothing about the
    shape, so its object is redrawn as a diamond or a ring (``data.UNNAMED_SHAPES``) in its own colour.
    Each colour is then seen on more outlines than the shapes it is named with. Needs a ``ShapesWorld``
    (it redraws from ``objects(i)``). No held-out colour + shape pair is drawn.

    Example:
        >>> from lessonlib.data import ShapesWorld
        >>> ds = ReshapeWhenShapeUnsaid(ShapesWorld(20, detail="colour"))
        >>> ds[0][1].endswith("shape")
        True
    """

    def __init__(self, world, p: float = 1.0, seed: int = 0) -> None:
        from lessonlib.data import SHAPES

        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        if not hasattr(world, "objects") or not hasattr(world, "image_size"):
            raise TypeError(
                f"ReshapeWhenShapeUnsaid needs a ShapesWorld, got {type(world).__name__}"
            )
        self.world, self.p, self.seed = world, p, seed
        from lessonlib.urdu import SHAPE_WORDS_UR

        self.shape_words = set(SHAPES) | SHAPE_WORDS_UR  # English and Urdu captions

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, i: int):
        from lessonlib.data import UNNAMED_SHAPES, render_array

        image, text = self.world[i]
        if (
            self.p == 0.0
            or self.shape_words & set(text.split())
            or not isinstance(image, torch.Tensor)
        ):
            return image, text
        rng = np.random.default_rng([self.seed, int(i), 1])
        if rng.random() >= self.p:
            return image, text
        objects = self.world.objects(i)
        draw_as = [UNNAMED_SHAPES[int(rng.integers(len(UNNAMED_SHAPES)))] for _ in objects]
        array = render_array(objects, self.world.image_size, draw_as=draw_as)
        return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0), text


class RepeatTheObject(torch.utils.data.Dataset):
    """Training augmentation: some scenes show their main object two or three times, and say so.

    Introduced in lesson 04_vqgan_clip.

    A CLIP that never saw a shape drawn twice has no reason to prefer one red circle to three, so it
    lets VQGAN+CLIP paint copies everywhere. Here, with probability ``p``, one or two copies of the
    main object (same colour and shape, random size and free position) are added, up to
    ``max_objects`` in all (captions stay within the tokenizer's 32 tokens), and the caption names
    every object ("a red circle and a red circle"). "a red circle" alone then means one.

    Example:
        >>> from lessonlib.data import ShapesWorld
        >>> ds = RepeatTheObject(ShapesWorld(20, seed=0), p=1.0)
        >>> len(ds.objects(0)) > 1 and " and " in ds[0][1]
        True
    """

    def __init__(self, world, p: float = 0.5, seed: int = 0, max_objects: int = 3) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        if not hasattr(world, "objects") or not hasattr(world, "image_size"):
            raise TypeError(f"RepeatTheObject needs a ShapesWorld, got {type(world).__name__}")
        if not isinstance(max_objects, int) or max_objects < 2:
            raise ValueError(f"max_objects must be an integer >= 2, got {max_objects!r}")
        self.world, self.p, self.seed, self.max_objects = world, p, seed, max_objects
        self.image_size = world.image_size

    def __len__(self) -> int:
        return len(self.world)

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(i), 2])

    def objects(self, i: int):
        from lessonlib.data import POSITIONS, SIZES, ShapeObject

        objects = self.world.objects(i)
        rng = self._rng(i)
        if self.p == 0.0 or rng.random() >= self.p:
            return objects
        extra = min(int(rng.integers(1, 3)), self.max_objects - len(objects))
        if extra < 1:  # the scene is full already
            return objects
        taken = {obj.position for obj in objects}
        free = [pos for pos in POSITIONS if pos not in taken]
        main = objects[0]
        for j in rng.permutation(len(free))[:extra]:
            objects.append(
                ShapeObject(
                    main.shape,
                    main.colour,
                    size=SIZES[int(rng.integers(len(SIZES)))],
                    position=free[int(j)],
                    jitter=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
                    shade=float(rng.uniform(0.85, 1.1)),
                )
            )
        return objects

    def __getitem__(self, i: int):
        from lessonlib.data import caption, render_array

        objects = self.objects(i)
        if len(objects) == len(self.world.objects(i)):
            return self.world[i]
        text = caption(objects, detail="random", rng=np.random.default_rng([self.seed, int(i), 3]))
        array = render_array(objects, self.image_size)
        return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0), text
