"""One way to embed images and texts with a CLIP: batched, eval mode, no gradients, unit length.

Introduced in lesson 02_zero_shot_classification.

Zero-shot classification (lesson 02), the image index (lesson 03), the training-time evaluation
(lesson 01), the reranking of generated pictures and the prompts of VQGAN+CLIP (lesson 04) all embed
through ``embed_images`` and ``embed_texts``, so two lessons that ask the same model about the same
inputs get the same numbers. Each uses the model's own preprocessing (pass ``preprocess``, the second
value ``load_clip`` returns) and its own tokenizer.

Example:
    >>> from lessonlib.models import load_tiny_clip
    >>> model, preprocess, tokenizer = load_tiny_clip()
    >>> texts = embed_texts(model, tokenizer, ["a red circle", "a blue square"])
    >>> texts.shape[0], round(float(texts[0].norm()), 4)
    (2, 1.0)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from lessonlib.tokenizer import UnknownWordWarning

# The normalisation of OpenAI's CLIP, used by open_clip's ViT-B-32 and by the course's tiny CLIPs.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def model_device(model) -> torch.device:
    """The device of a model's first parameter (the CPU for a model without parameters).

    Example:
        >>> model_device(torch.nn.Linear(2, 2))
        device(type='cpu')
    """
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def evaluating(model):
    """Put ``model`` in eval mode (no dropout, no batch-norm updates) and no-grad for a block, then
    restore its training flag.

    Example:
        >>> m = torch.nn.Dropout().train()
        >>> with evaluating(m):
        ...     m.training
        False
        >>> m.training
        True
    """
    # Switching modes walks every submodule: only do it when the model is training (it rarely is, and a
    # text query's embedding is a few milliseconds).
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        if was_training:
            model.train()


# ------------------------------------------------------------------------------------------- texts


def _context_length(tokenizer, model=None) -> int | None:
    return getattr(tokenizer, "context_length", None) or getattr(model, "context_length", None)


def token_length(tokenizer, text: str) -> int | None:
    """Number of tokens ``text`` needs, start and end tokens included (None if it cannot be told).

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> token_length(tokenizer, 'a red circle')  # <sot> a red circle <eot>  # doctest: +SKIP
        5
    """
    # open_clip's SimpleTokenizer and lessonlib's WordTokenizer: encode() gives the ids without the
    # start and end tokens.
    if hasattr(tokenizer, "encode") and (
        hasattr(tokenizer, "sot_token_id") or hasattr(tokenizer, "sot_id")
    ):
        return len(tokenizer.encode(text)) + 2
    # open_clip's HFTokenizer wraps a transformers tokenizer.
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is not None and callable(hf):
        return len(hf(text)["input_ids"])
    if hasattr(tokenizer, "token_length"):
        return int(tokenizer.token_length(text))
    try:
        ids = tokenizer([text], context_length=4096)
    except TypeError:
        return None
    return int((ids != 0).sum())


def tokenize(tokenizer, texts: Sequence[str], model=None) -> torch.Tensor:
    """Tokenize ``texts``; a prompt longer than the model's context is truncated with a warning.

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> tokens = tokenize(tokenizer, ["a red circle"])  # doctest: +SKIP
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("no texts given: pass at least one prompt")
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"prompt {text!r} is empty or not a string: give a few words")
    context = _context_length(tokenizer, model)
    warned = False
    if context:
        for text in texts:
            n = token_length(tokenizer, text)
            if n is not None and n > context:
                short = text if len(text) <= 60 else text[:57] + "..."
                warnings.warn(
                    f"prompt {short!r} has {n} tokens, more than the model's context of {context}: "
                    f"it is truncated to the first {context} tokens; shorten it to keep every word",
                    UserWarning,
                    stacklevel=3,
                )
                warned = True
    if not warned:
        return tokenizer(texts)
    # Truncation was said once above; the tokenizer's own truncation warning would repeat it. Any other
    # warning it gives (unknown words) is passed on.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokens = tokenizer(texts)
    for w in caught:
        if issubclass(w.category, UnknownWordWarning):
            warnings.warn(w.message, w.category, stacklevel=3)
    return tokens


def embed_texts(
    model,
    tokenizer,
    texts: str | Sequence[str],
    batch_size: int = 256,
    normalize: bool = True,
    to_cpu: bool = True,
) -> torch.Tensor:
    """Text embeddings ``[len(texts), D]`` in float32 (unit length when ``normalize``), in batches.

    Introduced in lesson 02_zero_shot_classification.

    The model runs in eval mode without gradients. The result is on the CPU, or on the model's device
    with ``to_cpu=False`` (VQGAN+CLIP keeps its prompt embeddings beside the model).

    Example:
        >>> embed_texts(model, tokenizer, ["a red circle"]).shape  # doctest: +SKIP
        torch.Size([1, 64])
    """
    device = model_device(model)
    tokens = tokenize(tokenizer, texts, model)
    with evaluating(model):
        out = [
            model.encode_text(tokens[i : i + batch_size].to(device)).float()
            for i in range(0, len(tokens), batch_size)
        ]
    features = torch.cat(out)
    if normalize:
        features = F.normalize(features, dim=-1)
    return features.cpu() if to_cpu else features


# ------------------------------------------------------------------------------------------ images


def clip_input_spec(clip_model, preprocess=None) -> tuple[int, tuple, tuple]:
    """(input side, mean, std) of a CLIP model, read from its preprocess transform when given.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> clip_input_spec(model, preprocess)[0]  # doctest: +SKIP
        32
    """
    visual = getattr(clip_model, "visual", None)
    size = getattr(visual, "image_size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD))
    for t in getattr(preprocess, "transforms", []):
        if type(t).__name__ == "Normalize":
            mean, std = tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    return size, mean, std


def pixels_to_clip_input(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """Resize a batch of pictures in [0, 1] ``[N, 3, H, W]`` to ``size`` and normalise it as CLIP expects.

    Introduced in lesson 04_vqgan_clip. Differentiable, so generation can push gradients through it.

    Example:
        >>> pixels_to_clip_input(torch.zeros(2, 3, 64, 64), 32, OPENAI_MEAN, OPENAI_STD).shape
        torch.Size([2, 3, 32, 32])
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(
            f"images of shape {shape}: give a batch [N, 3, H, W] with values in [0, 1]"
        )
    x = images
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    mean = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def load_folder(folder) -> tuple[list, list[Path]]:
    """All images in ``folder`` (sorted by name), skipping anything that is not an image with a warning.

    Introduced in lesson 02_zero_shot_classification.

    Returns ``(images, paths)``. Hidden files are ignored; every other file that cannot be read as an
    image (a ``notes.txt``, a damaged JPEG) is skipped with a warning that names it.

    Example:
        >>> images, paths = load_folder("photos")  # doctest: +SKIP
    """
    from lessonlib.images import load_images

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder '{folder}' does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images, paths, _ = load_images(files)
    if not images:
        raise ValueError(f"folder '{folder}' holds no readable images: add .jpg or .png files")
    return images, paths


def _as_batches(images, preprocess, batch_size: int):
    """Yield preprocessed image batches from a tensor, a dataset of (tensor, ...) or a list of images."""
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4:
            raise ValueError(
                f"image tensor has shape {tuple(images.shape)}: give a batch [N, 3, H, W] "
                "that is already preprocessed, or a list of images"
            )
        if len(images) == 0:
            raise ValueError("no images given: the tensor holds 0 images")
        for i in range(0, len(images), batch_size):
            yield images[i : i + batch_size]
        return
    if isinstance(images, (str, Path)):
        images, _ = load_folder(images)
    if isinstance(images, torch.utils.data.Dataset) and not isinstance(images, list):
        loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False)
        for batch in loader:
            yield batch[0] if isinstance(batch, (list, tuple)) else batch
        return
    from lessonlib.images import load_image

    images = list(images)
    if not images:
        raise ValueError("no images given: pass at least one image, path or tensor")
    if preprocess is None:
        raise ValueError(
            "images given as pictures or paths need the model's preprocess: "
            "pass preprocess= (the second value load_clip returns)"
        )
    for i in range(0, len(images), batch_size):
        yield torch.stack([preprocess(load_image(x)) for x in images[i : i + batch_size]])


def embed_images(
    model,
    images,
    preprocess=None,
    batch_size: int = 256,
    normalize: bool = True,
    to_cpu: bool = True,
) -> torch.Tensor:
    """Image embeddings ``[N, D]`` in float32 (unit length when ``normalize``), in batches.

    Introduced in lesson 02_zero_shot_classification.

    ``images`` may be a preprocessed tensor ``[N, 3, H, W]``, a dataset whose items are
    ``(tensor, ...)`` (such as ``ShapesWorld``), a list of images/paths/arrays (then ``preprocess`` is
    needed), or a folder path (non-images in it are skipped with a warning). The model runs in eval mode
    without gradients.

    Example:
        >>> embed_images(model, ds).shape  # doctest: +SKIP
        torch.Size([1000, 64])
    """
    device = model_device(model)
    with evaluating(model):
        out = [
            model.encode_image(batch.to(device)).float()
            for batch in _as_batches(images, preprocess, batch_size)
        ]
    if not out:  # an empty dataset yields no batch at all (torch.cat would fail without saying why)
        raise ValueError(f"no images given: the {type(images).__name__} holds 0 images")
    features = torch.cat(out)
    if normalize:
        features = F.normalize(features, dim=-1)
    return features.cpu() if to_cpu else features
