"""The on-disk embedding cache of the image index: keys, file format, atomic saves.

Introduced in lesson 03_image_search.

An embedding is stored under two keys: the **model** (``model_fingerprint``: a hash of its weights and
preprocessing, so another checkpoint never reuses these vectors) and the image's **content**
(``file_digest``: sha256 of the file's bytes, so a renamed file is not embedded again; ``image_digest``
for in-memory pictures). The cache is one safetensors file holding ``digests`` (uint8, N x 32) and
``embeddings`` (float32, N x D), with ``format`` (``CACHE_FORMAT``), ``model_key`` and ``model_name`` in
its metadata. It is written to a temporary file and then renamed over the old one (``os.replace`` is
atomic), so an interrupted run leaves the previous cache or the new one, never half a file.

Example:
    >>> cache = EmbeddingCache(None, model_key="abc")
    >>> len(cache), cache.dim
    (0, None)
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lessonlib.images import ImageLoadError, load_image
from lessonlib.search._warn import warn_user

CACHE_FORMAT = "lessonlib-image-index/1"
DIGEST_BYTES = 32  # sha256


# --------------------------------------------------------------------------------------------- keys


def model_fingerprint(model: torch.nn.Module, preprocess=None) -> str:
    """A hex key that changes whenever the model's weights, class or preprocessing change.

    Introduced in lesson 03_image_search.

    It hashes every tensor of ``model.state_dict()`` (name, dtype, shape and bytes) plus the class name
    and the printed form of ``preprocess`` (with memory addresses removed, so the key is stable across
    sessions). Hashing ViT-B-32's 600 MB takes about a second; it is done once per index.

    Example:
        >>> import torch
        >>> model_fingerprint(torch.nn.Linear(2, 2)) != model_fingerprint(torch.nn.Linear(2, 2))
        True
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module (an open_clip model), got {type(model).__name__}"
        )
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"|{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes())
    if preprocess is not None:
        h.update(_stable_repr(preprocess).encode())
    return h.hexdigest()


def _stable_repr(obj) -> str:
    """``repr`` without memory addresses (``<function f at 0x7f...>`` differs between sessions)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def file_digest(path: str | os.PathLike) -> bytes:
    """sha256 of a file's bytes: the cache key of an image file (renaming it keeps the key).

    Introduced in lesson 03_image_search.

    Example:
        >>> file_digest(__file__).hex()[:8]  # doctest: +SKIP
        '3f2a9c01'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def image_digest(image: Image.Image) -> bytes:
    """sha256 of an in-memory image's mode, size and pixels: the cache key of a PIL image.

    Introduced in lesson 03_image_search.

    Example:
        >>> image_digest(Image.new("RGB", (2, 2))) == image_digest(Image.new("RGB", (2, 2)))
        True
    """
    h = hashlib.sha256(f"{image.mode}|{image.size}|".encode())
    h.update(image.tobytes())
    return h.digest()


def content_key(source) -> tuple[object, bytes]:
    """``(source, digest)`` of one image to index: a file keyed by its bytes, a picture by its pixels.

    Introduced in lesson 03_image_search. A path comes back as a ``Path`` (read again when embedded),
    anything else as the RGB PIL image ``load_image`` makes of it. Raises ``ImageLoadError`` for a
    missing file or a folder.

    Example:
        >>> source, digest = content_key(Image.new("RGB", (2, 2)))
        >>> len(digest)
        32
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ImageLoadError(
                f"'{path}' {'is a folder' if path.is_dir() else 'does not exist'}: give an image file"
            )
        return path, file_digest(path)
    pil = load_image(source)
    return pil, image_digest(pil)


# -------------------------------------------------------------------------------------------- cache


class EmbeddingCache:
    """Image embeddings on disk, keyed by content digest, for one model.

    Introduced in lesson 03_image_search.

    The file is a safetensors file holding ``digests`` (uint8, N x 32) and ``embeddings`` (float32, N x D),
    with ``format`` and ``model_key`` in its metadata. ``path=None`` keeps everything in memory.
    A file written by another model is not used: the cache starts empty (``self.message`` says why) and
    the file is replaced at the next ``save()``. A file that is not a cache at all is never overwritten.

    Example:
        >>> cache = EmbeddingCache(None, model_key="abc")
        >>> len(cache)
        0
    """

    def __init__(self, path: str | os.PathLike | None, model_key: str, model_name: str = ""):
        self.path = None if path is None else Path(path).expanduser()
        self.model_key = model_key
        self.model_name = model_name
        self.message: str | None = None
        self._rows: dict[bytes, int] = {}
        self._digests: list[bytes] = []
        self._chunks: list[torch.Tensor] = []
        self._dirty = False
        if self.path is not None:
            if self.path.is_dir():
                raise IsADirectoryError(
                    f"cache path '{self.path}' is a folder: give a file path such as "
                    f"'{self.path / 'embeddings.safetensors'}'"
                )
            if self.path.exists():
                self._load()

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def dim(self) -> int | None:
        """Size of the cached embeddings, None while the cache is empty.

        Example:
            >>> EmbeddingCache(None, "key").dim is None
            True
        """
        return int(self._chunks[0].shape[1]) if self._chunks else None

    def _load(self) -> None:
        from safetensors import SafetensorError, safe_open

        path = self.path
        not_a_cache = (
            f"'{path}' exists but is not an image-index cache: pass another cache path "
            "(it is left untouched), or delete the file yourself if it is an old cache"
        )
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != CACHE_FORMAT:
                    if meta.get("format", "").startswith("lessonlib-image-index/"):
                        self.message = (
                            f"cache file '{path.name}' has format {meta['format']!r}, this lessonlib writes "
                            f"{CACHE_FORMAT!r}: rebuilding it"
                        )
                        warn_user(self.message)
                        return
                    raise ValueError(not_a_cache)
                digests = f.get_tensor("digests")
                embeddings = f.get_tensor("embeddings")
        except (SafetensorError, OSError, KeyError) as err:
            raise ValueError(f"{not_a_cache} ({err})") from err
        if meta.get("model_key") != self.model_key:
            other = meta.get("model_name") or "another model"
            self.message = (
                f"cache file '{path.name}' was written by {other} (key {meta.get('model_key', '?')[:12]}), not by "
                f"this model{f' {self.model_name}' if self.model_name else ''} (key {self.model_key[:12]}): "
                "rebuilding it, every image will be embedded again"
            )
            warn_user(self.message)
            return
        if (
            digests.ndim != 2
            or digests.shape[1] != DIGEST_BYTES
            or embeddings.ndim != 2
            or embeddings.shape[0] != digests.shape[0]
        ):
            raise ValueError(f"{not_a_cache} (its tensors have unexpected shapes)")
        keys = [bytes(row) for row in digests.numpy()]
        self._digests = keys
        self._rows = {k: i for i, k in enumerate(keys)}
        if len(keys):
            self._chunks = [embeddings.float()]

    def matrix(self) -> torch.Tensor:
        """All cached embeddings as one (N, D) tensor (row i belongs to ``digests[i]``).

        Example:
            >>> EmbeddingCache(None, "key").matrix().shape
            torch.Size([0, 0])
        """
        if len(self._chunks) > 1:
            self._chunks = [torch.cat(self._chunks)]
        return self._chunks[0] if self._chunks else torch.empty(0, 0)

    def rows(self, digests: Sequence[bytes]) -> list[int | None]:
        """Row of each digest in ``matrix()``, or None where it is not cached.

        Example:
            >>> EmbeddingCache(None, "key").rows([bytes(32)])
            [None]
        """
        return [self._rows.get(d) for d in digests]

    def put(self, digests: Sequence[bytes], embeddings: torch.Tensor) -> None:
        """Add embeddings (one row per digest); digests already cached are ignored.

        Example:
            >>> cache = EmbeddingCache(None, "key")
            >>> cache.put([bytes(32)], torch.ones(1, 4))
            >>> cache.rows([bytes(32)]), cache.dim
            ([0], 4)
        """
        if len(digests) != len(embeddings):
            raise ValueError(
                f"{len(digests)} digests but {len(embeddings)} embeddings: give one row each"
            )
        if self.dim is not None and embeddings.shape[1] != self.dim:
            raise ValueError(
                f"embeddings have {embeddings.shape[1]} dimensions, the cache holds {self.dim}"
            )
        fresh = [i for i, d in enumerate(digests) if d not in self._rows]
        for i in fresh:
            self._rows[digests[i]] = len(self._digests)
            self._digests.append(digests[i])
        if fresh:
            self._chunks.append(embeddings[fresh].detach().float().cpu())
            self._dirty = True

    def save(self) -> bool:
        """Write the cache atomically (temp file + fsync + ``os.replace``). True if anything was written.

        Example:
            >>> EmbeddingCache(None, "key").save()  # in memory only: nothing to write
            False
        """
        if self.path is None or not self._dirty:
            return False
        from safetensors.torch import save_file

        self.path.parent.mkdir(parents=True, exist_ok=True)
        digests = torch.from_numpy(
            np.frombuffer(b"".join(self._digests), dtype=np.uint8).reshape(-1, DIGEST_BYTES).copy()
        )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            save_file(
                {"digests": digests, "embeddings": self.matrix().contiguous()},
                str(tmp),
                metadata={
                    "format": CACHE_FORMAT,
                    "model_key": self.model_key,
                    "model_name": self.model_name,
                },
            )
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self._dirty = False
        return True
