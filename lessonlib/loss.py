"""The symmetric contrastive (InfoNCE) loss of CLIP, written out.

Introduced in lesson 01_clip_concepts.

From the CLIP paper's pseudo-code (Radford et al. 2021, Figure 3)::

    logits = np.dot(I_e, T_e.T) * np.exp(t)
    labels = np.arange(n)
    loss_i = cross_entropy_loss(logits, labels, axis=0)
    loss_t = cross_entropy_loss(logits, labels, axis=1)
    loss   = (loss_i + loss_t) / 2

Row ``i`` of the similarity matrix compares image ``i`` with every text in the batch; the right text is
on the diagonal. The loss is a classification over the batch in both directions. ``t`` is a learnable
log-temperature: open_clip stores it as ``model.logit_scale`` (``exp(logit_scale) = 1 / temperature``).

``tests/test_loss.py`` checks that ``clip_loss`` equals ``open_clip.loss.ClipLoss`` to 1e-5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss on a batch of n matching (image, text) pairs.

    Introduced in lesson 01_clip_concepts.

    Args:
        image_features: (n, d) image embeddings, L2-normalised (as ``encode_image(..., normalize=True)``).
        text_features: (n, d) text embeddings of the matching captions, L2-normalised, same order.
        logit_scale: the learnable log inverse temperature (``model.logit_scale``); the similarities
            are multiplied by ``exp(logit_scale)``.

    Example:
        >>> f = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
        >>> float(clip_loss(f, f, torch.tensor(4.6))) < 0.01  # each image matches only its own text
        True
    """
    _check_features(image_features, text_features)
    scale = torch.as_tensor(logit_scale).to(image_features).exp()  # exp(t) = 1 / temperature
    logits = image_features @ text_features.T * scale  # (n, n) scaled cosine similarities
    labels = torch.arange(len(logits), device=logits.device)  # the right text for image i is text i
    loss_images = F.cross_entropy(logits, labels)  # each image picks its text among n texts
    loss_texts = F.cross_entropy(logits.T, labels)  # each text picks its image among n images
    return (loss_images + loss_texts) / 2


def similarity_matrix(
    image_features: torch.Tensor, text_features: torch.Tensor, normalize: bool = True
) -> torch.Tensor:
    """Cosine similarities, (n_images, n_texts); row i compares image i with every text.

    Introduced in lesson 01_clip_concepts.

    Example:
        >>> similarity_matrix(torch.eye(2), torch.eye(2)).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    if normalize:
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
    return image_features @ text_features.T


def diagonal_accuracy(similarity: torch.Tensor) -> float:
    """Fraction of rows whose largest entry is on the diagonal (image i picks text i).

    Example:
        >>> diagonal_accuracy(torch.eye(3))
        1.0
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"need a square similarity matrix, got shape {tuple(similarity.shape)}")
    hits = similarity.argmax(dim=1) == torch.arange(len(similarity), device=similarity.device)
    return float(hits.float().mean())


def _check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    for name, t in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 2-D tensor (batch, dim), got {shape}")
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image_features {tuple(image_features.shape)} and text_features {tuple(text_features.shape)} "
            "must have the same shape: one caption per image, same embedding size"
        )
    if len(image_features) < 2:
        raise ValueError(
            f"the contrastive loss needs at least two (image, text) pairs, got a batch of "
            f"{len(image_features)}: with one pair there is nothing to contrast against"
        )
