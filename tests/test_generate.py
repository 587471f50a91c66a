"""lessonlib.generate (and generate_parts): prompt syntax, the loop's parts, its settings, and the loop
on real architectures. The critics are tested in test_critics.py, the speed paths in test_speed.py."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from lessonlib import generate as G
from lessonlib.embed import clip_input_spec
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
    assert clip_input_spec(clip_model, preprocess)[0] == 224


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


def test_generate_config_holds_the_settings_and_refuses_unknown_names(small_vqgan, tiny_clip):
    clip_model, preprocess, tokenizer = tiny_clip
    config = G.GenerateConfig(size=32, steps=2, cutn=2, progress=False)
    assert config.replace(steps=3).steps == 3 and config.steps == 2  # a copy, not a change
    a = G.generate("a red circle", small_vqgan, clip_model, tokenizer, preprocess, config=config)
    b = G.generate(
        "a red circle",
        small_vqgan,
        clip_model,
        tokenizer,
        preprocess,
        size=32,
        steps=2,
        cutn=2,
        progress=False,
    )
    assert len(a.losses) == 2 and a.losses == b.losses  # config= and keywords are the same thing
    with pytest.raises(TypeError, match="unknown generate setting 'stpes': did you mean 'steps'"):
        G.generate("a red circle", small_vqgan, clip_model, tokenizer, preprocess, stpes=3)
    for bad, match in (
        ({"frame_every": 0}, "frame_every"),
        ({"lr": 0}, "lr"),
        ({"init_weight": -1}, "init_weight"),
        ({"checkpoint_levels": 1.5}, "checkpoint_levels"),
    ):
        with pytest.raises(ValueError, match=match):
            G.GenerateConfig(**bad)
    with pytest.raises(TypeError, match="Cutouts"):
        G.GenerateConfig(cutouts="random")
    with pytest.raises(ValueError, match=r"Cutouts\(32"):
        G.generate(
            "a red circle",
            small_vqgan,
            clip_model,
            tokenizer,
            preprocess,
            config=config,
            cutouts=G.Cutouts(16),
        )


def test_cosine_distance_values():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    assert G.cosine_distance(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert G.cosine_distance(a, b).item() == pytest.approx(1.0, abs=1e-6)
    assert G.cosine_distance(a, -2 * a).item() == pytest.approx(2.0, abs=1e-6)
    assert G.cosine_distance(torch.ones(4, 1, 8), torch.ones(1, 3, 8)).shape == (4, 3)


def test_distance_and_straight_through_are_settings(small_vqgan, tiny_clip, monkeypatch):
    """Lesson 04's exercises 3 and 4 switch these with generate(...) keywords: check that each
    switch really changes what the loop calls, and that bad values are refused by name."""
    clip_model, preprocess, tokenizer = tiny_clip
    calls = {"spherical": 0, "cosine": 0, "snap": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(G, "spherical_distance", counting("spherical", G.spherical_distance))
    monkeypatch.setattr(G, "cosine_distance", counting("cosine", G.cosine_distance))
    monkeypatch.setattr(
        G, "quantize_straight_through", counting("snap", G.quantize_straight_through)
    )
    args = dict(size=32, steps=3, cutn=2, chunk=2, progress=False)

    def run(**kw):
        return G.generate(
            "a red circle", small_vqgan, clip_model, tokenizer, preprocess, **args, **kw
        )

    spherical = run()
    assert calls == {"spherical": 3, "cosine": 0, "snap": 4}  # 3 steps + the final picture
    cosine = run(distance="cosine")
    assert calls["cosine"] == 3 and calls["spherical"] == 3
    assert all(0 <= loss <= 2 for loss in cosine.losses) and cosine.losses != spherical.losses
    assert calls["snap"] == 8
    unsnapped = run(straight_through=False)
    assert calls["snap"] == 8, "straight_through=False must never snap z to the codebook"
    assert unsnapped.image.size == (32, 32) and len(unsnapped.losses) == 3
    with pytest.raises(ValueError, match="distance 'euclid': choose 'spherical' or 'cosine'"):
        G.GenerateConfig(distance="euclid")
    with pytest.raises(ValueError, match="straight_through must be True or False, got 'no'"):
        G.GenerateConfig(straight_through="no")


def test_generate_py_is_the_loop_alone():
    """Lesson 04 sends students to generate.py for the five-step loop: critics and speed paths live
    in lessonlib.critics and lessonlib.speed, and the file stays short enough to read."""
    import inspect

    assert len(inspect.getsource(G).splitlines()) <= 500
    for name in ("CLIPEnsemble", "ImageGuide", "encode_image_fast", "release_freed_memory"):
        assert not hasattr(G, name), name
    assert "isinstance(" not in inspect.getsource(G.generate)
