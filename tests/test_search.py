"""Tests of lessonlib.search: the embedding cache, queries, FAISS, the gallery and search box, bad inputs.

(recall@k and the other metrics are tested in tests/test_metrics.py.)

The models are small random-weight open_clip CLIPs built here (plus one real ViT-B-32 architecture with
random weights), so the tests need no download and check the same code paths as pretrained weights.
"""

from __future__ import annotations

import copy
import shutil
import warnings

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from PIL import Image

from lessonlib.search import (
    CACHE_FORMAT,
    EmbeddingCache,
    Hit,
    ImageIndex,
    build_faiss_index,
    exact_search,
    model_fingerprint,
    split_preprocess,
)
from lessonlib.tokenizer import EOT_ID, WordTokenizer
from lessonlib.widgets import search_box


def make_clip(seed: int = 0):
    """A random-weight open_clip CLIP small enough to run in milliseconds, with the tiny tokenizer."""
    torch.manual_seed(seed)
    tok = WordTokenizer()
    model = CLIP(
        32,
        CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
        CLIPTextCfg(
            context_length=tok.context_length,
            vocab_size=tok.vocab_size,
            width=32,
            heads=2,
            layers=1,
            pool_type="eos",
            eos_id=EOT_ID,
        ),
    )
    return model, open_clip.transform.image_transform(32, is_train=False), tok


class CountingModel(torch.nn.Module):
    """Wraps a CLIP and counts the images it embeds, to check what the cache really saves."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.images_seen = 0

    def encode_image(self, x, normalize=False):
        self.images_seen += x.shape[0]
        return self.inner.encode_image(x, normalize=normalize)

    def encode_text(self, x, normalize=False):
        return self.inner.encode_text(x, normalize=normalize)


def random_images(n: int, seed: int = 0, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


def write_images(folder, images, prefix="img"):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        path = folder / f"{prefix}{i:03d}.png"
        im.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def clip():
    return make_clip()


@pytest.fixture
def counting(clip):
    model, preprocess, tok = clip
    return CountingModel(model), preprocess, tok


# ------------------------------------------------------------------------------------------ keys


def test_fingerprint_follows_weights_and_preprocessing(clip):
    model, preprocess, _ = clip
    key = model_fingerprint(model, preprocess)
    assert key == model_fingerprint(copy.deepcopy(model), preprocess)  # same weights, same key
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.visual.proj[0, 0] += 1e-3
    assert model_fingerprint(changed, preprocess) != key
    other_pre = open_clip.transform.image_transform(48, is_train=False)
    assert model_fingerprint(model, other_pre) != key
    with pytest.raises(TypeError, match="torch.nn.Module"):
        model_fingerprint("ViT-B-32")


# -------------------------------------------------------------------------------------- indexing


def test_embeddings_equal_bare_encode_image(clip, tmp_path):
    model, preprocess, tok = clip
    images = random_images(10)
    index = ImageIndex(model, preprocess, tok, cache=tmp_path / "c.safetensors", batch_size=4)
    report = index.add(images, progress=False)
    assert (report.added, report.embedded, report.from_cache, report.skipped) == (10, 10, 0, [])
    with torch.no_grad():
        expected = F.normalize(
            model.encode_image(torch.stack([preprocess(im) for im in images])), dim=-1
        )
    torch.testing.assert_close(index.embeddings, expected, atol=1e-5, rtol=1e-4)
    assert index.names == [f"image {i}" for i in range(10)]


def test_split_preprocess_gives_the_same_pixels(clip):
    _, preprocess, _ = clip
    per_image, per_batch = split_preprocess(preprocess)
    assert type(per_batch).__name__ == "Normalize"
    images = random_images(4, size=40)
    batched = per_batch(torch.stack([per_image(im) for im in images]))
    torch.testing.assert_close(batched, torch.stack([preprocess(im) for im in images]))

    def plain(im):  # any other callable is applied per image, untouched
        return preprocess(im)

    assert split_preprocess(plain) == (plain, None)


def test_any_callable_preprocess_works(clip):
    model, preprocess, tok = clip
    images = random_images(5)
    index = ImageIndex(model, lambda im: preprocess(im), tok, cache=None, batch_size=2)
    index.add(images, progress=False)
    reference = ImageIndex(model, preprocess, tok, cache=None)
    reference.add(images, progress=False)
    torch.testing.assert_close(index.embeddings, reference.embeddings)


def test_model_mode_is_restored(clip, tmp_path):
    model, preprocess, tok = clip
    model.train()
    try:
        index = ImageIndex(model, preprocess, tok, cache=None)
        index.add(random_images(3), progress=False)
        index.search("a red circle", k=1)
        assert model.training
    finally:
        model.eval()


def test_rerun_embeds_only_new_or_changed_files(counting, tmp_path):
    model, preprocess, tok = counting
    folder = tmp_path / "photos"
    paths = write_images(folder, random_images(12))
    cache = tmp_path / "cache.safetensors"

    first = ImageIndex(model, preprocess, tok, cache=cache, batch_size=5).add_folder(
        folder, progress=False
    )
    assert (first.embedded, first.from_cache, model.images_seen) == (12, 0, 12)

    model.images_seen = 0
    again = ImageIndex(model, preprocess, tok, cache=cache).add_folder(folder, progress=False)
    assert (again.added, again.embedded, again.from_cache, model.images_seen) == (12, 0, 12, 0)

    # A rename keeps the content key; an edit changes it; a new file is new.
    paths[0].rename(folder / "renamed.png")
    edited = np.asarray(Image.open(paths[1])).copy()
    edited[0, 0] = 255 - edited[0, 0]
    Image.fromarray(edited).save(paths[1])
    random_images(1, seed=99)[0].save(folder / "new.png")
    model.images_seen = 0
    index = ImageIndex(model, preprocess, tok, cache=cache)
    third = index.add_folder(folder, progress=False)
    assert (third.added, third.embedded, third.from_cache, model.images_seen) == (13, 2, 11, 2)
    assert str(folder / "renamed.png") in index.names


def test_interrupted_run_leaves_usable_cache(counting, tmp_path, monkeypatch):
    model, preprocess, tok = counting
    images = random_images(20)
    cache = tmp_path / "cache.safetensors"
    index = ImageIndex(model, preprocess, tok, cache=cache, batch_size=4)
    calls = {"n": 0}
    real = index._encode_images

    def failing(pixels):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C in a notebook raises
        return real(pixels)

    monkeypatch.setattr(index, "_encode_images", failing)
    with pytest.raises(KeyboardInterrupt):
        index.add(images, progress=False)
    assert len(index) == 0  # the index itself is unchanged ...
    saved = EmbeddingCache(cache, index.model_key)  # ... but the cache on disk loads
    assert len(saved) == 8
    assert not list(tmp_path.glob("*.tmp"))

    model.images_seen = 0
    resumed = ImageIndex(model, preprocess, tok, cache=cache, batch_size=4)
    report = resumed.add(images, progress=False)
    assert (report.embedded, report.from_cache, model.images_seen) == (12, 8, 12)
    fresh = ImageIndex(model, preprocess, tok, cache=None, batch_size=4)
    fresh.add(images, progress=False)
    torch.testing.assert_close(resumed.embeddings, fresh.embeddings)


def test_periodic_save_during_long_run(clip, tmp_path, monkeypatch):
    model, preprocess, tok = clip
    cache = tmp_path / "cache.safetensors"
    index = ImageIndex(model, preprocess, tok, cache=cache, batch_size=2, save_every_s=0.0)
    sizes = []
    real_save = index.cache.save

    def spy():
        wrote = real_save()
        if wrote:
            sizes.append(len(EmbeddingCache(cache, index.model_key)))
        return wrote

    monkeypatch.setattr(index.cache, "save", spy)
    index.add(random_images(6), progress=False)
    assert sizes == [2, 4, 6]


def test_crash_while_writing_keeps_old_cache(clip, tmp_path, monkeypatch):
    import safetensors.torch

    model, preprocess, tok = clip
    cache = tmp_path / "cache.safetensors"
    ImageIndex(model, preprocess, tok, cache=cache).add(random_images(3), progress=False)
    before = cache.read_bytes()

    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)  # a torn, unusable file
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    index = ImageIndex(model, preprocess, tok, cache=cache)
    with pytest.raises(OSError, match="disk full"):
        index.add(random_images(2, seed=5), progress=False)
    assert cache.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cache.safetensors"]


def test_duplicate_images_are_embedded_once(counting):
    model, preprocess, tok = counting
    images = random_images(3)
    index = ImageIndex(model, preprocess, tok, cache=None)
    report = index.add(images + [images[0].copy()], progress=False)
    assert (report.added, report.embedded, model.images_seen) == (4, 3, 3)
    assert (report.from_cache, report.duplicates) == (0, 1)  # a twin is not "from the cache"
    assert "1 duplicate (same content as another image here" in str(report)
    torch.testing.assert_close(index.embeddings[0], index.embeddings[3])
    again = index.add(images + [images[0].copy()], progress=False)
    assert (again.embedded, again.from_cache, again.duplicates) == (0, 4, 0)


def test_real_open_clip_architecture_with_random_weights(tmp_path):
    """The pretrained path (ViT-B-32 architecture, its preprocessing and BPE tokenizer), no download."""
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    photos = random_images(3, size=300)
    index = ImageIndex(
        model, preprocess, tokenizer, cache=tmp_path / "vit.safetensors", batch_size=2
    )
    index.add(photos, names=["a", "b", "c"], progress=False)
    assert index.embeddings.shape == (3, 512)
    hits = index.search([(photos[1], 1.0), ("a photo of a dog", 0.5)], k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert index.search(photos[2], k=1)[0].name == "c"


# ----------------------------------------------------------------------------------- bad inputs


def test_empty_or_missing_folder(clip, tmp_path):
    model, preprocess, tok = clip
    index = ImageIndex(model, preprocess, tok, cache=None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"holds no image files \(it is empty\)"):
        index.add_folder(empty)
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        index.add(empty)  # a folder passed to add() goes to add_folder
    with pytest.raises(FileNotFoundError, match="does not exist"):
        index.add_folder(tmp_path / "nope")
    picture = write_images(tmp_path / "one", random_images(1))[0]
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        index.add_folder(picture)
    assert index.add(str(picture), progress=False).added == 1  # one file path is one image


def test_unreadable_files_are_skipped_and_listed(clip, tmp_path):
    model, preprocess, tok = clip
    folder = tmp_path / "photos"
    write_images(folder, random_images(3))
    (folder / "broken.png").write_bytes(b"this is not a png")
    good = (folder / "img000.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    index = ImageIndex(model, preprocess, tok, cache=tmp_path / "c.safetensors")
    with pytest.warns(UserWarning, match="skipped 2 entries of folder 'photos': 2 image"):
        report = index.add_folder(folder, progress=False)
    assert report.added == 3 and len(index) == 3
    skipped = sorted(name for name, _ in report.skipped)
    assert [s.rsplit("/", 1)[-1] for s in skipped] == ["broken.png", "truncated.png"]
    assert "broken.png" in str(report)
    with pytest.warns(UserWarning, match="does not exist"):
        report = index.add([tmp_path / "missing.png"], progress=False)
    assert report.added == 0 and len(index) == 3


def test_folder_entries_that_are_not_images_are_reported(clip, tmp_path):
    """Nothing in a folder is dropped silently: an .svg, a sub-folder named like an image, a text file
    and a broken PNG are each listed with a reason, named in one warning, and the good images added."""
    model, preprocess, tok = clip
    folder = tmp_path / "photos"
    write_images(folder, random_images(3))
    (folder / "svg.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (folder / "a_folder.jpg").mkdir()
    write_images(folder / "a_folder.jpg", random_images(1, seed=7), prefix="inside")
    (folder / "notes.txt").write_text("not a picture")
    (folder / "broken.png").write_bytes(b"this is not a png")
    (folder / ".DS_Store").write_bytes(b"\0")  # hidden: left out quietly
    index = ImageIndex(model, preprocess, tok, cache=None)
    with pytest.warns(UserWarning) as caught:
        report = index.add_folder(folder, progress=False)
    assert report.added == 3 and len(index) == 3
    reasons = {name.rsplit("/", 1)[-1]: reason for name, reason in report.skipped}
    assert sorted(reasons) == ["a_folder.jpg", "broken.png", "notes.txt", "svg.svg"]
    assert "recursive=True" in reasons["a_folder.jpg"]
    assert "convert it to .png" in reasons["svg.svg"]
    assert "'.txt' is not one of" in reasons["notes.txt"]
    assert "not an image PIL can read" in reasons["broken.png"]
    [message] = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert message.startswith("skipped 4 entries of folder 'photos'")
    for name in ("svg.svg", "a_folder.jpg", "notes.txt", "broken.png", "recursive=True", ".png"):
        assert name in message, (name, message)
    assert str(tmp_path) not in message  # names only: the same on every machine
    assert "4 skipped" in str(report) and "svg.svg" in str(report)

    # recursive=True indexes the sub-folder's image instead of reporting the folder.
    deep = ImageIndex(model, preprocess, tok, cache=None)
    with pytest.warns(UserWarning, match="skipped 3 entries"):
        report = deep.add_folder(folder, recursive=True, progress=False)
    assert report.added == 4
    assert sorted(n.rsplit("/", 1)[-1] for n, _ in report.skipped) == [
        "broken.png",
        "notes.txt",
        "svg.svg",
    ]

    # A folder with only good images (and hidden files) reports nothing.
    clean = tmp_path / "clean"
    write_images(clean, random_images(2))
    (clean / ".DS_Store").write_bytes(b"\0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = ImageIndex(model, preprocess, tok, cache=None).add_folder(clean, progress=False)
    assert report.skipped == [] and report.added == 2
    assert not [w for w in caught if "skipped" in str(w.message)]


def test_warning_from_a_notebook_cell_names_no_machine_path(clip, tmp_path):
    """In Jupyter a cell's code lives in /tmp/ipykernel_<pid>/<hash>.py: the warning says <cell>."""
    model, preprocess, tok = clip
    index = ImageIndex(model, preprocess, tok, cache=None)
    cell = "index.add([missing], progress=False)"
    code = compile(cell, f"{tmp_path}/ipykernel_1234/5678.py", "exec")
    with pytest.warns(UserWarning, match="does not exist") as caught:
        exec(code, {"index": index, "missing": tmp_path / "missing.png"})
    assert caught[0].filename == "<cell>" and caught[0].lineno == 1
    with pytest.warns(UserWarning) as caught:  # from a script or a test: the caller's own file
        index.add([tmp_path / "missing.png"], progress=False)
    assert caught[0].filename == __file__


def test_cache_from_another_model_is_rebuilt(clip, tmp_path):
    model, preprocess, tok = clip
    cache = tmp_path / "cache.safetensors"
    ImageIndex(model, preprocess, tok, cache=cache, model_name="model A").add(
        random_images(4), progress=False
    )
    other, _, _ = make_clip(seed=1)
    with pytest.warns(UserWarning, match="written by model A .* rebuilding it"):
        index = ImageIndex(other, preprocess, tok, cache=cache, model_name="model B")
    report = index.add(random_images(4), progress=False)
    assert report.embedded == 4
    from safetensors import safe_open

    with safe_open(str(cache), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == CACHE_FORMAT and meta["model_key"] == index.model_key


def test_cache_path_that_is_not_a_cache_is_left_alone(clip, tmp_path):
    model, preprocess, tok = clip
    precious = tmp_path / "thesis.safetensors"
    precious.write_bytes(b"my only copy")
    with pytest.raises(ValueError, match="not an image-index cache: pass another cache path"):
        ImageIndex(model, preprocess, tok, cache=precious)
    assert precious.read_bytes() == b"my only copy"
    with pytest.raises(IsADirectoryError, match="is a folder"):
        ImageIndex(model, preprocess, tok, cache=tmp_path)


@pytest.mark.parametrize(
    "query, error, match",
    [
        ("", ValueError, "query is empty"),
        ("   ", ValueError, "query is empty"),
        (None, ValueError, "query is empty"),
        ([], ValueError, "empty list"),
        ([("a red circle", 1.0), ("a red circle", -1.0)], ValueError, "cancel out"),
        (("a red circle", float("nan")), ValueError, "not a finite number"),
        ([("a red circle", "heavy")], TypeError, "must be \\(text_or_image, number\\)"),
        (torch.ones(7), ValueError, "7 dimensions"),
    ],
)
def test_bad_queries(clip, query, error, match):
    model, preprocess, tok = clip
    index = ImageIndex(model, preprocess, tok, cache=None)
    index.add(random_images(3), progress=False)
    with pytest.raises(error, match=match):
        index.search(query, k=2)


def test_bad_search_arguments(clip):
    model, preprocess, tok = clip
    index = ImageIndex(model, preprocess, tok, cache=None)
    with pytest.raises(ValueError, match="index is empty"):
        index.search("a red circle")
    index.add(random_images(3), progress=False)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search("a red circle", k=0)
    with pytest.raises(ValueError, match="3 images but 2 names"):
        index.add(random_images(3), names=["a", "b"])
    with pytest.raises(ValueError, match="batch_size"):
        ImageIndex(model, preprocess, tok, cache=None, batch_size=0)
    with pytest.raises(TypeError, match="encode_image"):
        ImageIndex(torch.nn.Linear(2, 2), preprocess, tok, cache=None)
    with pytest.raises(ValueError, match="unknown FAISS index kind 'annoy'"):
        index.use_faiss("annoy")


def test_device_must_be_where_the_model_is(clip):
    """The index embeds through lessonlib.embed, which runs the model where its weights are."""
    model, preprocess, tok = clip
    assert ImageIndex(model, preprocess, tok, cache=None, device="cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="device='meta' but the model's weights are on cpu"):
        ImageIndex(model, preprocess, tok, cache=None, device="meta")


# ------------------------------------------------------------------------------------- queries


def test_text_query_is_exact_ranking(clip):
    model, preprocess, tok = clip
    index = ImageIndex(model, preprocess, tok, cache=None)
    index.add(random_images(20), progress=False)
    hits = index.search("a red circle", k=50)  # more than the collection: all of it
    assert len(hits) == 20 and [h.rank for h in hits] == list(range(1, 21))
    with torch.no_grad():
        text = F.normalize(model.encode_text(tok(["a red circle"])), dim=-1)[0]
    scores = index.embeddings @ text
    assert [h.position for h in hits] == scores.argsort(descending=True).tolist()
    np.testing.assert_allclose(
        [h.score for h in hits], scores.sort(descending=True).values, atol=1e-5
    )


def test_image_and_mixed_queries(clip, tmp_path):
    model, preprocess, tok = clip
    images = random_images(10)
    paths = write_images(tmp_path / "p", images)
    index = ImageIndex(model, preprocess, tok, cache=None)
    index.add(paths, progress=False)
    top = index.search(paths[4], k=1)[0]  # a Path is an image
    assert top.position == 4 and top.score == pytest.approx(1.0, abs=1e-5)
    assert index.search(str(paths[4]), k=1)[0].position == 4  # so is a str naming an image file
    query = [(images[2], 1.0), ("blue", 0.7), ("red", -0.3)]
    expected = (
        index.embed_images([images[2]])[0]
        + 0.7 * index.embed_texts(["blue"])[0]
        - 0.3 * index.embed_texts(["red"])[0]
    )
    torch.testing.assert_close(index.query_embedding(query), F.normalize(expected, dim=0))
    scores = index.embeddings @ F.normalize(expected, dim=0)
    assert index.search(query, k=1)[0].position == int(scores.argmax())
    assert index.search(index.embeddings[7], k=1)[0].position == 7  # a raw embedding


# --------------------------------------------------------------------------------------- faiss


def clustered(n, d=32, centres=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centres, d, generator=g)
    x = c[torch.randint(centres, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)
    return F.normalize(x, dim=1)


def test_faiss_flat_equals_exact_and_approximate_recall():
    pytest.importorskip("faiss")
    x, q = clustered(3000), clustered(50, seed=1)
    exact_scores, exact_idx = exact_search(x, q, 10)
    flat = build_faiss_index(x, "flat")
    s, i = flat.search(q.numpy(), 10)
    # Exact up to ties: vectors whose scores agree to float precision may come in another order, so
    # positions must agree in >= 99% of places (as lesson 03's self-check) and the scores everywhere.
    assert (torch.from_numpy(i) == exact_idx).float().mean() >= 0.99
    torch.testing.assert_close(torch.from_numpy(s), exact_scores, atol=1e-5, rtol=1e-5)
    for kind in ("hnsw", "ivf"):
        _, approx = build_faiss_index(x, kind, nprobe=16).search(q.numpy(), 10)
        found = np.mean([len(set(a) & set(b.tolist())) / 10 for a, b in zip(approx, exact_idx)])
        assert found > 0.9, (kind, found)


def test_index_with_faiss_matches_exact(clip):
    pytest.importorskip("faiss")
    model, preprocess, tok = clip
    index = ImageIndex(model, preprocess, tok, cache=None)
    index.add(random_images(30), progress=False)
    exact = index.search("a red circle", k=5)
    index.use_faiss("flat")
    assert [h.position for h in index.search("a red circle", k=5)] == [h.position for h in exact]
    index.add(random_images(5, seed=3), progress=False)  # the FAISS index follows the additions
    assert index._faiss.ntotal == 35
    assert index.search(index.embeddings[33], k=1)[0].position == 33
    assert "faiss flat" in repr(index)
    index.use_faiss(None)
    assert index._faiss is None


# ------------------------------------------------------------------------------- gallery, widget


def test_gallery_figure(clip):
    import matplotlib

    matplotlib.use("Agg")
    model, preprocess, tok = clip
    index = ImageIndex(model, preprocess, tok, cache=None)
    index.add(random_images(8), progress=False)
    hits = index.search("a red circle", k=5)
    fig = index.show(hits, title="'a red circle'")
    assert sum(len(ax.images) for ax in fig.axes) == 5
    assert "a red circle" in fig._suptitle.get_text()
    assert fig.axes[0].get_title().startswith("#1")
    with pytest.raises(ValueError, match="no hits"):
        index.show([])


def test_search_box_updates_live(clip):
    model, preprocess, tok = clip
    index = ImageIndex(model, preprocess, tok, cache=None)
    index.add(random_images(8), names=[f"pic{i}" for i in range(8)], progress=False)
    started = search_box(index, k=3, value="a red circle")  # filled before anyone types
    assert [h.position for h in started.hits] == [
        h.position for h in index.search("a red circle", k=3)
    ]
    assert (
        started.children[1].value.count("<img") == 3 and "a red circle" in started.children[1].value
    )
    box = search_box(index, k=3)
    text, gallery = box.children
    assert box.hits == [] and "type a few words" in gallery.value
    text.value = "a blue square"
    assert [h.position for h in box.hits] == [
        h.position for h in index.search("a blue square", k=3)
    ]
    assert gallery.value.count("<img") == 3 and box.hits[0].name in gallery.value
    text.value = "   "
    assert box.hits == [] and "type a few words" in gallery.value


def test_hit_is_plain_data():
    hit = Hit(rank=1, position=0, name="cat.jpg", score=0.3)
    assert hit.name == "cat.jpg" and hit.score == 0.3


def test_auto_cache_lives_in_the_lessonlib_cache(clip, tmp_path, monkeypatch):
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path))
    model, preprocess, tok = clip
    index = ImageIndex(model, preprocess, tok)
    index.add(random_images(2), progress=False)
    assert index.cache.path.parent == tmp_path / "image_index"
    assert index.cache.path.exists()
    shutil.rmtree(tmp_path / "image_index")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageIndex(model, preprocess, tok)  # a missing cache file is simply a fresh start


def test_add_embeddings(clip):
    model, preprocess, tok = clip
    index = ImageIndex(model, preprocess, tok, cache=None)
    index.add(random_images(2), progress=False)
    index.add_embeddings(3 * index.embeddings[:1].clone(), names=["copy of 0"])
    hits = index.search(index.embeddings[0], k=2)
    assert {h.position for h in hits} == {0, 2} and index.embeddings[2].norm() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no picture to show"):
        index.image(2)
    with pytest.raises(ValueError, match="5 dimensions, the index 32"):
        index.add_embeddings(torch.randn(1, 5), names=["x"])
    with pytest.raises(ValueError, match="2 embeddings, 1 names"):
        index.add_embeddings(torch.randn(2, 32), names=["x"])


def test_split_preprocess_skips_identity_resize_with_identical_pixels():
    """The fast path for images already at the input size gives exactly the full pipeline's numbers."""
    from lessonlib import models
    from lessonlib.search.preprocess import _SkipIdentityResize

    _, preprocess, _ = models.load_tiny_clip()
    per_image, per_batch = split_preprocess(preprocess)
    assert isinstance(per_image, _SkipIdentityResize)
    rng = np.random.default_rng(0)
    same = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(5)]
    other = [
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)),  # needs a real resize
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)),  # grayscale: converted
    ]
    for img in same + other:
        assert torch.equal(per_batch(per_image(img)[None])[0], preprocess(img))
