"""Text-based image search over cached CLIP embeddings.

Introduced in lesson 03_image_search.

The idea of the lesson fits in two lines: embed every image once, then a query is one matrix product::

    scores = image_embeddings @ query_embedding      # cosine similarity (all vectors have length 1)
    top = scores.topk(k)

``ImageIndex`` adds the plumbing that makes this usable on a real photo folder, one module per idea:

* ``index``: ``ImageIndex``: add images, query, show results (``results``: ``Hit``, ``AddReport``);
* ``folders``: what a folder holds: the image files to index and every other entry, with the reason;
* ``batches``: what the cache lacks is embedded in batches through ``lessonlib.embed`` (the path lesson
  02 uses too), behind a progress bar;
* ``cache``: embeddings on disk, keyed by the model (a hash of its weights and preprocessing) and by each
  image's content (sha256 of the file's bytes), in one safetensors file replaced atomically; a re-run
  embeds only new or changed images, and a run that stops with an error saves what it embedded;
* ``query``: texts, images, embeddings and weighted mixes such as
  ``[(photo, 1.0), ("a dog", 1.0), ("a cat", -1.0)]``;
* ``backends``: exact search (``torch`` matrix product + ``topk``) or an optional FAISS index for large
  collections (``ImageIndex.use_faiss``);
* ``preprocess``: the index's faster preprocessing (same pixels as the model's own).

The metrics of the lesson (``recall_at_k``, ...) are in ``lessonlib.metrics``, the search box in
``lessonlib.widgets`` and the result gallery in ``lessonlib.plotting``.

Example:
    >>> index = ImageIndex(model, preprocess, tokenizer, cache="photos.safetensors")  # doctest: +SKIP
    >>> index.add_folder("photos/")                                                   # doctest: +SKIP
    >>> index.search("a cat on a sofa", k=5)                                          # doctest: +SKIP
"""

from lessonlib.search.backends import FAISS_KINDS, build_faiss_index, exact_search
from lessonlib.search.cache import (
    CACHE_FORMAT,
    DIGEST_BYTES,
    EmbeddingCache,
    file_digest,
    image_digest,
    model_fingerprint,
)
from lessonlib.search.folders import list_folder
from lessonlib.search.index import ImageIndex
from lessonlib.search.preprocess import split_preprocess
from lessonlib.search.query import parse_query
from lessonlib.search.results import AddReport, Hit

__all__ = [
    "CACHE_FORMAT",
    "DIGEST_BYTES",
    "FAISS_KINDS",
    "AddReport",
    "EmbeddingCache",
    "Hit",
    "ImageIndex",
    "build_faiss_index",
    "exact_search",
    "list_folder",
    "file_digest",
    "image_digest",
    "model_fingerprint",
    "parse_query",
    "split_preprocess",
]
