"""lessonlib.registry: hub tags, local files and the tiny model through one loader, tested offline.

No weights can be downloaded here, so each test saves a real open_clip architecture (a small config
registered with ``open_clip.add_model_config``) with random weights to a temporary file, and loads it
through the same code a download takes; only ``registry._hub_download`` (the one network call) is
replaced by a local copy.
"""

from __future__ import annotations

import json
import shutil

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from lessonlib import checkpoints, registry
from lessonlib.checkpoints import CheckpointError
from lessonlib.registry import ModelSpec, load_clip

ARCH = "lessonlib-test-ViT"
# A real open_clip CLIP (ViT image tower + transformer text tower with the BPE tokenizer), just small.
CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def arch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{ARCH}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(folder)
    return ARCH


@pytest.fixture()
def random_model(arch):
    torch.manual_seed(0)
    return open_clip.create_model(arch, pretrained=None).eval()


@pytest.fixture()
def checkpoint(random_model, tmp_path):
    path = tmp_path / "random_clip.safetensors"
    save_file({k: v.contiguous() for k, v in random_model.state_dict().items()}, str(path))
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------ local files


def test_local_safetensors_file_loads_the_same_weights(arch, random_model, checkpoint):
    model, preprocess, tokenizer = load_clip(arch, pretrained=checkpoint, device="cpu")
    assert same_weights(model, random_model)
    assert not model.training
    from PIL import Image

    x = preprocess(Image.new("RGB", (50, 40), "red"))
    assert tuple(x.shape) == (3, 32, 32)
    assert tokenizer(["a cat"]).shape == (1, 24)
    with torch.no_grad():
        a = model.encode_image(x[None], normalize=True)
        b = random_model.encode_image(x[None], normalize=True)
    assert torch.allclose(a, b)


def test_torch_file_with_wrapper_and_module_prefix_loads(arch, random_model, tmp_path):
    path = tmp_path / "ddp_checkpoint.pt"
    state = {"module." + k: v for k, v in random_model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path)
    model, _, _ = load_clip(arch, pretrained=str(path), device="cpu")
    assert same_weights(model, random_model)


class NotAWeight:  # a pickled object: torch.load(weights_only=True) must refuse to build it
    pass


def test_pickle_with_code_is_refused(arch, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": NotAWeight()}}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_clip(arch, pretrained=path, device="cpu")


def test_missing_file_names_the_path(arch, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_clip(arch, pretrained=tmp_path / "nowhere.safetensors")


def test_corrupt_file_is_a_clear_error(arch, checkpoint):
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])  # a download cut in half
    with pytest.raises(CheckpointError, match="damaged"):
        load_clip(arch, pretrained=checkpoint)


def test_state_dict_of_another_architecture_names_the_keys(arch, random_model, tmp_path):
    state = {k: v.clone() for k, v in random_model.state_dict().items()}
    del state["text_projection"]
    state["visual.extra.weight"] = torch.zeros(2)
    state["token_embedding.weight"] = torch.zeros(100, 32)
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        load_clip(arch, pretrained=path)
    message = str(err.value)
    assert "missing keys: text_projection" in message
    assert "unexpected keys: visual.extra.weight" in message
    assert "token_embedding.weight (file (100, 32), model (49408, 32))" in message


def test_sha256_is_checked(arch, checkpoint):
    good = checkpoints.file_sha256(checkpoint)
    load_clip(arch, pretrained=checkpoint, sha256=good)  # passes
    bad = ("0" if good[0] != "0" else "1") + good[1:]
    with pytest.raises(CheckpointError, match=f"expected {bad}"):
        load_clip(arch, pretrained=checkpoint, sha256=bad)
    with pytest.raises(ValueError, match="64 hexadecimal"):
        load_clip(arch, pretrained=checkpoint, sha256="abc")


# ------------------------------------------------------------------------------------- the hub code path


@pytest.fixture()
def fake_hub(arch, checkpoint, monkeypatch):
    """Register a spec for the test architecture and serve its file from a local 'hub'."""
    spec = ModelSpec(
        arch=arch,
        pretrained="test-tag",
        hub_repo="lessonlib/test-clip",
        sha256={"open_clip_model.safetensors": checkpoints.file_sha256(checkpoint)},
    )
    monkeypatch.setitem(registry.MODELS, arch, spec)
    calls = []

    def hub_download(repo_id, filename, cache):
        calls.append((repo_id, filename))
        if filename != "open_clip_model.safetensors":
            raise FileNotFoundError(f"{filename} is not in {repo_id}")
        # the Hugging Face cache layout: snapshots/<revision>/<file> and refs/main -> <revision>
        repo_dir = cache / "models--lessonlib--test-clip"
        target = repo_dir / "snapshots" / "rev1" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(checkpoint, target)
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / "main").write_text("rev1")
        return str(target)

    monkeypatch.setattr(registry, "_hub_download", hub_download)
    return calls


def test_pretrained_mode_downloads_checks_and_loads(arch, random_model, fake_hub, monkeypatch):
    monkeypatch.setattr(registry, "get_mode", lambda: "pretrained")
    model, _, _ = load_clip(arch, device="cpu")  # default tag from the spec
    assert same_weights(model, random_model)
    assert fake_hub == [("lessonlib/test-clip", "open_clip_model.safetensors")]
    assert str(registry.hub_cache_dir()).startswith(str(registry.cache_dir()))
    again, _, _ = load_clip(arch, device="cpu")  # now cached: no second network call
    assert same_weights(again, random_model)
    assert len(fake_hub) == 1


def test_downloaded_file_with_wrong_hash_is_refused(arch, fake_hub, monkeypatch):
    monkeypatch.setattr(registry, "get_mode", lambda: "pretrained")
    spec = registry.MODELS[arch]
    wrong = {"open_clip_model.safetensors": "f" * 64}
    monkeypatch.setitem(registry.MODELS, arch, ModelSpec(**{**spec.__dict__, "sha256": wrong}))
    with pytest.raises(CheckpointError, match="sha256"):
        load_clip(arch)


def test_safetensors_first_then_bin(arch, random_model, tmp_path, monkeypatch):
    """A repo without safetensors: the pickled .bin is fetched next and read with weights_only=True."""
    monkeypatch.setattr(registry, "get_mode", lambda: "pretrained")
    monkeypatch.setitem(
        registry.MODELS, arch, ModelSpec(arch=arch, pretrained="t", hub_repo="lessonlib/x")
    )
    bin_file = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(random_model.state_dict(), bin_file)
    tried = []

    def hub_download(repo_id, filename, cache):
        tried.append(filename)
        if filename.endswith(".safetensors"):
            raise FileNotFoundError("no safetensors in this repo")
        return str(bin_file)

    monkeypatch.setattr(registry, "_hub_download", hub_download)
    model, _, _ = load_clip(arch, device="cpu")
    assert same_weights(model, random_model)
    assert tried == ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


def test_offline_mode_never_touches_the_hub(arch, fake_hub, monkeypatch, capsys):
    monkeypatch.setattr(registry, "get_mode", lambda: "offline")
    monkeypatch.setattr(registry, "_load_tiny", lambda device: ("tiny-model", "pre", "tok"))
    assert load_clip(arch) == ("tiny-model", "pre", "tok")
    assert fake_hub == []
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "offline mode" in out[0] and "tiny" in out[0]
    with pytest.raises(RuntimeError, match="offline mode"):
        load_clip(arch, strict=True)
    assert fake_hub == []


def test_an_explicit_mode_beats_the_one_read_back(arch, fake_hub, monkeypatch):
    monkeypatch.setattr(registry, "get_mode", lambda: "pretrained")
    monkeypatch.setattr(registry, "_load_tiny", lambda device: ("tiny-model", "pre", "tok"))
    assert load_clip(arch, mode="offline", verbose=False)[0] == "tiny-model"
    assert fake_hub == []
    with pytest.raises(ValueError, match="mode 'auto' is for setup"):
        load_clip(arch, mode="auto")
    with pytest.raises(ValueError, match="unknown mode 'online'"):
        load_clip(arch, mode="online")


def test_failed_download_falls_back_or_raises_when_strict(arch, monkeypatch, capsys):
    monkeypatch.setattr(registry, "get_mode", lambda: "pretrained")
    monkeypatch.setitem(
        registry.MODELS, arch, ModelSpec(arch=arch, pretrained="t", hub_repo="lessonlib/x")
    )

    def no_network(repo_id, filename, cache):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(registry, "_hub_download", no_network)
    monkeypatch.setattr(registry, "_load_tiny", lambda device: ("tiny-model", None, None))
    assert load_clip(arch)[0] == "tiny-model"
    assert "download failed" in capsys.readouterr().out
    with pytest.raises(ConnectionError, match="Network is unreachable"):
        load_clip(arch, strict=True)


# ------------------------------------------------------------------------------------- names and table


def test_bad_names_say_what_works(arch, checkpoint):
    with pytest.raises(ValueError, match="unknown model 'ViT-B-99'.*ViT-B-32"):
        load_clip("ViT-B-99")
    with pytest.raises(ValueError, match="Did you mean ViT-B-32"):
        load_clip("ViT-B/32")  # OpenAI's spelling
    with pytest.raises(ValueError, match="looks like a file"):
        load_clip(str(checkpoint))
    with pytest.raises(ValueError, match="unknown pretrained tag 'laion9b'.*laion2b_s34b_b79k"):
        load_clip("ViT-B-32", pretrained="laion9b")
    with pytest.raises(ValueError, match="no default weights"):
        load_clip(arch)  # not in MODELS and no pretrained= given
    with pytest.raises(ValueError, match="takes no pretrained"):
        load_clip("tiny", pretrained="x")
    with pytest.raises(ValueError, match="empty"):
        load_clip("  ")


def test_architecture_names_ignore_case():
    assert registry._check_arch("vit-b-32") == "ViT-B-32"


def test_tag_resolution_uses_open_clip_hub_names():
    spec = registry._spec_for("ViT-B-32", "laion2b_s34b_b79k")
    assert spec.hub_repo == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    other = registry._spec_for("ViT-B-32", "datacomp_xl_s13b_b90k")
    assert other.hub_repo == "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"
    assert other.filenames[0].endswith(".safetensors")
    multi = registry.MODELS[registry.MULTILINGUAL_MODEL]
    cfg = open_clip.get_pretrained_cfg(multi.arch, multi.pretrained)
    assert cfg["hf_hub"].rstrip("/") == multi.hub_repo


def test_multilingual_model_needs_transformers(monkeypatch):
    try:
        import transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="transformers"):
            load_clip(registry.MULTILINGUAL_MODEL)
    else:
        registry.require_text_deps(registry.MULTILINGUAL_MODEL)  # no error when installed
        import builtins

        real_import = builtins.__import__

        def no_transformers(name, *args, **kwargs):
            if name == "transformers":
                raise ImportError("No module named 'transformers'")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_transformers)
        with pytest.raises(ImportError, match="pip install"):
            load_clip(registry.MULTILINGUAL_MODEL)


def test_list_models_rows():
    rows = {r["name"]: r for r in registry.list_models()}
    assert {"tiny", "ViT-B-32", "xlm-roberta-base-ViT-B-32"} <= set(rows)
    for row in rows.values():
        assert {"name", "pretrained", "params", "size_mb", "cached"} <= set(row)
    # Counted on the meta device from the architecture (the published figure for ViT-B/32 is 151.3 M).
    assert rows["ViT-B-32"]["params"] == 151_277_313
    assert rows["ViT-B-32"]["cached"] is False  # the cache folder of this test is empty
    table = registry.format_models()
    assert "ViT-B-32" in table and "151.28 M" in table


def test_list_models_sees_a_cached_checkpoint(checkpoint, monkeypatch):
    spec = registry.MODELS["ViT-B-32"]
    snapshot = (
        registry.hub_cache_dir()
        / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
        / "snapshots"
        / "abc"
    )
    snapshot.mkdir(parents=True)
    shutil.copy(checkpoint, snapshot / spec.filenames[0])
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc")
    row = next(r for r in registry.list_models() if r["name"] == "ViT-B-32")
    assert row["cached"] is True
    assert row["size_mb"] == round(checkpoint.stat().st_size / 1e6, 1)


def test_tiny_name_delegates_to_models(monkeypatch):
    import lessonlib.models

    seen = {}

    def fake_load_tiny_clip(device="cpu"):
        seen["device"] = device
        return "m", "p", "t"

    monkeypatch.setattr(lessonlib.models, "load_tiny_clip", fake_load_tiny_clip)
    assert load_clip("tiny", device="cpu") == ("m", "p", "t")
    assert load_clip("tiny-clip-shapes", device="cpu") == ("m", "p", "t")
    assert seen == {"device": "cpu"}


def test_shipped_tiny_model_loads():
    from lessonlib.models import TINY_CLIP_WEIGHTS

    if not TINY_CLIP_WEIGHTS.exists():
        pytest.skip("tiny CLIP weights not shipped yet")
    model, preprocess, tokenizer = load_clip("tiny", device="cpu")
    assert type(model).__name__ == "CLIP"
    assert tokenizer(["a red circle"]).shape[-1] == tokenizer.context_length
    row = next(r for r in registry.list_models() if r["name"] == "tiny")
    assert row["params"] == sum(p.numel() for p in model.parameters())
    assert row["cached"] is True


# ------------------------------------------------------------- a Hugging Face text tower (multilingual)


@pytest.fixture()
def hf_arch(tmp_path):
    """A tiny XLM-RoBERTa text tower + ViT, all from local files: the shape of the multilingual CLIP."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig

    folder = tmp_path / "tiny-xlmr"
    words = [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "a",
        "photo",
        "of",
        "cat",
        "dog",
        "بلی",
        "کتا",
        "کی",
        "تصویر",
    ]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.save_pretrained(folder)
    XLMRobertaConfig(
        vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=24, pad_token_id=1,
    ).save_pretrained(folder)  # fmt: skip
    name = "lessonlib-test-xlmr-ViT"
    cfg = {
        "embed_dim": 32,
        "vision_cfg": CONFIG["vision_cfg"],
        "text_cfg": {
            "hf_model_name": str(folder),
            "hf_tokenizer_name": str(folder),
            "hf_pooler_type": "mean_pooler",
            "context_length": 12,
        },
    }
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(configs)
    return name


def test_hf_text_tower_checkpoint_loads_and_classifies_urdu(hf_arch, tmp_path):
    from lessonlib import zeroshot as zs

    torch.manual_seed(0)
    reference = open_clip.create_model(hf_arch, pretrained=None, pretrained_text=False).eval()
    path = tmp_path / "xlmr_clip.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model, preprocess, tokenizer = load_clip(hf_arch, pretrained=path, device="cpu")
    assert type(model).__name__ == "CustomTextCLIP"
    assert same_weights(model, reference)
    weights = zs.zero_shot_classifier(model, tokenizer, ["بلی", "کتا"], "{} کی تصویر")
    assert weights.shape == (32, 2)
    with pytest.warns(UserWarning, match="more than the model's context of 12"):
        zs.zero_shot_classifier(model, tokenizer, ["cat " * 20, "dog"], "a photo of a {}")
