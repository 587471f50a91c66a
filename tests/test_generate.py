"""lessonlib.generate: prompt syntax, the VQGAN+CLIP loop's parts, and the loop on real architectures."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from lessonlib import generate as G
from lessonlib.vqgan import VQGAN, VQGANConfig

SMALL = dict(
    ch=32,
    ch_mult=(1, 2, 2),
    num_res_blocks=1,
    attn_resolutions=(),
    z_channels=32,
    resolution=32,
    n_embed=64,
    embed_dim=16,
)


@pytest.fixture(scope="module")
def tiny_clip():
    from lessonlib.models import load_tiny_clip

    return load_tiny_clip()


@pytest.fixture(scope="module")
def small_vqgan():
    torch.manual_seed(0)
    return VQGAN(VQGANConfig(**SMALL)).eval()


# ------------------------------------------------------------------------------------ prompts


def test_parse_prompts_weights_and_negatives():
    got = G.parse_prompts("a red circle|a blue square:0.5|text:-1")
    assert got == [
        G.Prompt("a red circle", 1.0),
        G.Prompt("a blue square", 0.5),
        G.Prompt("text", -1.0),
    ]
    assert G.parse_prompts(["a cat : 2", " a dog "]) == [
        G.Prompt("a cat", 2.0),
        G.Prompt("a dog", 1.0),
    ]
    assert G.parse_prompts("a photo: at night") == [G.Prompt("a photo: at night", 1.0)]
    assert G.parse_prompts("x:1e-1")[0].weight == pytest.approx(0.1)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a red circle||a square", "empty prompt between"),
        ("a red circle:", "malformed weight ''"),
        ("a red circle:abc", "malformed weight 'abc'"),
        ("a red circle:0.5.1", "malformed weight '0.5.1'"),
        ("a red circle:--1", "malformed weight '--1'"),
        (":0.5", "no text"),
        ("a red circle:0", "non-zero"),
        ("a red circle:nan", "non-zero finite"),
        ("a red circle:-1|a square:-0.5", "positive weight"),
    ],
)
def test_parse_prompts_bad_syntax(bad, match):
    with pytest.raises(ValueError, match=match):
        G.parse_prompts(bad)


def test_parse_prompts_bad_type():
    with pytest.raises(TypeError, match="string"):
        G.parse_prompts(42)


# ------------------------------------------------------------------------------------ pieces


def test_spherical_distance_values():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    assert G.spherical_distance(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert G.spherical_distance(a, b).item() == pytest.approx(2 * (math.pi / 4) ** 2, rel=1e-5)
    assert G.spherical_distance(a, -a).item() == pytest.approx(math.pi**2 / 2, rel=1e-5)


def test_straight_through_quantisation():
    book = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.5]])
    z = torch.tensor([[0.9, 0.8], [-1.5, 0.2]]).T.reshape(1, 2, 1, 2).clone().requires_grad_(True)
    zq = G.quantize_straight_through(z, book)
    assert zq[0, :, 0, 0].tolist() == [1.0, 1.0] and zq[0, :, 0, 1].tolist() == [-2.0, 0.5]
    (zq * torch.arange(4.0).view(1, 2, 1, 2)).sum().backward()
    assert torch.equal(z.grad, torch.arange(4.0).view(1, 2, 1, 2))  # identity gradient


def test_cutouts_shape_seed_and_identity():
    img = torch.rand(1, 3, 32, 32)
    cut = G.Cutouts(16)
    a = cut(img, 6, torch.Generator().manual_seed(1))
    b = cut(img, 6, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 16, 16) and torch.equal(a, b)
    plain = G.Cutouts(32, scale=(1.0, 1.0), rotate_degrees=0, flip=False, noise=0, jitter=0)
    assert torch.allclose(plain(img, 2, torch.Generator()), img.expand(2, -1, -1, -1), atol=1e-5)
    with pytest.raises(ValueError, match="batch 1"):
        cut(torch.rand(2, 3, 32, 32), 2, torch.Generator())


def test_check_size_rounds_with_a_message():
    with pytest.warns(
        UserWarning, match=r"\(250, 250\) is not a multiple .* factor 16: using \(256, 256\)"
    ):
        assert G.check_size(250, 16) == (256, 256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert G.check_size((64, 32), 16) == (64, 32)
    for bad in (0, -16, (16,), "256", 2.5, (16, 16.0)):
        with pytest.raises(ValueError, match="size"):
            G.check_size(bad, 16)


# ------------------------------------------------------------------------------------ the loop


def test_generate_freezes_weights_is_seeded_and_saves_frames(small_vqgan, tiny_clip, tmp_path):
    clip_model, preprocess, tokenizer = tiny_clip
    flags = [p.requires_grad for p in clip_model.parameters()]
    run = dict(size=32, steps=6, cutn=4, chunk=2, frame_every=2, progress=False)
    r1 = G.generate(
        "a large red circle|a square:-0.5",
        small_vqgan,
        clip_model,
        tokenizer,
        preprocess,
        seed=3,
        **run,
    )
    r2 = G.generate(
        "a large red circle|a square:-0.5",
        small_vqgan,
        clip_model,
        tokenizer,
        preprocess,
        seed=3,
        **run,
    )
    r3 = G.generate(
        "a large red circle|a square:-0.5",
        small_vqgan,
        clip_model,
        tokenizer,
        preprocess,
        seed=4,
        **run,
    )
    assert np.array_equal(np.asarray(r1.image), np.asarray(r2.image))
    assert r1.losses == r2.losses and r1.losses != r3.losses
    assert r1.image.size == (32, 32) and r1.frame_steps == [0, 2, 4, 5]
    assert len(r1.losses) == len(r1.step_seconds) == 6
    # No gradient was ever computed for a model weight, and requires_grad flags are restored.
    assert all(p.grad is None for p in small_vqgan.parameters())
    assert all(p.grad is None for p in clip_model.parameters())
    assert [p.requires_grad for p in clip_model.parameters()] == flags
    gif = r1.save_animation(tmp_path / "run.gif", scale=2)
    import imageio.v2 as imageio

    frames = imageio.mimread(gif)
    assert len(frames) == 4 and frames[0].shape[:2] == (64, 64)
    with pytest.raises(ValueError, match=r"\.webm"):
        r1.save_animation(tmp_path / "run.webm")


def test_generate_callback_init_image_and_rounding(small_vqgan, tiny_clip, tmp_path):
    from lessonlib.data import ShapeObject, render

    clip_model, preprocess, tokenizer = tiny_clip
    render([ShapeObject("circle", "red", "large")], image_size=32).save(tmp_path / "init.png")
    seen = []
    with pytest.warns(UserWarning, match="not a multiple"):
        result = G.generate(
            "a red circle",
            small_vqgan,
            clip_model,
            tokenizer,
            preprocess,
            size=30,
            steps=3,
            cutn=2,
            frame_every=1,
            init_image=tmp_path / "init.png",
            init_weight=0.5,
            progress=False,
            callback=lambda step, frame, loss: seen.append((step, frame.size)),
        )
    assert result.size == (32, 32) and seen == [(0, (32, 32)), (1, (32, 32)), (2, (32, 32))]


def test_generate_bad_inputs(small_vqgan, tiny_clip, tmp_path):
    from lessonlib.images import ImageLoadError

    clip_model, preprocess, tokenizer = tiny_clip
    args = (small_vqgan, clip_model, tokenizer, preprocess)
    with pytest.raises(ValueError, match="empty"):
        G.generate("", *args, size=32, steps=1, progress=False)
    with pytest.raises(ValueError, match="malformed weight"):
        G.generate("a red circle:x", *args, size=32, steps=1, progress=False)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        G.generate(
            "a red circle",
            *args,
            size=32,
            steps=1,
            init_image=tmp_path / "missing.png",
            progress=False,
        )
    (tmp_path / "bad.png").write_bytes(b"no image here")
    with pytest.raises(ImageLoadError, match="bad.png"):
        G.generate(
            "a red circle", *args, size=32, steps=1, init_image=tmp_path / "bad.png", progress=False
        )
    for kwargs, match in (
        ({"steps": 0}, "steps"),
        ({"cutn": 0}, "cutn"),
        ({"seed": -1}, "seed"),
        ({"cut_scale": (0.5, 1.5)}, "cut_scale"),
        ({"precision": "fp8"}, "precision"),
    ):
        with pytest.raises(ValueError, match=match):
            G.generate("a red circle", *args, size=32, progress=False, **{"steps": 1, **kwargs})


def test_loop_on_pretrained_architectures_with_random_weights():
    """The pretrained-mode call (taming f16 VQGAN + open_clip ViT-B-32), with random weights at a small
    size: same code path as the notebook's pretrained cell, including the bf16 decoder on CPU."""
    import open_clip

    torch.manual_seed(0)
    vqgan = VQGAN(VQGANConfig.imagenet_f16_1024()).eval()
    clip_model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    result = G.generate(
        "a watercolour lighthouse|blurry:-0.5",
        vqgan,
        clip_model,
        tokenizer,
        preprocess,
        size=32,
        steps=2,
        cutn=2,
        chunk=1,
        progress=False,
    )
    assert result.image.size == (32, 32) and all(math.isfinite(v) for v in result.losses)
    assert all(p.grad is None for p in vqgan.parameters())
    assert G.clip_input_spec(clip_model, preprocess)[0] == 224


def test_image_guide_caches_prompts_and_frees_the_text_tower(small_vqgan, tiny_clip):
    """ImageGuide = the image tower + cached prompt embeddings; generate gives the same picture."""
    import gc
    import weakref

    from lessonlib.models import load_tiny_clip

    clip_model, preprocess, tokenizer = load_tiny_clip()
    prompts = "a red circle|a blue square:-0.5"
    kwargs = dict(size=32, steps=3, cutn=4, chunk=2, seed=3, progress=False)
    want = G.generate(prompts, small_vqgan, clip_model, tokenizer, preprocess, **kwargs)
    guide = G.ImageGuide(clip_model, tokenizer, prompts)
    assert guide.visual is clip_model.visual  # shared, not copied
    got = G.generate(prompts, small_vqgan, guide, tokenizer, preprocess, **kwargs)
    assert np.array_equal(np.asarray(want.image), np.asarray(got.image))
    assert want.losses == pytest.approx(got.losses, rel=1e-5)
    full = clip_model.encode_text(tokenizer(["a blue square"]), normalize=True)
    assert torch.allclose(guide.encode_text(tokenizer(["a blue square"]), normalize=True), full)
    with pytest.raises(ValueError, match="only knows the prompts.*'a red circle'"):
        guide.encode_text(tokenizer(["a green cross"]))
    with pytest.raises(ValueError, match="only knows the prompts"):
        G.generate("a green cross", small_vqgan, guide, tokenizer, preprocess, **kwargs)
    # The guide holds no reference to the text tower: dropping the model frees it.
    text_tower = weakref.ref(clip_model.transformer)
    del clip_model
    gc.collect()
    assert text_tower() is None
    with pytest.raises(TypeError, match="open_clip CLIP"):
        G.ImageGuide(small_vqgan, tokenizer, prompts)
    G.release_freed_memory()  # must not fail, glibc or not


def test_init_image_needs_the_encoder(tiny_clip, tmp_path):
    from PIL import Image

    clip_model, preprocess, tokenizer = tiny_clip
    lean = VQGAN(VQGANConfig(**SMALL), with_encoder=False).eval()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "init.png")
    with pytest.raises(ValueError, match="init image needs the VQGAN's encoder"):
        G.generate(
            "a red circle",
            lean,
            clip_model,
            tokenizer,
            preprocess,
            size=32,
            steps=1,
            init_image=tmp_path / "init.png",
            progress=False,
        )
    result = G.generate(
        "a red circle", lean, clip_model, tokenizer, preprocess, size=32, steps=1, progress=False
    )
    assert result.image.size == (32, 32)


@pytest.fixture(scope="module")
def vit_b32():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    return model, open_clip.get_tokenizer("ViT-B-32")


def test_encode_image_fast_equals_open_clip_forward_and_gradients(vit_b32):
    """The fast ViT path is the same function as open_clip's forward: values and input gradients."""
    model, _ = vit_b32
    visual = model.visual
    assert G.fast_vit_supported(visual)
    x = torch.randn(3, 3, 224, 224, requires_grad=True)
    want = visual(x)
    (grad_want,) = torch.autograd.grad(want.square().sum(), x)
    got = G.encode_image_fast(visual, x)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert torch.allclose(grad_got, grad_want, atol=1e-4 * grad_want.abs().max().item())
    # bfloat16 (what generate uses on CPUs with native bf16): close to float32, as CLIP's fp16 is.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = G.encode_image_fast(visual, x.detach()).float()
    cos = torch.nn.functional.cosine_similarity(low, want.detach(), dim=-1)
    assert cos.min() > 0.99


def test_fast_path_falls_back_for_other_towers(tiny_clip):
    clip_model, _, _ = tiny_clip  # a ResNet tower
    assert not G.fast_vit_supported(clip_model.visual)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(G.encode_image_fast(clip_model.visual, x), clip_model.visual(x))
    assert G._clip_dtype(clip_model, torch.device("cpu"), "auto") == torch.float32
    assert G._clip_dtype(clip_model, torch.device("cpu"), "bfloat16") == torch.bfloat16


def test_bfloat16_image_guide_is_a_converted_copy(vit_b32):
    model, tokenizer = vit_b32
    before = {k: v.clone() for k, v in list(model.visual.state_dict().items())[:5]}
    guide = G.ImageGuide(model, tokenizer, "a lighthouse", dtype=torch.bfloat16)
    assert guide.visual is not model.visual and guide.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in guide.visual.parameters())
    for k, v in before.items():  # the user's model is untouched
        assert torch.equal(model.visual.state_dict()[k], v) and v.dtype == torch.float32
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(
            guide.encode_image(x), model.encode_image(x), dim=-1
        )
    assert cos.min() > 0.99
    assert G._clip_dtype(guide, torch.device("cpu"), "auto") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        G.ImageGuide(model, tokenizer, "a lighthouse", dtype=torch.int8)


def test_clip_ensemble_joins_unit_embeddings_and_validates(small_vqgan, tiny_clip, vit_b32):
    from lessonlib.models import TinyCLIPConfig, build_tiny_clip

    a, preprocess, tokenizer = tiny_clip
    torch.manual_seed(1)
    b = build_tiny_clip(TinyCLIPConfig()).eval()
    pair = G.CLIPEnsemble([a, b], weights=[3, 1])
    x = torch.rand(2, 3, 32, 32)
    tokens = tokenizer(["a red circle", "a blue square"])
    with torch.no_grad():
        img, txt = pair.encode_image(x), pair.encode_text(tokens)
        assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)
        # squared distance of joined vectors = weighted mean of the members' squared distances
        parts = []
        for m in (a, b):
            u = torch.nn.functional.normalize(m.encode_image(x), dim=-1)
            v = torch.nn.functional.normalize(m.encode_text(tokens), dim=-1)
            parts.append((u - v).pow(2).sum(-1))
        assert torch.allclose(
            (img - txt).pow(2).sum(-1), 0.75 * parts[0] + 0.25 * parts[1], atol=1e-5
        )
    result = G.generate(
        "a red circle",
        small_vqgan,
        pair,
        tokenizer,
        preprocess,
        size=32,
        steps=2,
        cutn=2,
        progress=False,
    )
    assert result.image.size == (32, 32)
    with pytest.raises(ValueError, match="at least one"):
        G.CLIPEnsemble([])
    with pytest.raises(ValueError, match="one positive number per model"):
        G.CLIPEnsemble([a, b], weights=[1, 0])
    with pytest.raises(ValueError, match="different inputs"):
        G.CLIPEnsemble([a, vit_b32[0]])
    with pytest.raises(TypeError, match="encode_image and encode_text"):
        G.CLIPEnsemble([a, torch.nn.Linear(2, 2)])
