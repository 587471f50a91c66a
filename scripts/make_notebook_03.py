"""Regenerate notebooks/03_image_search.ipynb: python scripts/make_notebook_03.py"""

from nbbuild import build, code, md

INTRO = """
Zero-shot classification compared one image with a few sentences. Turn it around and compare one
sentence with *every image you own*: that is text-based image search. CLIP puts images and texts in the
same space, so "find photos of a dog on a beach" becomes: embed the sentence, take the images whose
embeddings point the same way.

In this lesson you will

* embed a whole folder of images **once**, in batches, and keep the embeddings in a **cache** on disk that
  is keyed by the model and by each file's content, so a re-run only embeds what is new or changed;
* search by **text**, by **image** ("more like this") and by **image arithmetic** (this picture, but blue);
* type queries into a **search box** with a live gallery;
* measure retrieval quality with **recall@1/5/10** on Shapes World;
* see when exact search stops being enough and an approximate **FAISS** index pays off.

With internet the search runs over real photos with CLIP ViT-B-32; offline it searches 1,200 Shapes World
images with the course's tiny CLIP. The code is the same.
"""

CELLS = [
    md("""
## 1. The idea in two lines

If every image embedding and the query embedding have length 1, their dot product is the cosine
similarity. Search is then one matrix product and a top-k:

```python
scores = image_embeddings @ query_embedding   # one score per image
best = scores.topk(k)                        # the k most similar images
```

Everything else in this lesson is plumbing that makes those two lines work on a real folder: batching,
caching, broken files, and scale. First, the model: a real CLIP with internet, the tiny Shapes World CLIP
offline.
"""),
    code("""
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from lessonlib import data, registry
from lessonlib.images import load_image, sample_photo_paths
from lessonlib.search import (
    ImageIndex,
    build_faiss_index,
    caption_relevance,
    chance_recall_at_k,
    exact_search,
    recall_at_k,
    search_box,
)

MODEL = "ViT-B-32" if cfg.mode == "pretrained" else "tiny"
model, preprocess, tokenizer = registry.load_clip(MODEL)
print(f"{MODEL}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
"""),
    md("""
## 2. A collection on disk

Image search starts from a folder. We make one in a scratch directory: 1,200 Shapes World images saved as
PNG files, each named after its full caption so that you can judge the results by eye. In pretrained mode
we also copy the sample photos of lesson 02 (an astronaut, a cat, a rocket, ...) into a second folder;
that is the collection the real CLIP searches.
"""),
    code("""
WORK = Path(tempfile.mkdtemp(prefix="lesson03_"))
shapes = data.ShapesWorld(1200, split="all", seed=3)
full_captions = [data.caption(shapes.objects(i), detail="full") for i in range(len(shapes))]
shapes_folder = WORK / "shapes"
shapes_folder.mkdir()
for i, text in enumerate(full_captions):
    shapes.pil(i).save(shapes_folder / f"{i:04d}_{text.replace(' ', '_')}.png")

if cfg.mode == "pretrained":
    collection = WORK / "photos"
    collection.mkdir()
    for name, path in sample_photo_paths().items():
        shutil.copy(path, collection / f"{name}{path.suffix}")
else:
    collection = shapes_folder
print(f"collection: {len(list(collection.iterdir()))} files in {collection.name}/")
"""),
    md("""
### Index it, with a cache

`ImageIndex` embeds the images in batches (one forward pass per 64 images, not per image) behind a
progress bar. Each embedding is stored in a cache file under a key made of

* the **model**: a hash of all its weights and of its preprocessing, so another checkpoint never reuses
  these vectors;
* the image's **content**: the sha256 of the file's bytes, so renaming a file costs nothing and editing
  it makes it new.

The cache is one safetensors file, written to a temporary file and then renamed over the old one. A
rename is atomic, so a run that is interrupted leaves the old cache or the new one, never half a file;
and a run that stops with an error (or the ■ button) first saves what it embedded.

Watch the progress bar and the report line.
"""),
    code("""
cache_file = WORK / "embeddings.safetensors"
index = ImageIndex(model, preprocess, tokenizer, cache=cache_file, model_name=MODEL)
report = index.add_folder(collection)
print(report)
print(index)
"""),
    md("""
Now pretend it is tomorrow: a new `ImageIndex` over the same folder. Every image is found in the cache,
so nothing is embedded.
"""),
    code("""
again = ImageIndex(model, preprocess, tokenizer, cache=cache_file, model_name=MODEL)
rerun = again.add_folder(collection, progress=False)
print(rerun)
"""),
    md("""
The key is the content, not the file name. Copy the folder somewhere else, rename one file, change one
pixel of another and add a new picture: only the edited and the new file go through the model.
"""),
    code("""
demo = WORK / "copy"
shutil.copytree(collection, demo)
files = sorted(demo.iterdir())
files[0].rename(files[0].with_name("renamed_" + files[0].name))
edited = np.array(load_image(files[1]))
edited[0, 0] = 255 - edited[0, 0]
Image.fromarray(edited).save(files[1])
Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(demo / "new_grey_square.png")

changed = ImageIndex(model, preprocess, tokenizer, cache=cache_file, model_name=MODEL)
after_edit = changed.add_folder(demo, progress=False)
print(after_edit)
"""),
    md("""
Self-check: the re-run embedded nothing, and after the edits exactly two images (the edited one and the
new one) went through the model. The renamed file was recognised by its content.
"""),
    code("""
assert report.added == len(files) and report.embedded + report.from_cache == report.added
assert rerun.embedded == 0 and rerun.from_cache == len(files)
assert after_edit.embedded == 2 and after_edit.added == len(files) + 1
assert any(name.endswith("renamed_" + files[0].name) for name in changed.names)
"""),
    md("""
### Files that cannot be read

Real folders hold surprises: a half-downloaded JPEG, a text file with an image ending. They are skipped,
listed in `report.skipped` and named in a warning; everything else is indexed. (Other bad inputs get an
error that says what would work: an empty folder, an empty query, a cache path that is not a cache. A
cache written by *another model* is rebuilt, with a message.)
"""),
    code("""
(demo / "notes.png").write_text("this is not a picture")
broken = ImageIndex(model, preprocess, tokenizer, cache=cache_file, model_name=MODEL)
with_broken = broken.add_folder(demo, progress=False)
print(with_broken)
assert [Path(name).name for name, _ in with_broken.skipped] == ["notes.png"]
assert with_broken.added == after_edit.added
for bad_query in ["", "   "]:
    try:
        index.search(bad_query)
    except ValueError as err:
        print(f"search({bad_query!r}) -> ValueError: {err}")
"""),
    md("""
## 3. Search by text

`index.search(text, k)` embeds the text with the text tower and runs the two lines of section 1. The
gallery shows each hit with its rank and cosine similarity ("cos"). Offline, the file names are the captions:
check whether the top results really are what you asked for.
"""),
    code("""
query = "a small red circle" if cfg.mode == "offline" else "a photo of a cat"
hits = index.search(query, k=8)
fig = index.show(hits, title=repr(query))
plt.show()
"""),
    md("""
Self-check: offline, all eight hits are red circles (their file names say so); with the real CLIP, the
best match for "a photo of a cat" is the cat photo.
"""),
    code("""
if cfg.mode == "offline":
    assert all("red_circle" in h.name for h in hits), [Path(h.name).name for h in hits]
else:
    assert Path(hits[0].name).stem == "chelsea", hits[0]
"""),
    md("""
Under the hood it is exactly the two lines: the self-check recomputes the ranking by hand.
"""),
    code("""
q = index.query_embedding(query)
scores = index.embeddings @ q
by_hand = scores.topk(8)
assert [h.position for h in hits] == by_hand.indices.tolist()
assert np.allclose([h.score for h in hits], by_hand.values.numpy(), atol=1e-5)
print("cosine similarities of the top 8:", np.round(by_hand.values.numpy(), 3))
"""),
    md("""
How well does a text query separate what it asks for from the rest? Offline we know the truth (the
caption of every image), so we can draw the score of every image, split into images that match the
query's colour and shape and images that do not. A good model gives two separate humps; the overlap is
where search makes mistakes. (In pretrained mode this cell embeds the 1,200 Shapes World images with
ViT-B-32 once: about a minute on a CPU, seconds on a GPU. Offline they are already in the cache.)
"""),
    code("""
shape_paths = [shapes_folder / f"{i:04d}_{t.replace(' ', '_')}.png" for i, t in enumerate(full_captions)]
shape_index = ImageIndex(model, preprocess, tokenizer, cache=cache_file, model_name=MODEL)
print(shape_index.add(shape_paths))  # offline these are the collection's files: all in the cache
labels = shapes.labels()
probe = ("red", "circle")
s = (shape_index.embeddings @ shape_index.query_embedding(f"a {probe[0]} {probe[1]}")).numpy()
match = np.array([lab == probe for lab in labels])
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.hist(s[~match], bins=40, alpha=0.6, label="other images")
ax.hist(s[match], bins=40, alpha=0.6, label=f"{probe[0]} {probe[1]}s")
ax.set_xlabel("cosine similarity with the query 'a red circle'")
ax.set_ylabel("number of images")
ax.set_title(f"Scores of {len(s)} Shapes World images ({MODEL})")
ax.legend()
plt.show()
print(f"mean score: {probe[0]} {probe[1]}s {s[match].mean():.3f}, others {s[~match].mean():.3f}")
assert s[match].mean() > s[~match].mean(), "matching images should score higher on average"
"""),
    md("""
## 4. A search box

Type a query; the gallery updates as you type. (In a static view of the notebook you only see the box;
run it.) `box.hits` holds the latest results, which the self-check uses.
"""),
    code("""
box = search_box(index, k=8, value="a blue square" if cfg.mode == "offline" else "an animal")
box
"""),
    code("""
box.children[0].value = "a green triangle" if cfg.mode == "offline" else "a vehicle"
assert len(box.hits) == min(8, len(index)) and "<img" in box.children[1].value
print([h.name.split("/")[-1] for h in box.hits[:3]])
"""),
    md("""
## 5. Search by image, and image arithmetic

An image is a query too: embed it with the image tower and look for its neighbours ("more like this").
The image itself comes first with cosine similarity 1.

A query can also be a weighted list. `[(image, 1.0), ("red", -1.0), ("blue", 1.0)]` is the normalised
sum of the parts' unit vectors: *this picture, minus red, plus blue*. Whether such arithmetic works tells
you how separately the model stores colour and shape.
"""),
    code("""
if cfg.mode == "offline":
    start = next(i for i, lab in enumerate(labels) if lab == ("red", "circle"))
    start_image = shape_paths[start]
    arithmetic = [(start_image, 1.0), ("red", -1.0), ("blue", 1.0)]
    search_in = shape_index
else:
    start_image = next(p for p in collection.iterdir() if p.stem == "chelsea")
    arithmetic = [(start_image, 1.0), ("a cat", -1.0), ("a dog", 1.0)]
    search_in = index

like_this = search_in.search(start_image, k=6)
search_in.show(like_this, title=f"the image {start_image.name}")
plt.show()
mixed = search_in.search(arithmetic, k=6)
search_in.show(mixed, title="image - 'red' + 'blue'" if cfg.mode == "offline" else "cat photo - 'a cat' + 'a dog'")
plt.show()
assert like_this[0].score > 0.999  # the image itself (or an identical copy) comes first
assert str(start_image) in [h.name for h in like_this if h.score > 0.999]
"""),
    md("""
Offline we can count: among the top 20 results, how many are blue, and how many are still circles? The
plain image query finds red circles; the arithmetic should move the colour and keep the shape.
"""),
    code("""
if cfg.mode == "offline":
    def colours_and_shapes(hits):
        found = [labels[h.position] for h in hits]
        return sum(c == "blue" for c, _ in found), sum(s == "circle" for _, s in found)

    blue_plain, circles_plain = colours_and_shapes(shape_index.search(start_image, k=20))
    blue_mixed, circles_mixed = colours_and_shapes(shape_index.search(arithmetic, k=20))
    print(f"image query:        {blue_plain:2d}/20 blue, {circles_plain:2d}/20 circles")
    print(f"image - red + blue: {blue_mixed:2d}/20 blue, {circles_mixed:2d}/20 circles")
    assert blue_mixed > blue_plain, "the arithmetic should bring in blue images"
"""),
    md("""
## 6. How good is the search? Recall@k

For retrieval the usual score is **recall@k**: the fraction of queries for which at least one right
image is among the first k results. Shapes World gives us the truth. We use every distinct caption as a
query; the right images are those with exactly that caption.

* With **full** captions ("a small red circle at the top") about 400 queries each describe about 3 of
  the 1,200 images: the model must get colour, shape, size and position right.
* With **simple** captions ("a red circle") the 24 queries each have ~50 right answers, among them the
  6 colour/shape pairs the tiny model never saw in training (`data.HELD_OUT_PAIRS`).

Chance is what a random ranking scores; the model has to be far above it.
"""),
    code("""
results = {}
for detail in ("full", "simple"):
    captions = [data.caption(shapes.objects(i), detail=detail) for i in range(len(shapes))]
    queries, relevant = caption_relevance(captions)
    text_features = shape_index.embed_texts(queries)
    similarity = text_features @ shape_index.embeddings.T
    results[detail] = (recall_at_k(similarity, relevant), chance_recall_at_k(relevant), len(queries))
    if detail == "simple":
        held = torch.tensor([tuple(q.split()[-2:]) in data.HELD_OUT_PAIRS for q in queries])
        results["simple, held-out pairs"] = (
            recall_at_k(similarity[held], relevant[held]),
            chance_recall_at_k(relevant[held]),
            int(held.sum()),
        )
for name, (recall, chance, n) in results.items():
    print(f"{name:>22} ({n:3d} queries): " + ", ".join(
        f"R@{k} {recall[k]:.2f} (chance {chance[k]:.2f})" for k in recall))
"""),
    code("""
fig, ax = plt.subplots(figsize=(8, 3.5))
width = 0.25
for j, (name, (recall, chance, n)) in enumerate(results.items()):
    x = np.arange(3) + (j - 1) * width
    ax.bar(x, [recall[k] for k in (1, 5, 10)], width, label=f"{name} ({n} queries)")
    ax.scatter(x, [chance[k] for k in (1, 5, 10)], color="black", marker="_", s=200, zorder=3)
ax.set_xticks(range(3), ["recall@1", "recall@5", "recall@10"])
ax.set_ylabel("fraction of queries")
ax.set_ylim(0, 1.05)
ax.set_title(f"Caption-to-image retrieval on 1,200 Shapes World images ({MODEL}); black bars: chance")
ax.legend(fontsize=8)
plt.show()
"""),
    md("""
Self-check: recall grows with k (it must: a top 10 contains the top 5) and every recall is far above
chance. Offline we also check the tiny model's two strongest claims: most full captions find a right image
first, and so do most colour/shape pairs it never saw in training.
"""),
    code("""
for name, (recall, chance, _n) in results.items():
    assert recall[1] <= recall[5] <= recall[10]
    assert recall[10] > 2 * chance[10] or recall[10] > 0.95, (name, recall, chance)
if cfg.mode == "offline":
    assert results["full"][0][1] > 0.5, results["full"]
    assert results["simple, held-out pairs"][0][1] >= 0.5, results["simple, held-out pairs"]
"""),
    md("""
## 7. Scale: exact search, and when FAISS pays off

Exact search reads every embedding for every query. That is fine for a course-sized collection: with
100,000 images of the tiny model (64 numbers each) it is one 100,000 x 64 matrix-vector product, a few
milliseconds. Here we time a whole text query (tokenise, text tower, search) over 100,000 cached
embeddings. (Timings depend on your machine and on what else it runs; they are printed, not checked. On
the course's 2-core test machine the median was about 9 ms; see `BENCHMARKS.md`.)
"""),
    code("""
big = ImageIndex(model, preprocess, tokenizer, cache=None)
dim = index.embeddings.shape[1]
big.add_embeddings(torch.nn.functional.normalize(torch.randn(100_000, dim), dim=1),
                   names=[f"vector {i}" for i in range(100_000)])
big.search("a red circle", k=10)  # warm-up
times = []
for _ in range(20):
    t = time.perf_counter()
    big.search("a red circle", k=10)
    times.append(time.perf_counter() - t)
print(f"one text query over {len(big):,} embeddings of size {dim}: median {1000 * statistics.median(times):.1f} ms")
"""),
    md("""
For millions of images, or many queries per second, an **approximate** index answers without looking at
every vector: HNSW walks a graph of near neighbours, IVF only scans the few k-means cells nearest the
query. They trade a little recall for speed, and they cost build time. `index.use_faiss("hnsw")` switches
an `ImageIndex` to FAISS; below we compare on 20,000 vectors. Look at *recall vs exact* as much as at the
time: an approximate index that misses the right answer is not faster, it is wrong.

`benchmarks/bench_search.py` measures the same from 1,000 to 1,000,000 vectors (results in
`BENCHMARKS.md`). On the course's 2-core machine: up to 10,000 images every method answers in about a
millisecond; FAISS's *exact* `IndexFlatIP` is 1.2-4x faster than torch at every size; the approximate
indexes pay off from about 100,000 vectors (64 numbers: 11-23x faster at recall 0.92-1.0; ViT-B-32's 512
numbers: already 8-15x at 10,000) and by 65-100x at 1,000,000.
"""),
    code("""
try:
    import faiss
except ImportError:
    faiss = None
    print("FAISS is not installed (pip install faiss-cpu): exact search only")

if faiss is not None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(200, dim, generator=g)  # clustered, like real embeddings
    vectors = centres[torch.randint(200, (20_000,), generator=g)]
    vectors = torch.nn.functional.normalize(vectors + 0.5 * torch.randn(20_000, dim, generator=g), dim=1)
    queries = torch.nn.functional.normalize(vectors[:50] + 0.1 * torch.randn(50, dim, generator=g), dim=1)
    _, truth = exact_search(vectors, queries, 10)

    def ms_per_query(search_one):
        t = time.perf_counter()
        for q in queries:
            search_one(q)
        return 1000 * (time.perf_counter() - t) / len(queries)

    rows = {"exact torch": (0.0, ms_per_query(lambda q: exact_search(vectors, q, 10)), 1.0)}
    for kind in ("flat", "hnsw", "ivf"):
        t = time.perf_counter()
        fidx = build_faiss_index(vectors, kind)
        build_s = time.perf_counter() - t
        ms = ms_per_query(lambda q, f=fidx: f.search(q[None].numpy(), 10))
        found = fidx.search(queries.numpy(), 10)[1]
        recall = np.mean([len(set(f) & set(e.tolist())) / 10 for f, e in zip(found, truth)])
        rows[kind] = (build_s, ms, recall)
    for kind, (build_s, ms, recall) in rows.items():
        print(f"{kind:>12}: build {build_s:5.2f} s, {ms:6.3f} ms per query, recall@10 vs exact {recall:.3f}")
    assert rows["flat"][2] == 1.0, "IndexFlatIP is exact: it must find the same neighbours"
    assert rows["hnsw"][2] > 0.8, "HNSW should find most true neighbours"
"""),
    md("""
The `ImageIndex` itself switches with one call and gives the same answers as exact search when the index
is exact (`flat`).
"""),
    code("""
if faiss is not None:
    exact_hits = [h.position for h in index.search(query, k=5)]
    index.use_faiss("flat")
    assert [h.position for h in index.search(query, k=5)] == exact_hits
    index.use_faiss(None)  # back to exact torch search
"""),
    md("""
## Summary

* Text-to-image search with CLIP is a matrix product and a top-k over unit-length embeddings; image
  queries and mixed text + image queries use the same two lines.
* Embed once: an on-disk cache keyed by the model's weights and each file's sha256 means a re-run embeds
  only new or changed images, renames are free, and another model never reuses the wrong vectors.
* Write caches atomically (temporary file + `os.replace`) and save on errors, so an interrupted run
  costs nothing; skip unreadable files, list them, and go on.
* Recall@k measures retrieval; compare it with chance, and look at harder queries (full captions,
  held-out colour/shape pairs) to see what the model really learned.
* Exact search is fast up to about a hundred thousand images on a laptop; from there on (earlier for
  512-number embeddings), an approximate FAISS index (HNSW, IVF) trades a little recall for a lot of
  speed, and FAISS's exact flat index is a free speed-up at any size.

## Exercises

1. Press ■ while a large folder is being indexed (for example 20,000 Shapes World images), then run the
   cell again. How many images does the second run embed? Why is the cache file never half-written?
2. Load a *different* model (`registry.load_clip("tiny")` vs a checkpoint of your own) with the same
   `cache_file`. What does `ImageIndex` print, and why must it not reuse the cached vectors?
3. Find a query where image arithmetic fails (for example change the shape instead of the colour:
   image - "circle" + "square"). What does that say about how the tiny model stores shape?
4. Compute recall@1 for *position* captions only (`detail="position"`: "a red circle at the top"). Is
   position harder for the tiny model than colour? How often do its training captions mention position?
5. In section 7, raise `efSearch` of the HNSW index (`build_faiss_index(vectors, "hnsw", ef_search=256)`)
   and `nprobe` of the IVF index. Plot recall@10 against time per query.
6. (pretrained) Index a folder of your own photos with `cache="auto"` and search it with the search box.
   How long does the second run take?

## References

* A. Radford et al., *Learning Transferable Visual Models From Natural Language Supervision*, ICML 2021
  ([arXiv:2103.00020](https://arxiv.org/abs/2103.00020)): CLIP and its image-text retrieval results
  (recall@k on Flickr30k and MSCOCO).
* G. Ilharco et al., [OpenCLIP](https://github.com/mlfoundations/open_clip) (2021): the models and
  `encode_image` / `encode_text`.
* R. Beaumont, [clip-retrieval](https://github.com/rom1504/clip-retrieval): embedding and searching
  billions of images with CLIP and FAISS.
* J. Johnson, M. Douze, H. Jégou, *Billion-scale similarity search with GPUs*, IEEE Transactions on Big
  Data 2019 ([arXiv:1702.08734](https://arxiv.org/abs/1702.08734)), and the
  [FAISS documentation](https://github.com/facebookresearch/faiss/wiki): `IndexFlatIP`, `IndexIVFFlat`.
* Y. Malkov, D. Yashunin, *Efficient and robust approximate nearest neighbor search using Hierarchical
  Navigable Small World graphs*, IEEE TPAMI 2020 ([arXiv:1603.09320](https://arxiv.org/abs/1603.09320)).
* Hugging Face, [safetensors](https://huggingface.co/docs/safetensors): the cache's file format.
"""),
]

if __name__ == "__main__":
    out = build("03_image_search.ipynb", "03 · Image search", INTRO, CELLS)
    print(f"wrote {out}")
