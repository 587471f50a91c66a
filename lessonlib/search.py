"""Text-based image search over cached CLIP embeddings.

Introduced in lesson 03_image_search.

The idea of the lesson fits in two lines: embed every image once, then a query is one matrix product::

    scores = image_embeddings @ query_embedding      # cosine similarity (all vectors have length 1)
    top = scores.topk(k)

``ImageIndex`` adds the plumbing that makes this usable on a real photo folder:

* images are embedded in batches (one forward pass per batch, not per image), with a progress bar;
* embeddings are cached on disk, keyed by the model (a hash of its weights and preprocessing) and by each
  image's content (sha256 of the file's bytes): a re-run embeds only new or changed images, and a
  renamed file is not embedded again;
* the cache is one safetensors file, written to a temporary file and then renamed over the old one
  (``os.replace`` is atomic), so an interrupted run leaves the previous cache or the new one, never half
  a file; a run that stops with an exception (or Ctrl-C) saves what it embedded so far;
* queries are text, an image, or a weighted mix such as ``[(photo, 1.0), ("a dog", 1.0), ("a cat", -1.0)]``;
* search is exact (``torch`` matrix product + ``topk``), or an optional FAISS index for large collections
  (``ImageIndex.use_faiss``).

Example:
    >>> index = ImageIndex(model, preprocess, tokenizer, cache="photos.safetensors")  # doctest: +SKIP
    >>> index.add_folder("photos/")                                                   # doctest: +SKIP
    >>> index.search("a cat on a sofa", k=5)                                          # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
import re
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lessonlib.images import IMAGE_SUFFIXES, ImageLoadError, list_image_files, load_image

CACHE_FORMAT = "lessonlib-image-index/1"
DIGEST_BYTES = 32  # sha256
FAISS_KINDS = ("flat", "hnsw", "ivf")


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
    """sha256 of an in-memory image's mode, size and pixels: the cache key of a PIL image."""
    h = hashlib.sha256(f"{image.mode}|{image.size}|".encode())
    h.update(image.tobytes())
    return h.digest()


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
                            f"cache '{path}' has format {meta['format']!r}, this lessonlib writes "
                            f"{CACHE_FORMAT!r}: rebuilding it"
                        )
                        _warn(self.message)
                        return
                    raise ValueError(not_a_cache)
                digests = f.get_tensor("digests")
                embeddings = f.get_tensor("embeddings")
        except (SafetensorError, OSError, KeyError) as err:
            raise ValueError(f"{not_a_cache} ({err})") from err
        if meta.get("model_key") != self.model_key:
            other = meta.get("model_name") or "another model"
            self.message = (
                f"cache '{path}' was written by {other} (key {meta.get('model_key', '?')[:12]}), not by "
                f"this model{f' {self.model_name}' if self.model_name else ''} (key {self.model_key[:12]}): "
                "rebuilding it, every image will be embedded again"
            )
            _warn(self.message)
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
        """All cached embeddings as one (N, D) tensor (row i belongs to ``digests[i]``)."""
        if len(self._chunks) > 1:
            self._chunks = [torch.cat(self._chunks)]
        return self._chunks[0] if self._chunks else torch.empty(0, 0)

    def rows(self, digests: Sequence[bytes]) -> list[int | None]:
        """Row of each digest in ``matrix()``, or None where it is not cached."""
        return [self._rows.get(d) for d in digests]

    def put(self, digests: Sequence[bytes], embeddings: torch.Tensor) -> None:
        """Add embeddings (one row per digest); digests already cached are ignored."""
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
        """Write the cache atomically (temp file + fsync + ``os.replace``). True if anything was written."""
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


# -------------------------------------------------------------------------------------- exact / faiss


def exact_search(
    embeddings: torch.Tensor, queries: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by inner product: ``(queries @ embeddings.T).topk(k)`` -> (scores, indices).

    Introduced in lesson 03_image_search. With unit-length vectors the inner product is the cosine
    similarity. ``queries`` is (D,) or (Q, D); the result has shape (Q, k) (or (k,) for one query).

    Example:
        >>> e = torch.eye(3)
        >>> exact_search(e, torch.tensor([0.0, 1.0, 0.0]), k=1)[1].tolist()
        [1]
    """
    one = queries.ndim == 1
    q = queries[None] if one else queries
    scores, indices = (q @ embeddings.T).topk(min(k, embeddings.shape[0]), dim=1)
    return (scores[0], indices[0]) if one else (scores, indices)


def _import_faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "FAISS is not installed: `pip install faiss-cpu` (or `pip install lessonlib[search]`), "
            "or keep using the exact torch search, which is fast up to a few hundred thousand images"
        ) from err
    return faiss


def build_faiss_index(
    embeddings: torch.Tensor | np.ndarray,
    kind: str = "flat",
    *,
    nlist: int | None = None,
    nprobe: int = 16,
    hnsw_m: int = 32,
    ef_search: int = 64,
    train_size: int | None = None,
):
    """A FAISS inner-product index over ``embeddings`` (N, D).

    Introduced in lesson 03_image_search.

    ``kind``: ``"flat"`` (exact, ``IndexFlatIP``), ``"hnsw"`` (approximate graph search,
    ``IndexHNSWFlat``; ``ef_search`` trades speed for recall) or ``"ivf"`` (approximate, k-means cells,
    ``IndexIVFFlat``; searches ``nprobe`` of ``nlist`` cells; default ``nlist`` = sqrt(N), at most N / 39
    so that k-means has the 39 training points per cell FAISS asks for; k-means is trained on a random
    sample of ``train_size`` vectors, default 64 per cell).

    Example:
        >>> index = build_faiss_index(torch.eye(4), "flat")  # doctest: +SKIP
        >>> index.search(np.eye(4, dtype="float32")[:1], 1)[1]  # doctest: +SKIP
        array([[0]])
    """
    if kind not in FAISS_KINDS:
        raise ValueError(
            f"unknown FAISS index kind {kind!r}: choose one of {', '.join(FAISS_KINDS)}"
        )
    faiss = _import_faiss()
    x = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else embeddings
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (N, D) matrix, got shape {x.shape}")
    n, d = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
    else:
        nlist = max(1, min(n, nlist or min(int(math.sqrt(n)), n // 39)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        train_size = min(n, train_size or 64 * nlist)
        sample = (
            np.random.default_rng(0).choice(n, train_size, replace=False)
            if train_size < n
            else None
        )
        index.train(x if sample is None else x[np.sort(sample)])
        index.nprobe = min(nprobe, nlist)
    index.add(x)
    return index


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Hit:
    """One search result: ``rank`` (1 = best), ``position`` (row in the index), ``name``, ``score``."""

    rank: int
    position: int
    name: str
    score: float


@dataclass
class AddReport:
    """What ``ImageIndex.add`` did.

    ``added``: images now in the index; ``embedded``: how many went through the model; ``from_cache``:
    added without running the model (found in the cache, or a duplicate of another image in the same
    call); ``skipped``: (name, reason) of every image that could not be read.
    """

    added: int = 0
    embedded: int = 0
    from_cache: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        text = (
            f"added {self.added} images: {self.embedded} embedded now, {self.from_cache} from the cache, "
            f"{len(self.skipped)} skipped ({self.seconds:.1f} s)"
        )
        for name, reason in self.skipped[:5]:
            text += f"\n  skipped {name}: {reason}"
        if len(self.skipped) > 5:
            text += f"\n  ... and {len(self.skipped) - 5} more (see report.skipped)"
        return text


# -------------------------------------------------------------------------------------------- index


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


class ImageIndex:
    """Search a collection of images by text, by image, or by a mix of both.

    Introduced in lesson 03_image_search.

    Args:
        model, preprocess, tokenizer: any open_clip-style triple (``lessonlib.registry.load_clip``):
            ``model.encode_image`` / ``model.encode_text``, ``preprocess(PIL) -> tensor``,
            ``tokenizer(list_of_str) -> LongTensor``.
        cache: ``"auto"`` (a file per model under ``lessonlib.environment.cache_dir()``), a file path
            (``"photos.safetensors"``), or None (no disk cache).
        model_name: a readable name written into the cache (used in messages only; the key is the hash).
        batch_size: images per forward pass.
        device: where the model runs; default: where its parameters are.
        save_every_s: while embedding, the cache is saved at least this often (and always at the end,
            also when the run stops with an error).

    Example:
        >>> index = ImageIndex(model, preprocess, tokenizer, cache=None)  # doctest: +SKIP
        >>> index.add([pil_image_1, pil_image_2], names=["cat", "dog"])    # doctest: +SKIP
        >>> index.search("a cat", k=1)[0].name                            # doctest: +SKIP
        'cat'
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess,
        tokenizer,
        *,
        cache: str | os.PathLike | None = "auto",
        model_name: str = "",
        batch_size: int = 64,
        device: str | torch.device | None = None,
        save_every_s: float = 60.0,
    ) -> None:
        for what, obj, needs in (
            ("model", model, "encode_image"),
            ("model", model, "encode_text"),
        ):
            if not hasattr(obj, needs):
                raise TypeError(
                    f"{what} {type(obj).__name__} has no {needs}(): give an open_clip-style CLIP model"
                )
        if not callable(preprocess) or not callable(tokenizer):
            raise TypeError("preprocess and tokenizer must be callable (as returned by load_clip)")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self._per_image, self._per_batch = split_preprocess(preprocess)
        self.batch_size = batch_size
        self.save_every_s = float(save_every_s)
        if device is None:
            param = next(iter(model.parameters()), None)
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.model_name = model_name
        self.model_key = model_fingerprint(model, preprocess)
        if isinstance(cache, str) and cache == "auto":
            from lessonlib.environment import cache_dir

            cache = cache_dir() / "image_index" / f"{self.model_key[:16]}.safetensors"
        self.cache = EmbeddingCache(cache, self.model_key, model_name)
        self.names: list[str] = []
        self.sources: list = []
        self._digests: list[bytes] = []
        self._embeddings = torch.empty(0, 0)
        self._faiss = None
        self._faiss_kind: str | None = None
        self._faiss_params: dict = {}
        self.last_report: AddReport | None = None

    # ---- collection --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        where = self.cache.path if self.cache.path is not None else "memory only"
        search = f"faiss {self._faiss_kind}" if self._faiss_kind else "exact torch"
        return f"ImageIndex({len(self)} images, search={search}, cache={where})"

    @property
    def embeddings(self) -> torch.Tensor:
        """(N, D) unit-length image embeddings, row i for ``names[i]``."""
        return self._embeddings

    def add_folder(
        self, folder: str | os.PathLike, *, recursive: bool = False, progress: bool = True
    ) -> AddReport:
        """Add every image file in ``folder`` (by ending: .jpg, .png, ...); see ``add``.

        Example:
            >>> index.add_folder("photos/")  # doctest: +SKIP
        """
        files = list_image_files(folder, recursive=recursive)
        if not files:
            others = sorted(p.name for p in Path(folder).expanduser().iterdir())[:5]
            found = f" (it holds {', '.join(others)}...)" if others else " (it is empty)"
            raise ValueError(
                f"folder '{folder}' holds no image files{found}: put {', '.join(IMAGE_SUFFIXES)} "
                "files there, or pass recursive=True if they are in sub-folders"
            )
        return self.add(files, progress=progress)

    def add(
        self, images: Iterable, names: Sequence[str] | None = None, *, progress: bool = True
    ) -> AddReport:
        """Embed images (file paths, PIL images or arrays) and add them to the index.

        Introduced in lesson 03_image_search.

        Images whose content is already in the cache are not embedded again. Images that cannot be read
        are skipped and listed in ``report.skipped`` (with a warning), the others are added. If the run
        stops with an error or Ctrl-C, the embeddings computed so far are saved in the cache, so the next
        run continues where this one stopped (the index itself is unchanged).

        Example:
            >>> report = index.add(["cat.jpg", "dog.jpg"])  # doctest: +SKIP
            >>> print(report)                              # doctest: +SKIP
            added 2 images: 2 embedded now, 0 from the cache, 0 skipped (0.3 s)
        """
        start = time.perf_counter()
        if isinstance(images, (str, os.PathLike)):
            if Path(images).expanduser().is_dir():
                return self.add_folder(images, progress=progress)
            images = [images]
        elif isinstance(images, (Image.Image, np.ndarray)):
            images = [images]
        images = list(images)
        if names is not None:
            names = [str(n) for n in names]
            if len(names) != len(images):
                raise ValueError(
                    f"got {len(images)} images but {len(names)} names: give one name each"
                )
        report = AddReport()

        # 1. Key every image by its content (files: bytes on disk; in-memory images: pixels).
        from tqdm.auto import tqdm

        items: list[tuple[str, object, bytes]] = []  # (name, source, digest)
        hashing = tqdm(
            images,
            desc="reading files",
            unit="img",
            leave=False,
            disable=not progress or len(images) < 500,
        )
        for i, source in enumerate(hashing):
            name = names[i] if names is not None else _default_name(source, len(self) + i)
            try:
                if isinstance(source, (str, os.PathLike)):
                    path = Path(source).expanduser()
                    if not path.is_file():
                        raise ImageLoadError(
                            f"'{path}' {'is a folder' if path.is_dir() else 'does not exist'}: "
                            "give an image file"
                        )
                    items.append((name, path, file_digest(path)))
                else:
                    pil = load_image(source)
                    items.append((name, pil, image_digest(pil)))
            except (ImageLoadError, OSError, TypeError) as err:
                report.skipped.append((name, str(err)))

        # 2. Embed what the cache does not hold yet, in batches; save the cache as we go.
        todo: dict[bytes, tuple[str, object]] = {}
        for (name, source, digest), row in zip(items, self.cache.rows([d for *_, d in items])):
            if row is None and digest not in todo:
                todo[digest] = (name, source)
        failed: set[bytes] = set()
        try:
            self._embed_missing(todo, failed, report, progress)
        finally:
            self.cache.save()

        # 3. Append everything that has an embedding now, in the order given.
        kept = [it for it in items if it[2] not in failed]
        if kept:
            rows = self.cache.rows([d for *_, d in kept])
            new = self.cache.matrix()[torch.tensor(rows, dtype=torch.long)]
            self._embeddings = new if len(self) == 0 else torch.cat([self._embeddings, new])
            self.names += [n for n, _, _ in kept]
            self.sources += [s for _, s, _ in kept]
            self._digests += [d for *_, d in kept]
            self._faiss = None
            if self._faiss_kind is not None:
                self.use_faiss(self._faiss_kind, **self._faiss_params)
        report.added = len(kept)
        report.from_cache = len(kept) - report.embedded
        report.seconds = time.perf_counter() - start
        if report.skipped:
            listed = "; ".join(f"{n}: {r}" for n, r in report.skipped[:3])
            more = f" (and {len(report.skipped) - 3} more)" if len(report.skipped) > 3 else ""
            _warn(
                f"skipped {len(report.skipped)} image(s) that could not be read: {listed}{more}. "
                "The others were added; see report.skipped for the full list.",
            )
        self.last_report = report
        return report

    def add_embeddings(
        self, embeddings: torch.Tensor, names: Sequence[str], sources: Sequence | None = None
    ) -> None:
        """Add precomputed image embeddings (N, D) from the same model, e.g. made elsewhere.

        Rows are normalised to unit length. ``sources`` (paths or images, for ``show``) is optional.
        Nothing is written to the cache (there is no image content to key it by).

        Example:
            >>> index.add_embeddings(torch.randn(3, 512), names=["a", "b", "c"])  # doctest: +SKIP
        """
        embeddings = torch.as_tensor(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise ValueError(
                f"embeddings must be a non-empty (N, D) matrix, got shape {tuple(embeddings.shape)}"
            )
        if len(self) and embeddings.shape[1] != self._embeddings.shape[1]:
            raise ValueError(
                f"embeddings have {embeddings.shape[1]} dimensions, the index "
                f"{self._embeddings.shape[1]}: use the same model"
            )
        names = [str(n) for n in names]
        sources = [None] * len(names) if sources is None else list(sources)
        if not len(names) == len(sources) == embeddings.shape[0]:
            raise ValueError(
                f"got {embeddings.shape[0]} embeddings, {len(names)} names and {len(sources)} "
                "sources: give one of each per row"
            )
        new = F.normalize(embeddings.detach().float().cpu(), dim=-1)
        self._embeddings = new if len(self) == 0 else torch.cat([self._embeddings, new])
        self.names += names
        self.sources += sources
        self._digests += [b""] * len(names)
        self._faiss = None
        if self._faiss_kind is not None:
            self.use_faiss(self._faiss_kind, **self._faiss_params)

    def _prepare(
        self, chunk
    ) -> tuple[list[bytes], torch.Tensor | None, list[tuple[str, bytes, str]]]:
        """Read and preprocess one batch: (digests, pixels, failures)."""
        digests, tensors, failures = [], [], []
        with (
            torch.inference_mode()
        ):  # no autograd bookkeeping for the pixel tensors (a few % faster)
            for digest, (name, source) in chunk:
                try:
                    tensors.append(self._per_image(load_image(source)))
                    digests.append(digest)
                except (ImageLoadError, OSError) as err:
                    failures.append((name, digest, str(err)))
            if not tensors:
                return digests, None, failures
            pixels = torch.stack(tensors)
            return (
                digests,
                (pixels if self._per_batch is None else self._per_batch(pixels)),
                failures,
            )

    def _embed_missing(self, todo, failed, report, progress) -> None:
        if not todo:
            return
        from tqdm.auto import tqdm

        pending = list(todo.items())
        last_save = time.monotonic()
        # (A helper thread that preprocesses batch i+1 while the model embeds batch i was measured: on 2
        # busy cores it was 6% slower than this plain loop, so the loop stays plain.)
        with tqdm(
            total=len(pending), desc="embedding images", unit="img", disable=not progress
        ) as bar:
            for start in range(0, len(pending), self.batch_size):
                chunk = pending[start : start + self.batch_size]
                digests, pixels, failures = self._prepare(chunk)
                for name, digest, reason in failures:
                    report.skipped.append((name, reason))
                    failed.add(digest)
                if pixels is not None:
                    self.cache.put(digests, self._encode_images(pixels))
                    report.embedded += len(digests)
                bar.update(len(chunk))
                if time.monotonic() - last_save > self.save_every_s:
                    self.cache.save()
                    last_save = time.monotonic()

    # ---- embedding ---------------------------------------------------------------------------------

    def _run_model(self, fn, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        if was_training:  # dropout and batch-norm updates off while embedding; restored afterwards
            self.model.eval()
        try:
            with torch.inference_mode():
                out = fn(x.to(self.device))
        finally:
            if was_training:
                self.model.train()
        return F.normalize(out.float(), dim=-1).cpu()

    def _encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._run_model(self.model.encode_image, pixels)

    def embed_images(self, images: Sequence) -> torch.Tensor:
        """Unit-length embeddings (N, D) of images (paths, PIL images or arrays); nothing is cached.

        Example:
            >>> index.embed_images([pil_image]).shape  # doctest: +SKIP
            torch.Size([1, 512])
        """
        if len(images) == 0:
            raise ValueError("images is empty: give at least one image")
        pixels = torch.stack([self.preprocess(load_image(im)) for im in images])
        return self._encode_images(pixels)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length text embeddings (N, D).

        Example:
            >>> index.embed_texts(["a cat", "a dog"]).shape  # doctest: +SKIP
            torch.Size([2, 512])
        """
        if isinstance(texts, str):
            texts = [texts]
        for t in texts:
            _check_text(t)
        return self._run_model(self.model.encode_text, self.tokenizer(list(texts)))

    # ---- queries -----------------------------------------------------------------------------------

    def query_embedding(self, query) -> torch.Tensor:
        """Turn a query into one unit-length vector (D,).

        Introduced in lesson 03_image_search.

        A query is a text (``str``), an image (``Path``, PIL image, array; a ``str`` naming an existing
        image file counts as an image too), an embedding (1-D tensor), or a list of those, each
        optionally with a weight: ``[(photo, 1.0), ("a dog", 1.0), ("a cat", -1.0)]``. A list gives the
        normalised weighted sum of its parts' unit vectors ("image arithmetic").

        Example:
            >>> index.query_embedding([(Path("cat.jpg"), 1.0), ("in the snow", 0.5)]).shape  # doctest: +SKIP
            torch.Size([512])
        """
        terms = _as_terms(query)
        texts = [
            (i, t) for i, (t, _) in enumerate(terms) if isinstance(t, str) and not _is_image_file(t)
        ]
        vectors: list[torch.Tensor | None] = [None] * len(terms)
        if texts:
            for (i, _), v in zip(texts, self.embed_texts([t for _, t in texts])):
                vectors[i] = v
        images = [
            (i, t) for i, (t, _) in enumerate(terms) if vectors[i] is None and not _is_vector(t)
        ]
        if images:
            for (i, _), v in zip(images, self.embed_images([t for _, t in images])):
                vectors[i] = v
        total = None
        for i, (term, weight) in enumerate(terms):
            v = vectors[i] if vectors[i] is not None else _as_vector(term, self._dim())
            total = weight * v if total is None else total + weight * v
        norm = float(total.norm())
        if not math.isfinite(norm) or norm < 1e-6:
            raise ValueError(
                "the query's parts cancel out (their weighted sum is the zero vector): "
                "change the weights, e.g. [(image, 1.0), ('a dog', 0.5)]"
            )
        return total / norm

    def _dim(self) -> int | None:
        return int(self._embeddings.shape[1]) if len(self) else None

    def search(self, query, k: int = 5) -> list[Hit]:
        """The ``k`` images most similar to ``query`` (see ``query_embedding``), best first.

        Introduced in lesson 03_image_search.

        Example:
            >>> for hit in index.search("a red circle", k=3):  # doctest: +SKIP
            ...     print(hit.rank, hit.name, round(hit.score, 3))
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer (how many results), got {k!r}")
        if len(self) == 0:
            raise ValueError(
                "the index is empty: add images first with index.add(...) or add_folder(...)"
            )
        q = self.query_embedding(query)
        if q.shape[0] != self._embeddings.shape[1]:
            raise ValueError(
                f"query has {q.shape[0]} dimensions, the index {self._embeddings.shape[1]}: "
                "use an embedding from the same model"
            )
        scores, idx = self.search_embeddings(q[None], k)
        return [
            Hit(rank=r + 1, position=int(i), name=self.names[int(i)], score=float(s))
            for r, (s, i) in enumerate(zip(scores[0], idx[0]))
            if int(i) >= 0
        ]

    def search_embeddings(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (scores, positions) for a batch of query vectors (Q, D), exact or with FAISS."""
        k = min(k, len(self))
        if self._faiss is not None:
            scores, idx = self._faiss.search(
                np.ascontiguousarray(queries.numpy(), dtype=np.float32), k
            )
            return torch.from_numpy(scores), torch.from_numpy(idx)
        return exact_search(self._embeddings, queries, k)

    def use_faiss(self, kind: str | None = "flat", **params) -> ImageIndex:
        """Search with a FAISS index from now on (``kind``: flat, hnsw, ivf; None: back to exact torch).

        Introduced in lesson 03_image_search. ``params`` go to ``build_faiss_index``. The FAISS index is
        rebuilt after every ``add``.

        Example:
            >>> index.use_faiss("hnsw", ef_search=128)  # doctest: +SKIP
        """
        if kind is None:
            self._faiss, self._faiss_kind, self._faiss_params = None, None, {}
            return self
        if kind not in FAISS_KINDS:
            raise ValueError(
                f"unknown FAISS index kind {kind!r}: choose one of {', '.join(FAISS_KINDS)}"
            )
        self._faiss = build_faiss_index(self._embeddings, kind, **params) if len(self) else None
        self._faiss_kind, self._faiss_params = kind, dict(params)
        return self

    # ---- display -----------------------------------------------------------------------------------

    def image(self, position: int) -> Image.Image:
        """The image at ``position`` as an RGB PIL image (re-read from disk for files)."""
        source = self.sources[position]
        if source is None:
            raise ValueError(
                f"{self.names[position]!r} was added as an embedding only (add_embeddings without "
                "sources): there is no picture to show"
            )
        return load_image(source)

    def show(
        self, hits: Sequence[Hit], title: str = "", ncols: int | None = None, size: float = 2.2
    ):
        """Draw the result gallery: one panel per hit with its rank, score and name. Returns the figure.

        Introduced in lesson 03_image_search.

        Example:
            >>> index.show(index.search("a cat", k=5), title="a cat")  # doctest: +SKIP
        """
        from lessonlib.plotting import show_gallery

        if len(hits) == 0:
            raise ValueError("no hits to show: run index.search(...) first")
        return show_gallery(
            [self.image(hit.position) for hit in hits],
            [f"#{hit.rank}  cos {hit.score:.3f}\n{_short(hit.name)}" for hit in hits],
            ncols=ncols or min(len(hits), 6),
            size=size,
            suptitle=f"top {len(hits)} results for {title or 'the query'}",
        )


# ------------------------------------------------------------------------------------------ widget


def search_box(index: ImageIndex, k: int = 8, value: str = "", thumb: int = 96):
    """A text box with a live result gallery under it (ipywidgets): type a query, see the top ``k``.

    Introduced in lesson 03_image_search. Returns a ``VBox(text, gallery)``; ``box.hits`` holds the
    latest results (so a test or a later cell can read them).

    Example:
        >>> search_box(index, k=6)  # doctest: +SKIP
    """
    import ipywidgets as widgets

    text = widgets.Text(
        value=value,
        placeholder="type a query, e.g. a red circle",
        description="search:",
        continuous_update=True,
        layout=widgets.Layout(width="60%"),
    )
    gallery = widgets.HTML()
    box = widgets.VBox([text, gallery])
    box.hits = []

    def update(_change=None) -> None:
        query = text.value
        if not query.strip():
            box.hits = []
            gallery.value = "<i>type a few words to search the images</i>"
            return
        try:
            box.hits = index.search(query, k=k)
        except ValueError as err:
            box.hits = []
            gallery.value = f"<i>{_html_escape(str(err))}</i>"
            return
        gallery.value = _gallery_html(index, box.hits, thumb)

    text.observe(update, names="value")
    update()
    return box


def _gallery_html(index: ImageIndex, hits: Sequence[Hit], thumb: int) -> str:
    cells = []
    for hit in hits:
        img = index.image(hit.position)
        # Small images (Shapes World is 32 px) are enlarged with crisp pixels, photos shrunk smoothly.
        resample = Image.NEAREST if img.width < thumb else Image.BILINEAR
        img = img.resize((thumb, max(1, round(thumb * img.height / img.width))), resample)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = base64.b64encode(buf.getvalue()).decode()
        cells.append(
            f'<figure style="display:inline-block;margin:4px;text-align:center">'
            f'<img src="data:image/png;base64,{data}" width="{thumb}"/>'
            f'<figcaption style="font-size:10px">#{hit.rank} {hit.score:.3f}<br/>'
            f"{_html_escape(_short(hit.name))}</figcaption></figure>"
        )
    return "".join(cells)


# -------------------------------------------------------------------------------------- evaluation


def recall_at_k(
    similarity: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Recall@k: the fraction of queries with at least one relevant item among their top k.

    Introduced in lesson 03_image_search.

    ``similarity`` is (Q, N) query-to-item scores; ``relevant`` is a (Q, N) boolean matrix, or a (Q,)
    integer tensor giving the one relevant item of each query.

    Example:
        >>> recall_at_k(torch.eye(3), torch.arange(3), ks=(1,))
        {1: 1.0}
    """
    if similarity.ndim != 2:
        raise ValueError(
            f"similarity must be a (queries, items) matrix, got shape {tuple(similarity.shape)}"
        )
    q, n = similarity.shape
    relevant = torch.as_tensor(relevant)
    if relevant.ndim == 1:
        if relevant.shape[0] != q:
            raise ValueError(
                f"{q} queries but {relevant.shape[0]} relevant indices: give one per query"
            )
        relevant = F.one_hot(relevant.long(), n).bool()
    if tuple(relevant.shape) != (q, n):
        raise ValueError(
            f"relevant has shape {tuple(relevant.shape)}, similarity {(q, n)}: they must match"
        )
    relevant = relevant.bool()
    empty = (~relevant.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(
            f"{len(empty)} queries (e.g. query {int(empty[0])}) have no relevant item: recall is "
            "undefined for them, drop them"
        )
    bad = [kk for kk in ks if not isinstance(kk, int) or isinstance(kk, bool) or not 1 <= kk <= n]
    if bad or not ks:
        raise ValueError(
            f"ks must be integers from 1 to {n} (the number of items), got {list(ks)!r}"
        )
    top = similarity.topk(max(ks), dim=1).indices
    hit = relevant.gather(1, top)
    return {kk: float(hit[:, :kk].any(dim=1).float().mean()) for kk in ks}


def chance_recall_at_k(relevant: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Expected recall@k of a random ranking (the baseline a model must beat).

    With r relevant items among n, a random top-k misses all of them with probability
    C(n - r, k) / C(n, k).

    Example:
        >>> chance_recall_at_k(torch.eye(4, dtype=torch.bool), ks=(1, 2))
        {1: 0.25, 2: 0.5}
    """
    relevant = torch.as_tensor(relevant).bool()
    n = relevant.shape[1]
    r = relevant.sum(dim=1).double()
    out = {}
    for kk in ks:
        miss = torch.ones_like(r)
        for i in range(kk):
            miss = miss * ((n - r - i).clamp(min=0) / (n - i))
        out[kk] = float((1 - miss).mean())
    return out


def caption_relevance(captions: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Queries and relevance for caption-to-image retrieval when several images share a caption.

    Introduced in lesson 03_image_search. Returns the distinct captions (the queries, sorted) and a
    (queries, images) boolean matrix: image j is relevant to a query if its caption is that query.
    For Shapes World with ``detail="full"`` a caption fixes colour, shape, size and position, so the
    relevant images are exactly the ones the caption describes.

    Example:
        >>> queries, rel = caption_relevance(["a red circle", "a blue square", "a red circle"])
        >>> queries, rel.tolist()
        (['a blue square', 'a red circle'], [[False, True, False], [True, False, True]])
    """
    if len(captions) == 0:
        raise ValueError("captions is empty: give one caption per image")
    queries = sorted(set(captions))
    row = {c: i for i, c in enumerate(queries)}
    relevant = torch.zeros(len(queries), len(captions), dtype=torch.bool)
    relevant[[row[c] for c in captions], torch.arange(len(captions))] = True
    return queries, relevant


# ------------------------------------------------------------------------------------------ helpers


def _warn(message: str) -> None:
    """Warn, pointing at the user's line (the first caller outside this module), not at ours."""
    import sys

    level, frame = 2, sys._getframe(1)  # stacklevel 2 = the caller of _warn
    while frame is not None and frame.f_code.co_filename == __file__:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, UserWarning, stacklevel=level)


def _default_name(source, position: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"image {position}"


def _short(name: str, width: int = 28) -> str:
    name = Path(name).name if ("/" in name or os.sep in name) else name
    return name if len(name) <= width else name[: width - 1] + "…"


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _check_text(text) -> None:
    if not isinstance(text, str):
        raise TypeError(f"a text query must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(
            "the query is empty: type a few words such as 'a red circle', or give an image to search by"
        )


def _is_image_file(text: str) -> bool:
    return text.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.expanduser(text))


def _is_vector(term) -> bool:
    return isinstance(term, torch.Tensor) and term.ndim == 1


def _as_vector(term: torch.Tensor, dim: int | None) -> torch.Tensor:
    v = term.detach().float().cpu()
    if dim is not None and v.shape[0] != dim:
        raise ValueError(f"embedding query has {v.shape[0]} dimensions, the index {dim}")
    return F.normalize(v, dim=0)


def _is_weight(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _as_terms(query) -> list[tuple[object, float]]:
    """Normalise a query to a list of (term, weight) pairs, rejecting empty or malformed queries."""
    if query is None:
        raise ValueError(
            "the query is empty (None): give a text such as 'a red circle', an image, or a list of both"
        )
    if isinstance(query, tuple) and len(query) == 2 and _is_weight(query[1]):
        query = [query]
    if isinstance(query, str) or not isinstance(query, (list, tuple)):
        query = [query]
    if len(query) == 0:
        raise ValueError(
            "the query is an empty list: give at least one text or image, e.g. ['a red circle']"
        )
    terms = []
    for part in query:
        if isinstance(part, tuple):
            if len(part) != 2 or not _is_weight(part[1]):
                raise TypeError(
                    f"a weighted query part must be (text_or_image, number), got {part!r:.80}"
                )
            term, weight = part
        else:
            term, weight = part, 1.0
        if not math.isfinite(float(weight)):
            raise ValueError(
                f"query weight {weight!r} is not a finite number: use e.g. 1.0 or -0.5"
            )
        if term is None:
            raise ValueError("a query part is None: give a text, an image or an embedding")
        if isinstance(term, str):
            _check_text(term)
        terms.append((term, float(weight)))
    return terms
