"""An independent judge of generated Shapes World images: is it "a {size} {colour} {shape}"?

Introduced in lesson 04_vqgan_clip.

The judge never uses a CLIP model (the one that guided generation would happily agree with itself).
It reads pixels only:

* **object**: the largest connected blob of pixels brighter than the black background;
* **colour**: the blob's core colour, matched to ``data.COLOUR_RGB`` after allowing for brightness
  (Shapes World shades each colour by 0.85-1.1);
* **shape and size**: each Shapes World mask (circle, square, triangle, cross) is drawn, anti-aliased,
  at every plausible side and offset over the blob, and compared with the pixels' coverage by the sum
  of squared differences; the best fit gives the shape, and its side gives the size (Shapes World
  draws small and large objects 0.19 and 0.31 of the image side; the threshold sits halfway).

Example:
    >>> from lessonlib.data import ShapeObject, render
    >>> judge(render([ShapeObject("triangle", "blue", "large")]), "a large blue triangle").ok
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from lessonlib import data

# A pixel is "object" if its brightest channel exceeds this (background is 0, the darkest colour,
# green shaded to 0.85, peaks at ~145).
FOREGROUND_THRESHOLD = 60
SMALL_LARGE_SPLIT = (0.19 + 0.31) / 2  # bounding-box side / image side


@dataclass(frozen=True)
class Verdict:
    """What the judge saw, what the prompt asked for, and whether they agree."""

    colour: str | None
    shape: str | None
    size: str | None
    wanted: tuple[str, str, str]  # (size, colour, shape)
    area_fraction: float
    shape_fit: float  # 1 = the shape's mask fits the pixels exactly

    @property
    def colour_ok(self) -> bool:
        return self.colour == self.wanted[1]

    @property
    def shape_ok(self) -> bool:
        return self.shape == self.wanted[2]

    @property
    def size_ok(self) -> bool:
        return self.size == self.wanted[0]

    @property
    def ok(self) -> bool:
        """True only if colour, shape and size all match the prompt."""
        return self.colour_ok and self.shape_ok and self.size_ok

    @property
    def seen(self) -> str:
        """What the judge saw, e.g. ``"small yellow ?"`` ("?" where it could not tell)."""
        return " ".join(v or "?" for v in (self.size, self.colour, self.shape))

    def __str__(self) -> str:
        mark = "right" if self.ok else "wrong"
        return f"saw '{self.seen}', asked for '{' '.join(self.wanted)}': {mark}"


def parse_object_prompt(prompt: str) -> tuple[str, str, str]:
    """``"a large red circle"`` -> ``("large", "red", "circle")``; the size may be left out (large).

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> parse_object_prompt("a small green cross")
        ('small', 'green', 'cross')
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(
            f"prompt {prompt!r} is empty: give one like 'a large red circle' (size, colour, shape)"
        )
    words = re.findall(r"[a-z]+", prompt.lower())
    sizes = [w for w in words if w in data.SIZES]
    colours = [w for w in words if w in data.COLOURS]
    shapes = [w for w in words if w in data.SHAPES]
    if len(colours) != 1 or len(shapes) != 1 or len(sizes) > 1:
        raise ValueError(
            f"prompt {prompt!r} does not name one object: write 'a [size] colour shape' with size "
            f"in {', '.join(data.SIZES)}, colour in {', '.join(data.COLOURS)}, shape in "
            f"{', '.join(data.SHAPES)}"
        )
    return (sizes[0] if sizes else "large", colours[0], shapes[0])


def _to_array(image) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL image, an HWC uint8 array or a CHW float tensor/array in [0, 1]."""
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().float().numpy()
    if (
        isinstance(image, np.ndarray)
        and image.ndim == 3
        and image.shape[0] == 3
        and image.shape[2] != 3
    ):
        image = image.transpose(1, 2, 0)
    if isinstance(image, np.ndarray) and image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    from lessonlib.images import load_image

    return np.asarray(load_image(image))


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))


def _colour_of(pixels: np.ndarray) -> str:
    """Nearest Shapes World colour to the mean of ``pixels`` (N x 3), allowing a brightness factor."""
    mean = pixels.astype(np.float64).mean(axis=0)
    best, best_err = None, np.inf
    for name, rgb in data.COLOUR_RGB.items():
        ref = np.asarray(rgb, dtype=np.float64)
        scale = np.clip(mean @ ref / (ref @ ref), 0.6, 1.3)  # least-squares shade, kept plausible
        err = np.linalg.norm(mean - scale * ref)
        if err < best_err:
            best, best_err = name, err
    return best


def _fit_template(alpha: np.ndarray, blob: np.ndarray, image_side: int) -> tuple[str, int, float]:
    """Best (shape, side, score) of Shapes World masks drawn over the blob's neighbourhood.

    ``alpha`` is the image's coverage in [0, 1] (brightness over the object's peak brightness). Every
    shape's anti-aliased mask, at every plausible side and offset, is compared with ``alpha`` by the
    sum of squared differences; ``score`` is 1 - SSE / (sum of alpha^2 + template^2) (1 = perfect).
    """
    rows, cols = np.nonzero(blob)
    pad = 2
    y0, y1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, alpha.shape[0])
    x0, x1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, alpha.shape[1])
    crop = alpha[y0:y1, x0:x1] * blob_dilated(blob)[y0:y1, x0:x1]
    h, w = crop.shape
    extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    sides = range(max(3, extent - 2), min(max(h, w), extent + 2) + 1)
    best = (None, 0, -np.inf)
    energy = float((crop**2).sum())
    for shape in data.SHAPES:
        for side in sides:
            if side > h or side > w:
                continue
            t = data._mask(shape, side)[:, :, 0]
            t_energy = float((t**2).sum())
            for dy in range(h - side + 1):
                for dx in range(w - side + 1):
                    window = crop[dy : dy + side, dx : dx + side]
                    # SSE over the whole crop = energy outside the window + SSE inside it.
                    inside = float(((window - t) ** 2).sum())
                    outside = energy - float((window**2).sum())
                    score = 1.0 - (inside + outside) / (energy + t_energy)
                    if score > best[2]:
                        best = (shape, side, score)
    return best


def blob_dilated(blob: np.ndarray) -> np.ndarray:
    """The blob grown by one pixel (keeps its anti-aliased rim, drops other blobs)."""
    from scipy import ndimage

    return ndimage.binary_dilation(blob, iterations=1).astype(np.float32)


def judge(image, prompt: str) -> Verdict:
    """Judge one image against a prompt of the form "a {size} {colour} {shape}".

    Introduced in lesson 04_vqgan_clip.

    ``image`` may be a PIL image, an (H, W, 3) uint8 array or a (3, H, W) tensor/array in [0, 1].

    Example:
        >>> from lessonlib.data import ShapeObject, render
        >>> str(judge(render([ShapeObject("circle", "red", "small")]), "a small red circle"))
        "saw 'small red circle', asked for 'small red circle': right"
    """
    wanted = parse_object_prompt(prompt)
    arr = _to_array(image)
    bright = arr.max(axis=2).astype(np.float32)
    mask = bright > FOREGROUND_THRESHOLD
    if mask.sum() < 3:
        return Verdict(None, None, None, wanted, 0.0, 0.0)
    blob = _largest_blob(mask)
    peak = float(np.percentile(bright[blob], 90))
    alpha = np.clip(bright / max(peak, 1.0), 0.0, 1.0)
    # Colour from the blob's core (nearly full coverage), away from dark anti-aliased edges.
    core = blob & (alpha > 0.8)
    colour = _colour_of(arr[core] if core.sum() else arr[blob])
    shape, side, score = _fit_template(alpha, blob, arr.shape[0])
    size = "large" if side / arr.shape[0] > SMALL_LARGE_SPLIT else "small"
    return Verdict(colour, shape, size, wanted, float(blob.mean()), float(score))


def object_prompts(n: int = 10, seed: int = 0) -> list[str]:
    """``n`` distinct prompts "a {size} {colour} {shape}", drawn with a seed (lesson 04's test set).

    Example:
        >>> object_prompts(2, seed=0)[0].startswith("a ")
        True
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    combos = [(s, c, sh) for s in data.SIZES for c in data.COLOURS for sh in data.SHAPES]
    if n > len(combos):
        raise ValueError(f"n={n} is more than the {len(combos)} distinct prompts")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(combos), size=n, replace=False)
    return [f"a {combos[i][0]} {combos[i][1]} {combos[i][2]}" for i in pick]


def judge_dataset(n: int = 200, seed: int = 0, image_size: int = 32) -> dict:
    """Judge accuracy on real Shapes World renders (one object): the judge's own error rate.

    Example:
        >>> judge_dataset(20)["all"] > 0.9
        True
    """
    ds = data.ShapesWorld(n, split="all", seed=seed, image_size=image_size, max_objects=1)
    verdicts = []
    for i in range(n):
        obj = ds.objects(i)[0]
        verdicts.append(judge(ds.array(i), f"a {obj.size} {obj.colour} {obj.shape}"))
    return _rates(verdicts)


def _rates(verdicts: list[Verdict]) -> dict:
    n = max(len(verdicts), 1)
    return {
        "colour": sum(v.colour_ok for v in verdicts) / n,
        "shape": sum(v.shape_ok for v in verdicts) / n,
        "size": sum(v.size_ok for v in verdicts) / n,
        "all": sum(v.ok for v in verdicts) / n,
    }


def judge_reconstructions(model, n: int = 300, seed: int = 0) -> dict:
    """How often a VQGAN's reconstructions of one-object scenes keep colour, shape and size.

    Introduced in lesson 04_vqgan_clip.
    """
    import torch

    size = model.config.resolution
    ds = data.ShapesWorld(n, split="all", seed=seed, image_size=size, max_objects=1)
    x = torch.stack([ds.tensor(i) for i in range(n)]) * 2 - 1
    with torch.no_grad():
        rec = model(x)[0].add(1).div(2).clamp(0, 1)
    verdicts = []
    for i in range(n):
        obj = ds.objects(i)[0]
        verdicts.append(judge(rec[i], f"a {obj.size} {obj.colour} {obj.shape}"))
    return {f"judge_{k}": round(v, 3) for k, v in _rates(verdicts).items()}
