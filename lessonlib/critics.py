"""Critics for VQGAN+CLIP: what says how well a picture matches the prompts.

Introduced in lesson 04_vqgan_clip.

``lessonlib.generate`` talks to every critic through one interface:

* ``critic.encode_image(pixels)``: image embeddings (float32) of a batch already resized and
  normalised for CLIP; gradients flow back into ``pixels``;
* ``critic.embed_texts(tokenizer, texts)``: unit-length prompt embeddings on the critic's device, no
  gradients (through ``lessonlib.embed.embed_texts``);
* ``critic.dtype``: the dtype its image tower computes in when ``generate`` runs with
  ``precision="auto"`` (bfloat16 for an open_clip ViT where that is faster, see ``lessonlib.speed``);
* ``critic.visual``: the image tower, from which the input size and normalisation are read.

Three critics implement it: ``CLIPCritic`` (one open_clip CLIP; ``as_critic(model)`` wraps a plain
model once), ``CLIPEnsemble`` (several CLIPs that must all agree) and ``ImageGuide`` (a CLIP's image
tower with its prompts embedded up front, so the text tower's memory can be freed).
``load_tiny_guides`` and ``load_tiny_rerankers`` load lesson 04's ensembles of tiny CLIPs.

Example:
    >>> from lessonlib.models import load_tiny_clip
    >>> model, preprocess, tokenizer = load_tiny_clip()
    >>> critic = as_critic(model)
    >>> critic.embed_texts(tokenizer, ["a red circle"]).shape
    torch.Size([1, 64])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lessonlib import embed, speed
from lessonlib.generate_parts import parse_prompts
from lessonlib.models import TINY_GUIDE_WEIGHTS, TINY_RERANK_WEIGHTS, load_tiny_clip


class CLIPCritic(torch.nn.Module):
    """One open_clip CLIP as a critic; its ViT image tower runs through ``speed.encode_image_fast``.

    Introduced in lesson 04_vqgan_clip. Usually made by ``as_critic(model)``; the model is shared, not
    copied.

    Example:
        >>> from lessonlib.models import load_tiny_clip
        >>> model, preprocess, tokenizer = load_tiny_clip()
        >>> CLIPCritic(model).encode_image(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 64])
    """

    def __init__(self, model) -> None:
        super().__init__()
        if not all(hasattr(model, a) for a in ("visual", "encode_image", "encode_text")):
            raise TypeError(
                f"a critic needs an open_clip CLIP (with .visual, .encode_image and .encode_text), "
                f"got {type(model).__name__}"
            )
        self.model = model
        # A new Module is in training mode; take the model's mode instead, so that restoring the
        # wrapper's mode (after eval() and back) never switches the user's model to training.
        self.training = model.training

    @property
    def visual(self):
        return self.model.visual

    @property
    def dtype(self) -> torch.dtype:
        return speed.vit_dtype(self.model.visual, embed.model_device(self))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        if speed.fast_vit_supported(self.model.visual):
            return speed.encode_image_fast(self.model.visual, pixels).float()
        return self.model.encode_image(pixels).float()

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_text(tokens, normalize=normalize)

    def embed_texts(self, tokenizer, texts: Sequence[str]) -> torch.Tensor:
        return embed.embed_texts(self.model, tokenizer, texts, to_cpu=False)


def as_critic(model) -> torch.nn.Module:
    """``model`` itself if it already is a critic (has ``embed_texts``), else ``CLIPCritic(model)``.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> from lessonlib.models import load_tiny_clip
        >>> critic = as_critic(load_tiny_clip()[0])
        >>> as_critic(critic) is critic
        True
    """
    return model if callable(getattr(model, "embed_texts", None)) else CLIPCritic(model)


class CLIPEnsemble(torch.nn.Module):
    """Several CLIPs as one critic: each embeds, and the unit embeddings are joined end to end.

    Introduced in lesson 04_vqgan_clip.

    The joined vector has unit length (each member's part is scaled by ``sqrt(weight / total)``), so
    the squared distance between two joined embeddings is the weighted mean of the members' squared
    distances: ``generate``'s spherical-distance loss then asks *every* member to agree. A picture
    that fools one small CLIP (a blob of the right colour) rarely fools several trained
    differently, e.g. with other seeds or adversarially (``load_tiny_guides``). All members must take
    the same input size and normalisation and share one tokenizer.

    Example:
        >>> from lessonlib.models import load_tiny_clip
        >>> a, preprocess, tokenizer = load_tiny_clip()
        >>> pair = CLIPEnsemble([a, load_tiny_clip()[0]])
        >>> float(pair.encode_image(torch.rand(1, 3, 32, 32)).norm())  # doctest: +ELLIPSIS
        1.0...
    """

    def __init__(self, models: Sequence, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("CLIPEnsemble needs at least one CLIP model, got none")
        for m in models:
            if not (hasattr(m, "encode_image") and hasattr(m, "encode_text")):
                raise TypeError(
                    f"CLIPEnsemble members need encode_image and encode_text, got {type(m).__name__}"
                )
        specs = {embed.clip_input_spec(m) for m in models}
        if len(specs) > 1:
            raise ValueError(
                f"CLIPEnsemble members take different inputs {sorted(specs)}: use models with the same "
                "input size and normalisation"
            )
        weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
        if len(weights) != len(models) or any(not w > 0 for w in weights):
            raise ValueError(
                f"weights {weights!r}: give one positive number per model ({len(models)} models)"
            )
        self.members = torch.nn.ModuleList(as_critic(m) for m in models)
        self.training = self.members.training = any(m.training for m in self.members)
        total = sum(weights)
        self.register_buffer(
            "scales", torch.tensor([math.sqrt(w / total) for w in weights]), persistent=False
        )

    @property
    def visual(self):
        """The first member's image tower (for the input size and normalisation)."""
        return self.members[0].visual

    @property
    def dtype(self) -> torch.dtype:
        """bfloat16 only if every member computes in it (one autocast covers them all)."""
        dtypes = {m.dtype for m in self.members}
        return dtypes.pop() if len(dtypes) == 1 else torch.float32

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(
            [F.normalize(p.float(), dim=-1) * s for p, s in zip(parts, self.scales)], dim=-1
        )

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._join([m.encode_image(pixels) for m in self.members])

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._join([m.encode_text(tokens) for m in self.members])

    def embed_texts(self, tokenizer, texts: Sequence[str]) -> torch.Tensor:
        return embed.embed_texts(self, tokenizer, texts, to_cpu=False)


class ImageGuide(torch.nn.Module):
    """A CLIP's image tower plus the embeddings of chosen prompts: all that ``generate`` needs.

    Introduced in lesson 04_vqgan_clip.

    ViT-B-32's text tower is 38% of its weights (63 M of 151 M parameters) but is used only once, to
    embed the prompts. ``ImageGuide`` embeds them up front and keeps only ``clip_model.visual`` (shared,
    not copied, unless ``dtype`` asks for a bfloat16 or float16 copy); drop your own reference to the
    full model (``del clip_model``) and the text tower's memory is freed. Pass the guide to
    ``generate`` in place of the CLIP model, with the same tokenizer; it answers for its prompts only.

    Example:
        >>> from lessonlib.models import load_tiny_clip
        >>> model, preprocess, tokenizer = load_tiny_clip()
        >>> guide = ImageGuide(model, tokenizer, "a red circle|a blue square:-1")
        >>> guide.encode_text(tokenizer(["a blue square"])).shape
        torch.Size([1, 64])
    """

    def __init__(
        self,
        clip_model,
        tokenizer,
        prompts: str | Sequence[str],
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not hasattr(clip_model, "visual") or not hasattr(clip_model, "encode_text"):
            raise TypeError(
                f"ImageGuide needs an open_clip CLIP (with .visual and .encode_text), got "
                f"{type(clip_model).__name__}"
            )
        if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(
                f"dtype {dtype!r}: use None (share the model's weights), torch.bfloat16 or "
                "torch.float16"
            )
        texts = [p.text for p in parse_prompts(prompts)]
        self.visual = (
            clip_model.visual if dtype is None else speed._converted_copy(clip_model.visual, dtype)
        )
        self.weights_dtype = dtype or next(clip_model.visual.parameters()).dtype
        self.training = self.visual.training  # as CLIPCritic: never switch the shared tower's mode
        features = embed.embed_texts(clip_model, tokenizer, texts, normalize=False, to_cpu=False)
        self.texts = tuple(texts)
        self._rows = {tuple(row.tolist()): i for i, row in enumerate(tokenizer(texts))}
        self.register_buffer("text_features", features, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """Its weights' dtype when that is a low precision, else what suits the tower (``speed``)."""
        if self.weights_dtype != torch.float32:
            return self.weights_dtype
        return speed.vit_dtype(self.visual, embed.model_device(self))

    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = speed.encode_image_fast(self.visual, pixels.to(self.weights_dtype)).float()
        return F.normalize(features, dim=-1) if normalize else features

    def _rows_of(self, tokens: torch.Tensor, texts: Sequence[str] | None = None) -> list[int]:
        """The cached row of each tokenized prompt; an unknown prompt is named in the error."""
        rows = []
        for i, row in enumerate(tokens.cpu()):
            key = tuple(row.tolist())
            if key not in self._rows:
                what = repr(texts[i]) if texts is not None else f"token row {i}"
                raise ValueError(
                    f"this ImageGuide only knows the prompts it was made with {list(self.texts)}, "
                    f"not {what}; make a new ImageGuide (from the full CLIP) for other prompts"
                )
            rows.append(self._rows[key])
        return rows

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.text_features[self._rows_of(tokens)]
        return F.normalize(features, dim=-1) if normalize else features

    def embed_texts(self, tokenizer, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        features = self.text_features[self._rows_of(tokenizer(texts), texts)]
        return F.normalize(features.float(), dim=-1)


# ---------------------------------------------------------------------------- lesson 04's critics


def load_tiny_guides(paths=None, device: str = "cpu"):
    """Lesson 04's critic: five tiny CLIPs as one ``CLIPEnsemble``, ``(ensemble, preprocess, tokenizer)``.

    Introduced in lesson 04_vqgan_clip.

    The shipped tiny CLIP alone is easily satisfied by blobs of the right colour; together with two
    copies trained from other seeds and two fine-tuned adversarially (whose gradients look more like
    shapes: "robust models have perceptually aligned gradients"), the pictures it guides are judged
    right far more often (BENCHMARKS.md, Lesson 04). All five share the tokenizer and preprocessing.

    Example:
        >>> guide, preprocess, tokenizer = load_tiny_guides()
        >>> len(guide.members)
        5
    """
    paths = TINY_GUIDE_WEIGHTS if paths is None else tuple(paths)
    models, preprocess, tokenizer = [], None, None
    for path in paths:
        model, pre, tok = load_tiny_clip(path, device=device)
        if tokenizer is not None and tok.vocab != tokenizer.vocab:
            raise ValueError(f"'{path}' uses another vocabulary than '{paths[0]}': cannot ensemble")
        models.append(model)
        preprocess, tokenizer = preprocess or pre, tokenizer or tok
    return CLIPEnsemble(models).eval(), preprocess, tokenizer


def load_tiny_rerankers(device: str = "cpu"):
    """DALL-E 1's reranker: three tiny CLIPs as one ``CLIPEnsemble``, ``(ensemble, preprocess, tokenizer)``.

    Introduced in lesson 05_dalle (DALL-E 1's reranking).

    Trained on every colour + shape pair, on blurred pictures and on scenes of up to three objects
    (``lessonlib.models.TINY_RERANK_WEIGHTS``), they pick the right one among the code prior's samples
    more often than the five-CLIP guide does (BENCHMARKS.md, Lesson 04).

    Example:
        >>> reranker, preprocess, tokenizer = load_tiny_rerankers()
        >>> len(reranker.members)
        3
    """
    return load_tiny_guides(TINY_RERANK_WEIGHTS, device=device)
