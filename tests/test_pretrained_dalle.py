"""lessonlib.pretrained_dalle: min-dalle and Kandinsky 2.2 loaders, tested on real classes built small.

No weights can be downloaded here. min-dalle's own ``DalleBartEncoder`` / ``DalleBartDecoder`` are built
with tiny sizes (its ``VQGanDetokenizer`` has fixed sizes, so it is the real 47 M-parameter one) and
saved as the ``.pt`` files min-dalle downloads; Kandinsky's prior and decoder pipelines are built from
tiny diffusers/transformers parts (as diffusers' own tests do) and saved in the hub repos' layout.
Only the one network call of each loader (``_download_url``, ``_download_snapshot``) is replaced by a
local copy; everything after it (cache lookup, sha256, safe reading, generation) is the real code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lessonlib import pretrained_dalle as P
from lessonlib.checkpoints import CheckpointError

TINY_MIN_DALLE = dict(
    layer_count=1,
    attention_head_count=2,
    embed_count=16,
    glu_embed_count=24,
    text_vocab_count=64,
    image_vocab_count=16415,  # min-dalle samples from the first 2**14 logits and starts at 2**14 - 1
)
WORDS = "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------ min-dalle


@pytest.fixture(scope="module")
def min_dalle_source(tmp_path_factory):
    """The five files min-dalle downloads, written from its real (tiny) modules with random weights.
    Like the converted Flax files, some LayerNorms have no bias and tensors are float16."""
    md = P._import_min_dalle()
    from min_dalle.models import DalleBartDecoder, DalleBartEncoder, VQGanDetokenizer

    assert md.IMAGE_TOKEN_COUNT == 256  # fixed in min-dalle: every image is 256 codes
    folder = tmp_path_factory.mktemp("min_dalle_hub")
    torch.manual_seed(0)
    s = TINY_MIN_DALLE
    common = {k: s[k] for k in P.SIZE_NAMES[:4]} | {"device": "cpu"}
    encoder = DalleBartEncoder(
        text_vocab_count=s["text_vocab_count"], text_token_count=64, **common
    )
    decoder = DalleBartDecoder(image_vocab_count=s["image_vocab_count"], **common)
    for name, module in (("encoder.pt", encoder), ("decoder.pt", decoder)):
        state = {k: v.half() for k, v in module.state_dict().items()}
        state.pop(
            "layers.0.glu.ln1.bias"
        )  # a LayerNorm without bias: min-dalle keeps the 0 default
        torch.save(state, folder / name)
    torch.save(
        {k: v.half() for k, v in VQGanDetokenizer().state_dict().items()}, folder / "detoker.pt"
    )
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "Ġ": 4} | {
        c: 5 + i for i, c in enumerate(WORDS)
    }
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "config.json").write_text("{}")
    return folder, encoder


@pytest.fixture()
def min_dalle_hub(min_dalle_source, monkeypatch):
    """``_download_url`` copies from the fake hub and counts the calls."""
    folder = min_dalle_source[0]
    calls = []
    monkeypatch.setitem(P.MIN_DALLE_SIZES, "mega", TINY_MIN_DALLE)

    def fake_download(url, dest):
        calls.append(url)
        shutil.copy(folder / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(P, "_download_url", fake_download)
    return calls


def test_min_dalle_sizes_and_import_match_min_dalle(tmp_path, monkeypatch):
    """Our size table is what MinDalle.__init__ sets, and importing min_dalle leaves autograd on and
    torch's threads as they were (min_dalle's import changes both)."""
    for name in [m for m in sys.modules if m == "min_dalle" or m.startswith("min_dalle.")]:
        monkeypatch.delitem(sys.modules, name)  # import it afresh (put back afterwards)
    threads = torch.get_num_threads()
    md = P._import_min_dalle()
    assert torch.is_grad_enabled() and torch.get_num_threads() == threads
    monkeypatch.setattr(md.MinDalle, "init_tokenizer", lambda self: None)  # it would download
    for key, is_mega in (("mega", True), ("mini", False)):
        real = md.MinDalle(
            models_root=str(tmp_path),
            is_mega=is_mega,
            is_reusable=False,
            device="cpu",
            is_verbose=False,
        )
        assert {k: getattr(real, k) for k in P.SIZE_NAMES} == P.MIN_DALLE_SIZES[key]
        assert real.text_token_count == 64
    torch.set_num_threads(threads)


def test_min_dalle_table_matches_the_architecture():
    """The table's parameter counts are those of min-dalle's classes (built on the meta device)."""
    P._import_min_dalle()
    from min_dalle.models import DalleBartDecoder, DalleBartEncoder, VQGanDetokenizer

    s = P.MIN_DALLE_SIZES["mega"]
    common = {k: s[k] for k in P.SIZE_NAMES[:4]} | {"device": "meta"}
    with torch.device("meta"):
        enc = DalleBartEncoder(
            text_vocab_count=s["text_vocab_count"], text_token_count=64, **common
        )
        dec = DalleBartDecoder(image_vocab_count=s["image_vocab_count"], **common)
        det = VQGanDetokenizer()
    count = [sum(p.numel() for p in m.parameters()) for m in (enc, dec, det)]
    text = P.PRETRAINED_DALLE["min-dalle"]["params"]
    assert f"encoder {count[0] / 1e9:.2f} B" in text and f"decoder {count[1] / 1e9:.2f} B" in text
    assert f"{count[2] / 1e6:.0f} M" in text and f"{sum(count[:2]) / 1e9:.1f} B" in text
    for name in P.PRETRAINED_DALLE:
        paragraph = P.describe_pretrained(name)
        assert "GB" in paragraph and "On a CPU" in paragraph and "published" in paragraph
    with pytest.raises(ValueError, match="'dall-e-3'.*min-dalle, kandinsky-2.2"):
        P.describe_pretrained("dall-e-3")


def test_min_dalle_downloads_once_loads_safely_and_generates(min_dalle_hub, min_dalle_source):
    model = P.load_dalle("min-dalle", mode="pretrained", device="cpu")
    assert len(min_dalle_hub) == 5 and all("/resolve/main/" in u for u in min_dalle_hub)
    root = P.cache_dir() / "min-dalle"
    record = root / "dalle_bart_mega" / "encoder.pt.sha256"
    assert record.read_text().split()[0] == P.file_sha256(root / "dalle_bart_mega" / "encoder.pt")
    # The weights are the file's (float16 -> float32), the LayerNorm left out of it keeps bias 0.
    enc, want = model.model.encoder, min_dalle_source[1].state_dict()
    assert torch.equal(
        enc.state_dict()["embed_tokens.weight"], want["embed_tokens.weight"].half().float()
    )
    assert torch.equal(enc.layers[0].glu.ln1.bias, torch.zeros(24))
    assert not any(p.requires_grad for p in enc.parameters())

    rng = torch.get_rng_state()
    images = model.generate("a red cat", n=1, seed=3, top_k=8)
    assert len(images) == 1 and images[0].size == (256, 256) and images[0].mode == "RGB"
    assert torch.equal(torch.get_rng_state(), rng)  # the notebook's random state is left alone
    assert torch.is_grad_enabled()

    again = P.load_min_dalle(mode="offline", device="cpu")  # cached: offline is fine, no download
    assert len(min_dalle_hub) == 5 and isinstance(again, P.MinDalleModel)
    for bad, match in (
        (dict(prompt=" "), "prompt"),
        (dict(n=0), "n must be an integer from 1 to 16"),
        (dict(n=17), "4x4 grid"),
        (dict(top_k=0), "top_k"),
        (dict(temperature=0), "temperature"),
        (dict(supercondition_factor=-1), "supercondition_factor"),
        (dict(seed=-1), "seed"),
    ):
        with pytest.raises(ValueError, match=match):
            model.generate(**{"prompt": "a cat", **bad})


def test_min_dalle_refuses_tampered_and_wrong_files(min_dalle_hub, monkeypatch):
    P.download_min_dalle(mode="pretrained")
    path = P.cache_dir() / "min-dalle" / "dalle_bart_mega" / "decoder.pt"
    state = torch.load(path, weights_only=True)
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    torch.save(state, path)  # same keys and shapes, other numbers: only the hash can tell
    with pytest.raises(CheckpointError, match="decoder.pt' has sha256"):
        P.load_min_dalle(mode="pretrained", device="cpu")
    # A download that does not fit the architecture: the missing key is named.
    path.unlink()
    path.with_name("decoder.pt.sha256").unlink()
    state.pop("lm_head.weight")
    real = P._download_url

    def short_decoder(url, dest):
        torch.save(state, dest) if url.endswith("/decoder.pt") else real(url, dest)

    monkeypatch.setattr(P, "_download_url", short_decoder)
    with pytest.raises(CheckpointError, match="missing.*lm_head.weight"):
        P.load_min_dalle(mode="pretrained", device="cpu")
    assert path.with_name("decoder.pt.sha256").is_file()  # recorded at its download


_CALLED = []


def _payload(*args):  # what a malicious checkpoint would run
    _CALLED.append(args)
    return "pwned"


class _Evil:
    def __reduce__(self):
        return (_payload, ("rm -rf",))


def test_min_dalle_pickled_code_is_refused(min_dalle_hub, min_dalle_source, monkeypatch):
    """min-dalle's own loader calls plain torch.load; ours reads with weights_only=True."""
    evil = min_dalle_source[0] / "evil"
    evil.mkdir(exist_ok=True)
    state = torch.load(min_dalle_source[0] / "encoder.pt", weights_only=True)
    torch.save({**state, "extra": _Evil()}, evil / "encoder.pt")
    real = P._download_url

    def download(url, dest):
        if url.endswith("/encoder.pt"):
            shutil.copy(evil / "encoder.pt", dest)
        else:
            real(url, dest)

    monkeypatch.setattr(P, "_download_url", download)
    with pytest.raises(CheckpointError, match="will not import"):
        P.load_min_dalle(mode="pretrained", device="cpu")
    assert _CALLED == []


def test_min_dalle_offline_refuses_at_once(min_dalle_hub):
    with pytest.raises(FileNotFoundError, match=r"offline mode.*setup\(mode='pretrained'\)"):
        P.load_dalle("min-dalle", mode="offline", device="cpu")
    assert min_dalle_hub == []
    with pytest.raises(ValueError, match="'auto' is for setup"):
        P.load_min_dalle(mode="auto")
    with pytest.raises(ValueError, match="'dall-e-3'.*min-dalle, kandinsky-2.2"):
        P.load_dalle("dall-e-3")


# -------------------------------------------------------------------------------------- Kandinsky 2.2


@pytest.fixture(scope="module")
def kandinsky_source(tmp_path_factory):
    """Kandinsky 2.2's two hub repos, laid out by save_pretrained, from tiny real parts."""
    from diffusers import (
        DDPMScheduler,
        KandinskyV22Pipeline,
        KandinskyV22PriorPipeline,
        PriorTransformer,
        UnCLIPScheduler,
        UNet2DConditionModel,
        VQModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    root = tmp_path_factory.mktemp("kandinsky_hub")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab |= {
        c + end: i + 2 + 26 * j for j, end in enumerate(("", "</w>")) for i, c in enumerate(WORDS)
    }
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=77
    )
    torch.manual_seed(0)
    d = 32  # the CLIP embedding size shared by prior, image encoder and U-Net
    clip = dict(
        hidden_size=d,
        projection_dim=d,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
    )
    text = CLIPTextModelWithProjection(
        CLIPTextConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, vocab_size=1000, **clip)
    )
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=32, patch_size=8, **clip))
    prior = PriorTransformer(
        num_attention_heads=2, attention_head_dim=12, embedding_dim=d, num_layers=1
    )
    prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))  # else every sample is 0
    KandinskyV22PriorPipeline(
        prior=prior,
        image_encoder=vision,
        text_encoder=text,
        tokenizer=tokenizer,
        scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log", prediction_type="sample", clip_sample_range=10.0
        ),
        image_processor=CLIPImageProcessor(crop_size=32, size=32),
    ).save_pretrained(root / "prior")
    unet = UNet2DConditionModel(
        in_channels=4,
        out_channels=8,  # mean and variance
        addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64),
        layers_per_block=1,
        encoder_hid_dim=d,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=32,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
    )
    movq = VQModel(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        vq_embed_dim=4,
    )
    KandinskyV22Pipeline(unet=unet, scheduler=DDPMScheduler(), movq=movq).save_pretrained(
        root / "decoder"
    )
    # A config naming a class that must never be imported: the loader names its classes itself.
    index = json.loads((root / "decoder" / "model_index.json").read_text())
    index["unet"] = ["evil_module_that_must_not_be_imported", "Boom"]
    (root / "decoder" / "model_index.json").write_text(json.dumps(index))
    return root, vision


@pytest.fixture()
def kandinsky_hub(kandinsky_source, monkeypatch):
    """``_download_snapshot`` writes the fake repo into the hub cache the way huggingface_hub does
    (``models--org--name/refs/main`` + ``snapshots/<commit>/``) and counts the calls."""
    calls = []

    def fake_download(repo_id, revision):
        calls.append(repo_id)
        repo = P.hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
        snapshot = repo / "snapshots" / f"{len(calls):040x}"
        shutil.copytree(kandinsky_source[0] / repo_id.rsplit("-", 1)[1], snapshot)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / revision).write_text(snapshot.name)
        return snapshot

    monkeypatch.setattr(P, "_download_snapshot", fake_download)
    return calls


def load_tiny_kandinsky(mode="pretrained"):
    model = P.load_dalle("kandinsky-2.2", mode=mode, device="cpu")
    model.prior_steps = 2
    model.decoder.set_progress_bar_config(disable=True)
    return model


def pixels(image) -> torch.Tensor:
    return torch.tensor(np.array(image), dtype=torch.float32)


def test_kandinsky_loads_from_the_hub_cache_and_generates(kandinsky_hub, kandinsky_source):
    model = load_tiny_kandinsky()
    assert kandinsky_hub == list(P.KANDINSKY_REPOS.values())
    assert "evil_module_that_must_not_be_imported" not in sys.modules
    records = list((P.cache_dir() / "pretrained_dalle").rglob("*.json"))
    assert len(records) == 2 and any(
        "unet/diffusion_pytorch_model.safetensors" in r.read_text() for r in records
    )
    # the image encoder holds the saved weights
    want = kandinsky_source[1].state_dict()
    got = model.prior.image_encoder.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)

    fast = dict(steps=2, height=64, width=64)
    images = model.generate("a red horse", n=2, seed=0, **fast)
    assert len(images) == 2 and all(im.size == (64, 64) for im in images)
    same = model.generate("a red horse", n=2, seed=0, **fast)
    other = model.generate("a red horse", n=2, seed=1, **fast)
    assert torch.equal(pixels(images[0]), pixels(same[0]))
    assert not torch.equal(pixels(images[0]), pixels(other[0]))
    assert model.image_embeds("a red horse", n=3).shape == (3, 32)

    picture = Image.new("RGB", (40, 40), (200, 30, 30))
    embed = model.image_embeds(picture)
    direct = model.prior.image_encoder(
        model.prior.image_processor(picture, return_tensors="pt").pixel_values
    ).image_embeds
    assert torch.allclose(embed, direct, atol=1e-5)
    variations = model.variations(picture, n=3, **fast)
    assert len(variations) == 3 and not torch.equal(pixels(variations[0]), pixels(variations[1]))
    path = model.interpolate(picture, Image.new("RGB", (40, 40), (20, 20, 220)), k=3, **fast)
    assert len(path) == 3 and path[0].size == (64, 64)
    flat = model.interpolate(
        picture, picture, k=3, **fast
    )  # one embedding and one noise: one picture
    assert all((pixels(im) - pixels(flat[0])).abs().max() <= 1 for im in flat[1:])
    # the first picture of the path is the first picture's embedding, drawn from the same noise
    assert (pixels(path[0]) - pixels(model.variations(picture, n=1, **fast)[0])).abs().max() <= 1

    load_tiny_kandinsky(mode="offline")  # in the cache: no download, offline is fine
    assert len(kandinsky_hub) == 2


def test_kandinsky_refuses_a_tampered_safetensors_file(kandinsky_hub):
    load_tiny_kandinsky()
    (unet,) = P.hub_cache_dir().rglob("unet/diffusion_pytorch_model.safetensors")
    data = bytearray(unet.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    unet.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="unet/diffusion_pytorch_model.safetensors"):
        load_tiny_kandinsky()


def test_kandinsky_offline_refuses_without_a_network_call(kandinsky_hub):
    with pytest.raises(FileNotFoundError, match=r"kandinsky-2-2-prior.*offline mode"):
        P.load_kandinsky(mode="offline", device="cpu")
    assert kandinsky_hub == []


def test_kandinsky_without_safetensors_is_refused(kandinsky_hub, kandinsky_source, monkeypatch):
    real = P._download_snapshot

    def no_safetensors(repo_id, revision):
        folder = real(repo_id, revision)
        for f in folder.rglob("*.safetensors"):
            f.rename(f.with_suffix(".bin"))
        return folder

    monkeypatch.setattr(P, "_download_snapshot", no_safetensors)
    with pytest.raises(CheckpointError, match="safetensors"):
        P.load_kandinsky(mode="pretrained", device="cpu")


def test_kandinsky_bad_inputs_say_what_works(kandinsky_hub):
    model = load_tiny_kandinsky()
    for bad, match in (
        (dict(prompt=""), "prompt '' is empty"),
        (dict(n=0), "n must be an integer from 1 to 16"),
        (dict(steps=0), "steps must be an integer from 1 to 1000"),
        (dict(steps=1001), "steps"),
        (dict(guidance_scale=-1), "guidance_scale must be a number from 0 to 50"),
        (dict(guidance_scale=51), "guidance_scale"),
        (dict(height=70), "height must be a multiple of 4"),
        (dict(width=0), "width"),
        (dict(seed=-3), "seed"),
    ):
        with pytest.raises(ValueError, match=match):
            model.generate(**{"prompt": "a horse", "steps": 2, **bad})
    with pytest.raises(ValueError, match="k must be"):
        model.interpolate("a horse", "a cat", k=1)


def test_slerp_keeps_endpoints_and_lengths():
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert torch.allclose(P._slerp(a, b, 0.0), a) and torch.allclose(P._slerp(a, b, 1.0), b)
    mid = P._slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(), torch.tensor(2.0)) and torch.allclose(mid[0, 0], mid[0, 1])


def test_import_stays_cheap():
    code = (
        "import sys, lessonlib.pretrained_dalle; "
        "print([m for m in ('torch', 'diffusers', 'transformers', 'min_dalle') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
