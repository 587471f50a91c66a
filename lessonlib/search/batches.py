"""Embedding what the cache lacks: read and preprocess images in batches, one forward pass per batch.

Introduced in lesson 03_image_search.

``ImageIndex.add`` hands over the images the cache does not hold yet; ``embed_missing`` reads them batch
by batch behind a progress bar, embeds each batch (through ``lessonlib.embed``), stores the vectors in
the cache and saves it at least every ``save_every_s`` seconds, so a long run that is stopped keeps most
of its work. Images that cannot be read are returned as failures, not raised.

Example:
    >>> embedded, failures = embed_missing(todo, cache, encode, split_preprocess(preprocess),
    ...                                    batch_size=64, save_every_s=60.0)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from lessonlib.images import ImageLoadError, load_image

Failure = tuple[str, bytes, str]  # (name, digest, reason)


def read_batch(chunk, per_image, per_batch=None) -> tuple[list[bytes], torch.Tensor | None, list]:
    """Read and preprocess one batch of ``(digest, (name, source))``: (digests, pixels, failures).

    Introduced in lesson 03_image_search. ``per_image`` runs on each picture, ``per_batch`` (if any) on
    the stacked batch (see ``split_preprocess``). ``pixels`` is None when no image could be read.

    Example:
        >>> digests, pixels, failures = read_batch([(b"k", ("a", pil_image))], preprocess)  # doctest: +SKIP
    """
    digests, tensors, failures = [], [], []
    # No autograd bookkeeping for the pixel tensors (a few % faster).
    with torch.inference_mode():
        for digest, (name, source) in chunk:
            try:
                tensors.append(per_image(load_image(source)))
                digests.append(digest)
            except (ImageLoadError, OSError) as err:
                failures.append((name, digest, str(err)))
        if not tensors:
            return digests, None, failures
        pixels = torch.stack(tensors)
        return digests, (pixels if per_batch is None else per_batch(pixels)), failures


def embed_missing(
    todo: dict,
    cache,
    encode: Callable[[torch.Tensor], torch.Tensor],
    split: tuple,
    batch_size: int,
    save_every_s: float,
    progress: bool = True,
) -> tuple[int, list[Failure]]:
    """Embed ``todo`` (digest -> (name, source)) into ``cache``; returns (how many embedded, failures).

    Introduced in lesson 03_image_search. ``encode`` maps a preprocessed batch to unit-length
    embeddings; ``split`` is ``(per_image, per_batch)`` from ``split_preprocess``. The cache is saved
    whenever ``save_every_s`` seconds have passed since the last save (the caller saves at the end).

    Example:
        >>> n, failures = embed_missing(todo, cache, encode, (preprocess, None), 64, 60.0)  # doctest: +SKIP
    """
    if not todo:
        return 0, []
    from tqdm.auto import tqdm

    pending = list(todo.items())
    embedded, failures = 0, []
    last_save = time.monotonic()
    # (A helper thread that preprocesses batch i+1 while the model embeds batch i was measured: on 2
    # busy cores it was 6% slower than this plain loop, so the loop stays plain.)
    with tqdm(total=len(pending), desc="embedding images", unit="img", disable=not progress) as bar:
        for start in range(0, len(pending), batch_size):
            chunk = pending[start : start + batch_size]
            digests, pixels, failed = read_batch(chunk, *split)
            failures += failed
            if pixels is not None:
                cache.put(digests, encode(pixels))
                embedded += len(digests)
            bar.update(len(chunk))
            if time.monotonic() - last_save > save_every_s:
                cache.save()
                last_save = time.monotonic()
    return embedded, failures
