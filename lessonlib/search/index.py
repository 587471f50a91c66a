"""``ImageIndex``: a searchable collection of images: add them once, then query by text or image.

Introduced in lesson 03_image_search.

The index ties the other modules of ``lessonlib.search`` together: it keys each image by its content and
looks it up in the ``EmbeddingCache`` (``cache.py``), embeds what is missing in batches (``batches.py``,
through ``lessonlib.embed``, with the fast preprocessing of ``preprocess.py``), turns a query into one
vector (``query.py``), ranks the images exactly or with FAISS (``backends.py``) and returns ``Hit``s
(``results.py``).

Example:
    >>> index = ImageIndex(model, preprocess, tokenizer, cache=None)  # doctest: +SKIP
    >>> index.add(["cat.jpg", "dog.jpg"])                               # doctest: +SKIP
    >>> index.search("a cat", k=1)[0].name                              # doctest: +SKIP
    'cat.jpg'
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lessonlib import embed
from lessonlib.images import IMAGE_SUFFIXES, ImageLoadError, load_image
from lessonlib.search._warn import warn_user
from lessonlib.search.backends import FAISS_KINDS, build_faiss_index, exact_search
from lessonlib.search.batches import embed_missing
from lessonlib.search.cache import EmbeddingCache, content_key, model_fingerprint
from lessonlib.search.folders import list_folder
from lessonlib.search.preprocess import split_preprocess
from lessonlib.search.query import (
    as_vector,
    check_text,
    is_text,
    is_vector,
    parse_query,
    weighted_sum,
)
from lessonlib.search.results import AddReport, Hit, skipped_message


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
        device: where the model runs; default (and the only choice): where its parameters are. Move the
            model with ``model.to(device)`` to run it elsewhere.
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
        for needs in ("encode_image", "encode_text"):
            if not hasattr(model, needs):
                raise TypeError(
                    f"model {type(model).__name__} has no {needs}(): give an open_clip-style CLIP model"
                )
        if not callable(preprocess) or not callable(tokenizer):
            raise TypeError("preprocess and tokenizer must be callable (as returned by load_clip)")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self._per_image, self._per_batch = split_preprocess(preprocess)
        self.batch_size = batch_size
        self.save_every_s = float(save_every_s)
        self.device = embed.model_device(model)
        if device is not None and torch.device(device).type != self.device.type:
            raise ValueError(
                f"device={str(device)!r} but the model's weights are on {self.device}: move the model "
                f"first (model.to({str(device)!r})) or leave device out"
            )
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
        """(N, D) unit-length image embeddings, row i for ``names[i]``.

        Example:
            >>> scores = index.embeddings @ index.embed_texts(["a cat"])[0]  # doctest: +SKIP
        """
        return self._embeddings

    def add_folder(
        self, folder: str | os.PathLike, *, recursive: bool = False, progress: bool = True
    ) -> AddReport:
        """Add every image file in ``folder`` (by ending: .jpg, .png, ...); see ``add``.

        Introduced in lesson 03_image_search.

        Nothing is dropped silently: an entry that is not an image file (another ending such as
        ``.svg`` or ``.txt``, or a sub-folder when ``recursive=False``) is listed in ``report.skipped``
        with the reason and what would work, and named in the same warning as the images that could not
        be read. Hidden entries (names starting with ``.``, such as ``.DS_Store``) are left out quietly.

        Example:
            >>> index.add_folder("photos/")  # doctest: +SKIP
        """
        files, not_images = list_folder(folder, recursive=recursive)
        if not files:
            others = sorted(p.name for p in Path(folder).expanduser().iterdir())[:5]
            found = f" (it holds {', '.join(others)}...)" if others else " (it is empty)"
            raise ValueError(
                f"folder '{folder}' holds no image files{found}: put {', '.join(IMAGE_SUFFIXES)} "
                "files there, or pass recursive=True if they are in sub-folders"
            )
        return self._add(files, None, progress, not_images, Path(folder).expanduser())

    def add(
        self, images: Iterable, names: Sequence[str] | None = None, *, progress: bool = True
    ) -> AddReport:
        """Embed images (file paths, PIL images or arrays) and add them to the index.

        Introduced in lesson 03_image_search.

        Images whose content is already in the cache are not embedded again, and images with the same
        content as another one in the same call are embedded once (``report.duplicates``). Images that
        cannot be read are skipped and listed in ``report.skipped`` (with a warning), the others are
        added. If the run stops with an error or Ctrl-C, the embeddings computed so far are saved in the
        cache, so the next run continues where this one stopped (the index itself is unchanged).

        Example:
            >>> report = index.add(["cat.jpg", "dog.jpg"])  # doctest: +SKIP
            >>> print(report)                              # doctest: +SKIP
            added 2 images: 2 embedded now, 0 from the cache, 0 skipped (0.3 s)
        """
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
        return self._add(images, names, progress)

    def _add(
        self,
        images: list,
        names: list[str] | None,
        progress: bool,
        not_images: list[tuple[str, str]] = (),
        folder: Path | None = None,
    ) -> AddReport:
        """``add`` after its arguments are checked; ``not_images`` are a folder's other entries."""
        start = time.perf_counter()
        report = AddReport()

        # 1. Key every image by its content (files: bytes on disk; in-memory images: pixels).
        from tqdm.auto import tqdm

        items: list[tuple[str, object, bytes]] = []  # (name, source, digest)
        unreadable: list[tuple[str, str]] = []
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
                items.append((name, *content_key(source)))
            except (ImageLoadError, OSError, TypeError) as err:
                unreadable.append((name, str(err)))

        # 2. Embed what the cache does not hold yet, in batches; save the cache as we go.
        todo: dict[bytes, tuple[str, object]] = {}
        cached = 0
        for (name, source, digest), row in zip(items, self.cache.rows([d for *_, d in items])):
            if row is not None:
                cached += 1
            elif digest not in todo:
                todo[digest] = (name, source)
        split = (self._per_image, self._per_batch)
        try:
            report.embedded, failures = embed_missing(
                todo,
                self.cache,
                self._encode_images,
                split,
                self.batch_size,
                self.save_every_s,
                progress,
            )
        finally:
            self.cache.save()
        failed = {digest for _, digest, _ in failures}
        unreadable += [(name, reason) for name, _, reason in failures]
        # A duplicate of an image that failed to read fails too: list it under its own name.
        named = {name for name, _ in unreadable}
        unreadable += [
            (name, "same content as an image that could not be read")
            for name, _, digest in items
            if digest in failed and name not in named
        ]

        # 3. Append everything that has an embedding now, in the order given.
        kept = [it for it in items if it[2] not in failed]
        if kept:
            rows = self.cache.rows([d for *_, d in kept])
            new = self.cache.matrix()[torch.tensor(rows, dtype=torch.long)]
            kept_names, kept_sources, kept_digests = (list(column) for column in zip(*kept))
            self._append(new, kept_names, kept_sources, kept_digests)
        report.added = len(kept)
        report.from_cache = cached
        report.duplicates = report.added - report.embedded - cached
        report.skipped = list(not_images) + unreadable
        report.seconds = time.perf_counter() - start
        if report.skipped:
            warn_user(skipped_message(report, unreadable, list(not_images), folder))
        self.last_report = report
        return report

    def add_embeddings(
        self, embeddings: torch.Tensor, names: Sequence[str], sources: Sequence | None = None
    ) -> None:
        """Add precomputed image embeddings (N, D) from the same model, e.g. made elsewhere.

        Introduced in lesson 03_image_search. Rows are normalised to unit length. ``sources`` (paths or
        images, for ``show``) is optional. Nothing is written to the cache (there is no image content to
        key it by).

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
        self._append(new, names, sources, [b""] * len(names))

    def _append(self, new: torch.Tensor, names: list[str], sources: list, digests: list) -> None:
        """Append rows to the collection; a FAISS index in use is rebuilt over all of them."""
        self._embeddings = new if len(self) == 0 else torch.cat([self._embeddings, new])
        self.names += names
        self.sources += sources
        self._digests += digests
        self._faiss = None
        if self._faiss_kind is not None:
            self.use_faiss(self._faiss_kind, **self._faiss_params)

    # ---- embedding (all through lessonlib.embed, the path lesson 02 uses too) -----------------------

    def _encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings of one preprocessed batch ``[N, 3, H, W]``, in one forward pass."""
        return embed.embed_images(self.model, pixels, batch_size=len(pixels))

    def embed_images(self, images: Sequence) -> torch.Tensor:
        """Unit-length embeddings (N, D) of images (paths, PIL images or arrays); nothing is cached.

        Introduced in lesson 03_image_search.

        Example:
            >>> index.embed_images([pil_image]).shape  # doctest: +SKIP
            torch.Size([1, 512])
        """
        return embed.embed_images(
            self.model, list(images), self.preprocess, batch_size=self.batch_size
        )

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length text embeddings (N, D).

        Introduced in lesson 03_image_search.

        Example:
            >>> index.embed_texts(["a cat", "a dog"]).shape  # doctest: +SKIP
            torch.Size([2, 512])
        """
        if isinstance(texts, str):
            texts = [texts]
        for t in texts:
            check_text(t)
        return embed.embed_texts(self.model, self.tokenizer, list(texts))

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
        terms = parse_query(query)
        vectors: list[torch.Tensor | None] = [None] * len(terms)
        texts = [i for i, (t, _) in enumerate(terms) if is_text(t)]
        if texts:  # all texts in one batch, all images in another
            for i, v in zip(texts, self.embed_texts([terms[i][0] for i in texts])):
                vectors[i] = v
        images = [i for i, (t, _) in enumerate(terms) if vectors[i] is None and not is_vector(t)]
        if images:
            for i, v in zip(images, self.embed_images([terms[i][0] for i in images])):
                vectors[i] = v
        vectors = [
            v if v is not None else as_vector(t, self._dim()) for v, (t, _) in zip(vectors, terms)
        ]
        return weighted_sum(vectors, [w for _, w in terms])

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
        """Top-k (scores, positions) for a batch of query vectors (Q, D), exact or with FAISS.

        Introduced in lesson 03_image_search.

        Example:
            >>> scores, positions = index.search_embeddings(index.embed_texts(["a cat"]), k=3)  # doctest: +SKIP
        """
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
        """The image at ``position`` as an RGB PIL image (re-read from disk for files).

        Introduced in lesson 03_image_search.

        Example:
            >>> index.image(index.search("a cat", k=1)[0].position)  # doctest: +SKIP
        """
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

        Introduced in lesson 03_image_search. The drawing is ``lessonlib.plotting.show_hits``.

        Example:
            >>> index.show(index.search("a cat", k=5), title="a cat")  # doctest: +SKIP
        """
        from lessonlib.plotting import show_hits

        images = [self.image(hit.position) for hit in hits]
        return show_hits(images, hits, query=title, ncols=ncols, size=size)


def _default_name(source, position: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"image {position}"
