"""The pieces VQGAN+CLIP's loop is assembled from: prompts, cutouts, an image prior, the image size.

Introduced in lesson 04_vqgan_clip.

``lessonlib.generate`` reads as the five-step loop; what it calls on the way lives here:

* ``parse_prompts``: the usual ``"text|text:weight|text:-weight"`` syntax, into ``Prompt`` objects;
* ``Cutouts``: random crops of the decoded image (scale, offset, rotation, flip, noise, jitter),
  resized to CLIP's input size, all made by one ``grid_sample``;
* ``ink_penalty``: an extra loss on the whole image (a prior for "one object on black");
* ``cosine_distance``: ``1 - cosine``, the alternative to the loop's spherical distance;
* ``check_size``: the image size rounded to the VQGAN's downsampling factor, with a warning;
* ``check_init_codes``: a code grid to start from, checked against the VQGAN and the size.

Example:
    >>> parse_prompts("a red circle|a blue square:0.5|text:-1")
    [Prompt(text='a red circle', weight=1.0), Prompt(text='a blue square', weight=0.5), Prompt(text='text', weight=-1.0)]
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_NUMBERISH = re.compile(r"^[-+0-9.eE]*$")


# ------------------------------------------------------------------------------------------ prompts


@dataclass(frozen=True)
class Prompt:
    """One text prompt and its weight (negative: steer away from it)."""

    text: str
    weight: float = 1.0


def parse_prompts(spec: str | Sequence[str]) -> list[Prompt]:
    """Parse prompts in the usual VQGAN+CLIP syntax ``"text|text:weight|text:-weight"``.

    Introduced in lesson 04_vqgan_clip.

    A ``:`` followed by one word is a weight and must be a number; a ``:`` followed by several words
    stays part of the text ("a photo: at night"). At least one weight must be positive.

    Example:
        >>> parse_prompts("a large red circle|a square:-0.5")
        [Prompt(text='a large red circle', weight=1.0), Prompt(text='a square', weight=-0.5)]
    """
    if isinstance(spec, str):
        parts = spec.split("|")
    elif isinstance(spec, Sequence) and all(isinstance(p, str) for p in spec):
        parts = list(spec)
    else:
        raise TypeError(
            f"prompts must be a string like 'a red circle|a blue square:0.5' or a list of strings, "
            f"got {type(spec).__name__}"
        )
    if not parts or not any(p.strip() for p in parts):
        raise ValueError(
            f"prompt {spec!r} is empty: give at least one text, e.g. 'a large red circle'"
        )
    prompts = []
    for part in parts:
        text, weight = part.strip(), 1.0
        if not text:
            raise ValueError(
                f"empty prompt between '|' in {spec!r}: write 'a|b:0.5', with text on both sides"
            )
        head, colon, tail = text.rpartition(":")
        tail_s = tail.strip()
        if colon and (" " not in tail_s or _NUMBERISH.match(tail_s)):
            try:
                weight = float(tail_s)
            except ValueError:
                raise ValueError(
                    f"malformed weight {tail_s!r} in prompt {part.strip()!r}: write 'text:weight' "
                    "with a number, e.g. 'a red circle:0.5' or 'a blue square:-1'"
                ) from None
            text = head.strip()
            if not text:
                raise ValueError(
                    f"prompt {part.strip()!r} has a weight but no text: write 'text:{tail_s}'"
                )
        if not math.isfinite(weight) or weight == 0:
            raise ValueError(
                f"weight {weight!r} in prompt {part.strip()!r} must be a non-zero finite number "
                "(positive: draw this; negative: avoid this)"
            )
        prompts.append(Prompt(text, weight))
    if not any(p.weight > 0 for p in prompts):
        raise ValueError(
            f"every weight in {spec!r} is negative: give at least one prompt with a positive weight "
            "(what to draw), e.g. 'a red circle|a square:-1'"
        )
    return prompts


# ------------------------------------------------------------------------------------------ cutouts


@dataclass
class Cutouts:
    """Random crops of an image, resized to CLIP's input size, with light augmentations.

    Introduced in lesson 04_vqgan_clip.

    All crops of a call come from one ``grid_sample`` (an affine grid per crop: scale, offset,
    rotation, horizontal flip), so making 32 of them costs about as much as one resize.

    Example:
        >>> cut = Cutouts(cut_size=16)
        >>> cut(torch.rand(1, 3, 32, 32), 4, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3, 16, 16])
    """

    cut_size: int
    scale: tuple[float, float] = (0.85, 1.0)  # crop side / image side
    rotate_degrees: float = 10.0
    flip: bool = True
    noise: float = 0.1  # per-crop noise level drawn from [0, noise]
    jitter: float = 0.05  # brightness/saturation jitter amplitude

    def __call__(self, image: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = image.shape
        if b != 1:
            raise ValueError(f"cutouts take one image (batch 1), got a batch of {b}")

        def rand(*shape):
            return torch.rand(*shape, generator=generator)

        lo, hi = self.scale
        s = lo + (hi - lo) * rand(n)
        # Offsets keep most of the crop inside the image: at scale s the centre can move by 1 - s.
        tx, ty = (rand(n) * 2 - 1) * (1 - s), (rand(n) * 2 - 1) * (1 - s)
        angle = (rand(n) * 2 - 1) * math.radians(self.rotate_degrees)
        flip = torch.where(rand(n) < 0.5, -1.0, 1.0) if self.flip else torch.ones(n)
        cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
        ).to(image)
        grid = F.affine_grid(theta, [n, c, self.cut_size, self.cut_size], align_corners=False)
        # Downscaling by more than 2x would alias: pre-blur with an area resize first.
        src = image
        if min(h, w) * lo > 2 * self.cut_size:
            side = 2 * self.cut_size
            src = F.interpolate(image, size=(side, side), mode="area")
        cuts = F.grid_sample(
            src.expand(n, -1, -1, -1),
            grid,
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
        if self.jitter:
            bright = 1 + (rand(n, 1, 1, 1).to(image) * 2 - 1) * self.jitter
            grey = cuts.mean(1, keepdim=True)
            sat = 1 + (rand(n, 1, 1, 1).to(image) * 2 - 1) * self.jitter
            cuts = (grey + (cuts - grey) * sat) * bright
        if self.noise:
            level = rand(n, 1, 1, 1).to(image) * self.noise
            cuts = cuts + level * torch.randn(cuts.shape, generator=generator).to(image)
        return cuts


# ---------------------------------------------------------------------------- a distance, a loss


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - cosine`` between directions; broadcasts like ``x - y``. The simpler alternative to
    ``lessonlib.generate.spherical_distance`` (``GenerateConfig(distance="cosine")``).

    Introduced in lesson 04_vqgan_clip. 0 for the same direction, 1 at right angles, 2 for opposite
    ones; its slope is 0 at the optimum, where the spherical distance's is not.

    Example:
        >>> float(cosine_distance(torch.tensor([1.0, 0]), torch.tensor([0.0, 2])))
        1.0
    """
    return 1 - F.cosine_similarity(x, y, dim=-1)


# ------------------------------------------------------------------------------- image loss, size


def ink_penalty(weight: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ``image_loss`` for ``generate``: ``weight`` x the mean brightness of the image.

    Introduced in lesson 04_vqgan_clip. A prior for pictures of one object on black (Shapes World):
    every bright pixel costs a little, so CLIP's pull has to pay for each blob it paints.

    Example:
        >>> float(ink_penalty(2.0)(torch.ones(1, 3, 4, 4)))
        2.0
    """
    if not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(f"ink weight must be a non-negative number, got {weight!r}")

    def loss(image: torch.Tensor) -> torch.Tensor:
        return image.amax(1).mean() * weight

    return loss


def check_size(size: int | Sequence[int], factor: int) -> tuple[int, int]:
    """(width, height) rounded to multiples of the VQGAN's downsampling factor, with a warning.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> check_size(64, 16)
        (64, 64)
    """
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    ):
        raise ValueError(f"size {size!r} must be an int or (width, height) of ints, e.g. 256")
    if min(size) < 1:
        raise ValueError(f"size {tuple(size)!r} must be positive, e.g. {16 * factor}")
    rounded = tuple(max(factor, int(round(s / factor)) * factor) for s in size)
    if rounded != tuple(size):
        warnings.warn(
            f"image size {tuple(size)} is not a multiple of the VQGAN's downsampling factor {factor}: "
            f"using {rounded} (each code is {factor}x{factor} pixels)",
            UserWarning,
            stacklevel=3,
        )
    return rounded  # type: ignore[return-value]


def check_init_codes(codes, vqgan, wh: tuple[int, int]) -> torch.Tensor:
    """``init_codes`` for a ``wh`` (width, height) picture checked and shaped (1, h / f, w / f), long.

    Introduced in lesson 04_vqgan_clip. Refuses floats, a wrong grid and codes outside the codebook.

    Example:
        >>> from lessonlib.vqgan import load_vqgan
        >>> check_init_codes(torch.zeros(8, 8, dtype=torch.long), load_vqgan(), (32, 32)).shape
        torch.Size([1, 8, 8])
    """
    w, h = wh
    f = vqgan.factor
    want = (1, h // f, w // f)
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex():
        raise ValueError(
            f"init_codes must be an integer tensor of shape {want}, got {type(codes).__name__}"
            + (f" of dtype {codes.dtype}" if isinstance(codes, torch.Tensor) else "")
        )
    if codes.dim() == 2:
        codes = codes[None]
    if tuple(codes.shape) != want:
        raise ValueError(
            f"init_codes has shape {tuple(codes.shape)}, but a {w}x{h} image with this factor-{f} "
            f"VQGAN needs {want}"
        )
    n = vqgan.config.n_embed
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= n):
        raise ValueError(
            f"init_codes must lie in [0, {n - 1}] (this VQGAN has {n} codes), got values from "
            f"{int(codes.min())} to {int(codes.max())}"
        )
    return codes.long()
