"""lessonlib.classroom and classroom_cache: the instructor's ``cache`` and ``check`` commands, offline.

No weights can be downloaded here. As in test_registry, test_vqgan and test_pretrained_dalle, only
the one network call of each loader is replaced (``registry._hub_download``, ``torch.hub``'s
``download_url_to_file``, ``pretrained_dalle._download_url`` / ``_download_snapshot``, and
``classroom_cache._fetch_text_tower``) by a copy into the Hugging Face cache layout (a link to
``blobs/<hash>``). Everything after it is the real code: cache lookups, sha256 pins and records,
loading, classifying, searching, generating. The check runs on a real open_clip architecture built
small with random weights (it must FAIL), on the shipped tiny VQGAN and CLIP, and on a stand-in CLIP
that recognises the photos by their pixels (it must PASS: that tests the wiring, not a model).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision import transforms as T

from lessonlib import classroom, environment, registry
from lessonlib import classroom_cache as C
from lessonlib import pretrained_dalle as P
from lessonlib import zeroshot as zs
from lessonlib.registry import ModelSpec

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ARCH = "lessonlib-classroom-ViT"
CONFIG = {  # a real open_clip CLIP (ViT + transformer text tower, the BPE tokenizer), just small
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh course cache and Hugging Face cache; no proxy; setup()'s choices undone afterwards."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("LESSONLIB_THREADS", "1")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(environment, "_current", None)
    monkeypatch.setattr(environment, "hub_reachable", lambda host, **kw: True)
    monkeypatch.setattr(C.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 0, 10**13))
    threads = torch.get_num_threads()  # run_check calls setup(), which sets torch's threads
    yield
    torch.set_num_threads(threads)


def hub_file(repo_id: str, filename: str, data: bytes, cache: Path, blob: str | None = None):
    """Put ``data`` into a Hugging Face cache as huggingface_hub does: ``blobs/<hash>``, a link to it
    in ``snapshots/<commit>/`` and ``refs/main``. ``blob`` overrides the hash (a damaged file)."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    blob = blob or __import__("hashlib").sha256(data).hexdigest()
    (repo / "blobs" / blob).write_bytes(data)
    target = repo / "snapshots" / ("1" * 40) / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(os.path.relpath(repo / "blobs" / blob, target.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text("1" * 40)
    return target


@pytest.fixture()
def fake_hub(monkeypatch):
    """``registry._hub_download`` serves ``served[repo_id]`` (bytes) and counts the calls."""
    served, calls = {}, []

    def hub_download(repo_id, filename, cache):
        calls.append((repo_id, filename))
        if filename != "open_clip_model.safetensors" or repo_id not in served:
            raise ConnectionError(f"{filename} is not in {repo_id}")
        data, blob = served[repo_id]
        return str(hub_file(repo_id, filename, data, cache, blob))

    monkeypatch.setattr(registry, "_hub_download", hub_download)
    return served, calls


def run(argv, capsys) -> tuple[int, str]:
    code = classroom.main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --------------------------------------------------------------------------------------- the plan


def test_the_plan_holds_every_model_the_lessons_load():
    """Every model name a lesson passes to a pretrained loader is in the plan, and so is every row of
    the loaders' tables: a lesson that adds a model the cache command forgets fails here."""
    patterns = [
        r'load_clip\(\s*"([^"]+)"',
        r'load_pretrained_vqgan\(\s*"([^"]+)"',
        r'load_dalle\(\s*"([^"]+)"',
        r'MODEL = "([^"]+)" if cfg\.mode == "pretrained"',
    ]
    used = set()
    for lesson in NOTEBOOKS.glob("[0-9][0-9]_*.md"):
        text = lesson.read_text(encoding="utf-8")
        used |= {m for p in patterns for m in re.findall(p, text)}
    used -= set(registry.TINY_NAMES)
    assert {"ViT-B-32", "vqgan_imagenet_f16_16384", "min-dalle", "kandinsky-2.2"} <= used
    items = C.plan()
    assert used <= set(items), f"lessons load {sorted(used - set(items))}, the plan lacks them"
    assert set(registry.MODELS) | set(P.PRETRAINED_DALLE) <= set(items)
    assert all(item.size_mb > 0 and item.host for item in items.values())
    assert [i.key for i in C.select(gpu=False)] == [k for k, i in items.items() if not i.gpu_only]
    assert [i.key for i in C.select(gpu=True)] == list(items)
    assert [i.key for i in C.select(only="clip,dalle", skip="kandinsky", gpu=False)] == [
        "ViT-B-32",
        "min-dalle",
    ]
    with pytest.raises(ValueError, match="'vgqan'.*clip, dalle"):
        C.select(only="vgqan")


def test_dry_run_prints_the_plan_and_downloads_nothing(fake_hub, capsys):
    code, out = run(["cache", "--dry-run"], capsys)
    assert code == 0 and fake_hub[1] == []
    assert "ViT-B-32" in out and "605.0 MB" in out and "heibox.uni-heidelberg.de" in out
    if not torch.cuda.is_available():
        assert "not in this run: min-dalle (~5.40 GB), kandinsky-2.2" in out


# ------------------------------------------------------------------------------------- the cache


@pytest.fixture()
def text_tower(monkeypatch):
    """``_fetch_text_tower`` writes XLM-RoBERTa's files where the real calls put them: the tokenizer
    in the course's hub cache, the config in the default Hugging Face cache (small: git-hashed)."""
    import hashlib

    import huggingface_hub.constants as hf

    def fetch(arch):
        config = b'{"model_type": "xlm-roberta"}'
        sha1 = hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()  # noqa: S324
        hub_file("xlm-roberta-base", "config.json", config, Path(hf.HF_HUB_CACHE), sha1)
        hub_file("xlm-roberta-base", "tokenizer.json", b"{}" * 50, registry.hub_cache_dir())

    monkeypatch.setattr(C, "_fetch_text_tower", fetch)


def test_cache_downloads_checks_and_finds_it_again(fake_hub, text_tower, capsys):
    served, calls = fake_hub
    for spec in registry.MODELS.values():
        served[spec.hub_repo] = (b"weights of " + spec.arch.encode(), None)
    code, out = run(["cache", "--only", "clip,multilingual"], capsys)
    assert code == 0, out
    assert out.count("ok (the hub's sha256)") >= 4  # progress lines and table, both checkpoints
    assert "xlm-roberta-base (2 files)" in out and "ok (the hub's git hash)" in out
    assert "2 of 2 models cached and checked" in out
    n_calls = len(calls)
    assert all(C.is_cached(C.plan()[k]) for k in registry.MODELS)
    code, out = run(["cache", "--only", "clip,multilingual"], capsys)
    assert code == 0 and len(calls) == n_calls
    assert "ViT-B-32: checking" in out and "(2 models, 0.0 MB to download)" in out


def test_a_file_that_does_not_match_its_sha256_is_refused(fake_hub, capsys, monkeypatch):
    served, _ = fake_hub
    served["laion/CLIP-ViT-B-32-laion2B-s34B-b79K"] = (b"damaged weights", "ab" * 32)
    code, out = run(["cache", "--only", "clip"], capsys)
    assert (
        code == 1 and "FAILED: CheckpointError" in out and "the hub published " + "ab" * 32 in out
    )
    assert "0 of 1 models cached" in out and "Traceback" not in out
    # A file whose hash the course pins is refused when it differs from the pin.
    spec = registry.MODELS["ViT-B-32"]
    pinned = ModelSpec(**{**spec.__dict__, "sha256": {"open_clip_model.safetensors": "0" * 64}})
    monkeypatch.setitem(registry.MODELS, "ViT-B-32", pinned)
    served[spec.hub_repo] = (b"good weights", None)
    shutil.rmtree(registry.hub_cache_dir())
    code, out = run(["cache", "--only", "clip"], capsys)
    assert code == 1 and "expected " + "0" * 64 in out


def test_offline_fails_fast_with_what_to_do(fake_hub, capsys, monkeypatch):
    asked = []
    monkeypatch.setattr(environment, "hub_reachable", lambda host, **kw: asked.append(host))
    code, out = run(["cache", "--only", "clip,vqgan"], capsys)
    assert code == 2 and fake_hub[1] == [] and "Traceback" not in out
    assert sorted(asked) == ["heibox.uni-heidelberg.de", "huggingface.co"]
    assert "cannot reach huggingface.co (needed for ViT-B-32)" in out
    assert "Nothing was downloaded" in out and "make cache-pretrained" in out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out = run(["cache", "--only", "clip"], capsys)
    assert code == 2 and "unset HF_HUB_OFFLINE" in out
    monkeypatch.setattr(C.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 0, 10**8))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(environment, "hub_reachable", lambda host, **kw: True)
    code, out = run(["cache", "--only", "clip"], capsys)
    assert code == 2 and "605.0 MB to download but only 100.0 MB free" in out


def test_a_failed_download_is_one_line_not_a_traceback(fake_hub, capsys):
    code, out = run(["cache", "--only", "clip"], capsys)  # the fake hub serves nothing
    assert code == 1 and "Traceback" not in out
    assert "ViT-B-32: FAILED: ConnectionError: could not download ViT-B-32" in out
    assert "run `make cache-pretrained` again" in out


def test_vqgan_is_recorded_then_checked_and_a_swap_refused(capsys, monkeypatch):
    calls = []

    def fake_download(url, dst, progress=True):
        calls.append(url)
        Path(dst).write_bytes(b"model: {}" if "yaml" in url else b"checkpoint bytes")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    code, out = run(["cache", "--only", "vqgan"], capsys)
    assert code == 0 and len(calls) == 2 and "recorded now (no published sha256" in out
    code, out = run(["cache", "--only", "vqgan"], capsys)
    assert code == 0 and len(calls) == 2 and "ok (matches the record of the first download)" in out
    ckpt = environment.cache_dir() / "vqgan" / "vqgan_imagenet_f16_16384" / "last.ckpt"
    ckpt.write_bytes(b"swapped")
    code, out = run(["cache", "--only", "vqgan"], capsys)
    assert code == 1 and "FAILED: CheckpointError" in out and "last.ckpt" in out


def test_min_dalle_and_kandinsky_go_through_their_loaders(capsys, monkeypatch):
    monkeypatch.setattr(P, "_download_url", lambda url, dest: dest.write_bytes(url.encode()))
    calls = []

    def fake_snapshot(repo_id, revision):
        calls.append(repo_id)
        for part in P.KANDINSKY_PARTS[repo_id.rsplit("-", 1)[1]].split():
            name = part.replace("*", "model")
            target = hub_file(repo_id, name, name.encode() * 3, P.hub_cache_dir())
        return target.parents[len(Path(name).parts) - 1]

    monkeypatch.setattr(P, "_download_snapshot", fake_snapshot)
    code, out = run(["cache", "--only", "dalle"], capsys)
    assert code == 0, out
    assert "recorded now for 5 files" in out and "ok (the hub's sha256)" in out and len(calls) == 2
    assert C.is_cached(C.plan()["min-dalle"]) and C.is_cached(C.plan()["kandinsky-2.2"])
    code, out = run(["cache", "--only", "dalle"], capsys)
    assert code == 0 and "ok (matches the records of the first download)" in out
    assert len(calls) == 2
    decoder = environment.cache_dir() / "min-dalle" / "dalle_bart_mega" / "decoder.pt"
    decoder.write_bytes(b"swapped")
    blob = next(
        (P.hub_cache_dir() / "models--kandinsky-community--kandinsky-2-2-prior").glob("blobs/*")
    )
    blob.write_bytes(b"damaged")
    code, out = run(["cache", "--only", "dalle"], capsys)
    assert code == 1 and "0 of 2 models cached" in out and "decoder.pt" in out
    assert "kandinsky-community/kandinsky-2-2-prior: prior/model.safetensors" in out


# ------------------------------------------------------------------------------------- the check


class OracleCLIP(torch.nn.Module):
    """Not a model: it knows the 9 photos by their pixels and a few keywords per photo, so it
    answers lessons 02-05's questions right by construction: it tests the check's PASS wiring."""

    KEYWORDS = {
        "page": "page text",
        "chelsea": "cat tabby بلی",
        "astronaut": "astronaut flag person انسان",
        "rocket": "rocket launchpad راکٹ",
        "motorcycle_right": "motorcycle garage",
        "camera": "camera tripod",
        "horse": "horse silhouette گھوڑا",
        "coffee": "coffee cup saucer کافی",
        "grace_hopper": "woman navy uniform person انسان",
    }

    def __init__(self):
        super().__init__()
        self.preprocess = T.Compose([T.Resize((16, 16)), T.ToTensor()])
        photos, self.names = zs.example_photos()
        self.register_buffer("refs", torch.stack([self.preprocess(p) for p in photos]).flatten(1))
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(100.0)))
        self.words = {}
        for i, name in enumerate(self.names):
            for word in self.KEYWORDS[name].split():
                self.words.setdefault(word, []).append(i + 1)

    def tokenize(self, texts):
        rows = [
            [t for w in re.findall(r"\w+", text.lower()) for t in self.words.get(w, [])]
            for text in texts
        ]
        out = torch.zeros(len(rows), 16, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row[:16])] = torch.tensor(row[:16], dtype=torch.long)
        return out

    def encode_image(self, x, normalize=False):
        return F.one_hot(torch.cdist(x.flatten(1), self.refs).argmin(1), 9).float()

    def encode_text(self, tokens, normalize=False):
        counts = F.one_hot(tokens, 10)[..., 1:].sum(1).float()
        return counts + 1e-3


def oracle():
    model = OracleCLIP()
    return model, model.preprocess, model.tokenize


def test_check_passes_when_the_models_answer_right(capsys):
    model = oracle()
    loaders = {"ViT-B-32": lambda: model, "xlm-roberta-base-ViT-B-32": lambda: model}
    code = classroom.run_check(only="clip,multilingual", loaders=loaders)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS  lesson 02 zero-shot, ViT-B-32: 9/9 photos labelled as expected; 9/9" in out
    assert "PASS  lesson 02 Urdu prompts" in out and "chelsea -> 'cat'" in out
    assert "PASS  lesson 03 image search" in out and "'a photo of a cat' -> chelsea" in out
    assert "0 embedded, 9 from cache" in out and "3 PASS, 0 FAIL" in out


def test_check_fails_on_a_random_clip_loaded_from_the_cache(
    fake_hub, capsys, monkeypatch, tmp_path
):
    """The real path: the cache command fetches a small open_clip model with random weights, the
    check loads it with load_clip from the cache alone (hub switched off) and must report FAIL."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / f"{ARCH}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None)
    path = tmp_path / "random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    spec = ModelSpec(arch=ARCH, pretrained="random", hub_repo="lessonlib/classroom-clip")
    monkeypatch.setattr(registry, "MODELS", {ARCH: spec})
    monkeypatch.setattr(registry, "DEFAULT_MODEL", ARCH)
    fake_hub[0][spec.hub_repo] = (path.read_bytes(), None)
    assert C.run_cache(C.select(only=ARCH)) == 0
    seen_offline = []
    real_load = registry.load_clip
    monkeypatch.setattr(
        registry,
        "load_clip",
        lambda *a, **k: seen_offline.append(os.environ.get("HF_HUB_OFFLINE")) or real_load(*a, **k),
    )
    code, out = run(["check", "--only", ARCH], capsys)
    assert code == 1 and seen_offline == ["1"] and os.environ.get("HF_HUB_OFFLINE") is None
    line = next(x for x in out.splitlines() if "lesson 02 zero-shot" in x)
    assert line.startswith("FAIL") and "photos labelled as expected (not:" in line
    assert re.search(r"\(\d+\.\d s\)$", line) and "Traceback" not in out


def test_check_names_missing_weights_and_the_command(capsys):
    code, out = run(["check", "--only", "clip,vqgan"], capsys)
    assert code == 1
    assert "FAIL  lesson 02 zero-shot, ViT-B-32: not in the cache: ViT-B-32: run " in out
    assert "`make cache-pretrained` (or `python -m lessonlib.classroom cache --only" in out
    assert "FAIL  lesson 04 VQGAN+CLIP: not in the cache: vqgan_imagenet_f16_16384, ViT-B-32" in out


@pytest.mark.filterwarnings("ignore:unknown word 'blurry'")
def test_vqgan_step_passes_with_the_tiny_models_and_fails_when_nothing_can_change(monkeypatch):
    from lessonlib.models import load_tiny_clip
    from lessonlib.vqgan import VQGAN, VQGANConfig, load_vqgan

    monkeypatch.setattr(classroom, "VQGAN_PROMPT", "a large red circle")
    clip = load_tiny_clip()
    ok, text = classroom.check_vqgan_clip(load_vqgan(), *clip, size=32, steps=10, cutn=8)
    assert ok, text
    first, last = map(float, re.search(r"([-\d.]+) -> ([-\d.]+)", text).groups())
    assert last > first and "10 steps at 32x32" in text
    # A codebook of one code: every picture is the same, so the score cannot rise.
    cfg = VQGANConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, n_embed=1, embed_dim=8,
                      z_channels=32, resolution=32, attn_resolutions=())  # fmt: skip
    torch.manual_seed(0)
    ok, text = classroom.check_vqgan_clip(VQGAN(cfg).eval(), *clip, size=32, steps=3, cutn=4)
    first, last = map(float, re.search(r"([-\d.]+) -> ([-\d.]+)", text).groups())
    assert not ok and abs(last - first) < 0.001, text


def test_drawing_steps_run_on_a_gpu_and_are_skipped_without_one(capsys, monkeypatch):
    model = oracle()
    photos, names = zs.example_photos()

    class Drawer:  # stands in for min-dalle / Kandinsky: "draws" a given photo
        def __init__(self, photo):
            self.photo = photo

        def generate(self, prompt, n=1, seed=0, steps=50):
            assert prompt == classroom.DRAW_PROMPT
            return [self.photo] * n

    cat, rocket = photos[names.index("chelsea")], photos[names.index("rocket")]
    loaders = {"ViT-B-32": lambda: model, "min-dalle": lambda: Drawer(cat)}
    loaders["kandinsky-2.2"] = lambda: Drawer(rocket)
    if not torch.cuda.is_available():
        assert classroom.run_check(only="dalle", loaders=loaders) == 0
        out = capsys.readouterr().out
        assert out.count("SKIP") == 3 and "no CUDA GPU here" in out
    gpu = environment.Setup("pretrained", "cuda", 0, "test", 1, "test")
    monkeypatch.setattr(environment, "setup", lambda **kw: gpu)
    assert classroom.run_check(only="dalle", loaders=loaders) == 1
    out = capsys.readouterr().out
    assert "PASS  lesson 05 min-dalle: CLIP reads 'cat'" in out
    assert "FAIL  lesson 05 Kandinsky 2.2: CLIP reads 'rocket'" in out
