"""The image index's fast preprocessing: per-image steps in Python, ``Normalize`` once per batch.

Introduced in lesson 03_image_search.

Same pixels as the model's own ``preprocess`` (tested), a little faster for small models, where the
per-image Python overhead dominates (see BENCHMARKS.md).

Example:
    >>> from torchvision import transforms as T
    >>> per_image, per_batch = split_preprocess(T.Compose([T.ToTensor(), T.Normalize([0.5], [0.5])]))
    >>> type(per_batch).__name__
    'Normalize'
"""

from __future__ import annotations

import numpy as np
import torch


def split_preprocess(preprocess) -> tuple:
    """Split an open_clip/torchvision ``Compose`` that ends in ``Normalize`` into (per image, per batch).

    Introduced in lesson 03_image_search. ``Normalize`` gives the same numbers on a batch (N, C, H, W)
    as on each image, but one call per batch instead of one per image saves about a tenth of the
    indexing time of a small model (see BENCHMARKS.md). Anything else is returned as
    ``(preprocess, None)``: applied per image, unchanged.

    Example:
        >>> from torchvision import transforms as T
        >>> per_image, per_batch = split_preprocess(T.Compose([T.ToTensor(), T.Normalize([0.5], [0.5])]))
        >>> type(per_batch).__name__
        'Normalize'
    """
    try:
        from torchvision.transforms import Compose, Normalize
    except ImportError:  # pragma: no cover - torchvision comes with open_clip
        return preprocess, None
    if (
        type(preprocess) is Compose
        and len(preprocess.transforms) >= 2
        and type(preprocess.transforms[-1]) is Normalize
        and not preprocess.transforms[-1].inplace
    ):
        head = Compose(preprocess.transforms[:-1])
        side = _input_side(head)
        per_image = head if side is None else _SkipIdentityResize(head, side)
        return per_image, preprocess.transforms[-1]
    return preprocess, None


def _input_side(head) -> int | None:
    """The square input side if ``head`` is open_clip's Resize(int) -> CenterCrop -> to-RGB -> ToTensor."""
    names = [type(t).__name__ for t in head.transforms]
    if names != ["Resize", "CenterCrop", "MaybeConvertMode", "MaybeToTensor"] and names != [
        "Resize",
        "CenterCrop",
        "ToTensor",
    ]:
        return None
    resize, crop = head.transforms[0], head.transforms[1]
    side = resize.size if isinstance(resize.size, int) else None
    if isinstance(resize.size, (list, tuple)) and len(resize.size) == 1:
        side = resize.size[0]
    if side is None or tuple(crop.size) != (side, side):
        return None
    return side


class _SkipIdentityResize:
    """Per-image preprocessing that skips Resize and CenterCrop for an RGB image already at the input size.

    For such an image both are identities (PIL returns a copy for a same-size resize), so only the
    uint8 -> float conversion is left: the same numbers as the full pipeline (tested), at a fraction of
    its per-image Python overhead, which dominates for a model as small as the tiny CLIP.
    """

    def __init__(self, head, side: int):
        self.head, self.side = head, side

    def __call__(self, img):
        if getattr(img, "mode", None) == "RGB" and img.size == (self.side, self.side):
            array = np.array(img, dtype=np.uint8, copy=True)
            return torch.from_numpy(array).permute(2, 0, 1).float().div(255)
        return self.head(img)
