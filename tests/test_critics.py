"""lessonlib.critics: one interface for a CLIP, an ensemble and an ImageGuide; lesson 04's critics."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lessonlib import generate as G
from lessonlib.critics import (
    CLIPCritic,
    CLIPEnsemble,
    ImageGuide,
    as_critic,
    load_tiny_guides,
    load_tiny_rerankers,
)
from lessonlib.embed import embed_texts
from lessonlib.vqgan import load_vqgan


@pytest.fixture(scope="module")
def tiny_clip():
    from lessonlib.models import load_tiny_clip

    return load_tiny_clip()


@pytest.fixture(scope="module")
def small_vqgan():
    return load_vqgan()  # the shipped tiny VQGAN: 32x32 pictures from 8x8 codes


@pytest.fixture(scope="module")
def vit_b32():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    return model, open_clip.get_tokenizer("ViT-B-32")


def test_every_critic_answers_the_same_interface(tiny_clip):
    """A plain CLIP (wrapped once), an ensemble and an ImageGuide: encode_image with gradients to the
    pixels, embed_texts with unit rows on the critic's device, a dtype and a visual."""
    model, _, tokenizer = tiny_clip
    critic = as_critic(model)
    assert isinstance(critic, CLIPCritic) and critic.model is model
    assert as_critic(critic) is critic  # wrapped once, never twice
    texts = ["a red circle", "a blue square"]
    critics = [critic, CLIPEnsemble([model, model]), ImageGuide(model, tokenizer, texts)]
    for c in critics:
        x = torch.rand(2, 3, 32, 32, requires_grad=True)
        emb = c.encode_image(x)
        assert emb.dtype == torch.float32 and emb.shape[0] == 2
        emb.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        text = c.embed_texts(tokenizer, texts)
        assert text.shape[0] == 2 and not text.requires_grad
        assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
        assert c.dtype == torch.float32  # a ResNet tower: float32 is as fast and exact
        assert c.visual is model.visual
    # Wrapping and embedding leave the model's mode alone (a ResNet's batch norm must stay in eval).
    assert not model.training and not any(m.training for m in model.modules())
    # The plain critic's text embeddings are lessonlib.embed's, unchanged.
    assert torch.equal(critic.embed_texts(tokenizer, texts), embed_texts(model, tokenizer, texts))
    with pytest.raises(TypeError, match="open_clip CLIP"):
        as_critic(torch.nn.Linear(2, 2))


def test_image_guide_caches_prompts_and_frees_the_text_tower(small_vqgan, tiny_clip):
    """ImageGuide = the image tower + cached prompt embeddings: it computes what the full model
    computes, and generate runs the same loop with it."""
    import gc
    import weakref

    from lessonlib.models import load_tiny_clip
    from lessonlib.speed import release_freed_memory

    clip_model, preprocess, tokenizer = load_tiny_clip()
    prompts = "a red circle|a blue square:-0.5"
    kwargs = dict(size=32, steps=3, cutn=4, chunk=2, seed=3, progress=False)
    want = G.generate(prompts, small_vqgan, clip_model, tokenizer, preprocess, **kwargs)
    guide = ImageGuide(clip_model, tokenizer, prompts)
    assert guide.visual is clip_model.visual  # shared, not copied
    got = G.generate(prompts, small_vqgan, guide, tokenizer, preprocess, **kwargs)
    # The same function: same prompt rows and the same image embeddings. Tolerances: float32 sums
    # taken in another order (other batch shapes, other thread counts) differ by ~1e-7 relative;
    # 1e-5 is far below any difference a change of maths would make.
    texts = [p.text for p in G.parse_prompts(prompts)]
    full = as_critic(clip_model)
    assert torch.allclose(
        guide.embed_texts(tokenizer, texts), full.embed_texts(tokenizer, texts), atol=1e-6
    )
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(guide.encode_image(x), full.encode_image(x), rtol=1e-5, atol=1e-5)
    # In the loop, step 0's loss is a forward pass on the same crops from the same start: equal to
    # float rounding. Later steps are not compared bit for bit: Adam's first step is about
    # lr * sign(gradient), so a gradient entry of ~1e-9 that changes sign with the summation order
    # (several threads on an AMX/bf16 CPU) moves a latent by 2 * lr and may snap it to another code.
    assert got.losses[0] == pytest.approx(want.losses[0], rel=1e-5)
    assert len(got.losses) == 3 and got.image.size == want.image.size == (32, 32)
    full_text = clip_model.encode_text(tokenizer(["a blue square"]), normalize=True)
    assert torch.allclose(
        guide.encode_text(tokenizer(["a blue square"]), normalize=True), full_text
    )
    with pytest.raises(ValueError, match="only knows the prompts.*'a red circle'"):
        guide.encode_text(tokenizer(["a green cross"]))
    with pytest.raises(ValueError, match="only knows the prompts.*not 'a green cross'"):
        G.generate("a green cross", small_vqgan, guide, tokenizer, preprocess, **kwargs)
    # The guide holds no reference to the text tower: dropping the model frees it.
    text_tower = weakref.ref(clip_model.transformer)
    del clip_model, full
    gc.collect()
    assert text_tower() is None
    with pytest.raises(TypeError, match="open_clip CLIP"):
        ImageGuide(small_vqgan, tokenizer, prompts)
    release_freed_memory()  # must not fail, glibc or not


def test_bfloat16_image_guide_is_a_converted_copy(vit_b32):
    model, tokenizer = vit_b32
    before = {k: v.clone() for k, v in list(model.visual.state_dict().items())[:5]}
    guide = ImageGuide(model, tokenizer, "a lighthouse", dtype=torch.bfloat16)
    assert guide.visual is not model.visual and guide.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in guide.visual.parameters())
    for k, v in before.items():  # the user's model is untouched
        assert torch.equal(model.visual.state_dict()[k], v) and v.dtype == torch.float32
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        cos = F.cosine_similarity(guide.encode_image(x), model.encode_image(x), dim=-1)
    # bfloat16 keeps ~3 significant digits; through 12 ViT blocks the embedding's direction still
    # agrees with float32's to a cosine above 0.99 (random weights; trained ones do as well).
    assert cos.min() > 0.99
    # The dtype it computes in is its own property: "auto" then means bfloat16 for this guide.
    from lessonlib.speed import critic_dtype

    assert critic_dtype(guide, "auto") == torch.bfloat16
    assert critic_dtype(guide, "float32") == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        ImageGuide(model, tokenizer, "a lighthouse", dtype=torch.int8)


def test_clip_ensemble_joins_unit_embeddings_and_validates(small_vqgan, tiny_clip, vit_b32):
    from lessonlib.models import TinyCLIPConfig, build_tiny_clip

    a, preprocess, tokenizer = tiny_clip
    torch.manual_seed(1)
    b = build_tiny_clip(TinyCLIPConfig()).eval()
    pair = CLIPEnsemble([a, b], weights=[3, 1])
    x = torch.rand(2, 3, 32, 32)
    tokens = tokenizer(["a red circle", "a blue square"])
    with torch.no_grad():
        img, txt = pair.encode_image(x), pair.encode_text(tokens)
        assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)
        # squared distance of joined vectors = weighted mean of the members' squared distances
        parts = []
        for m in (a, b):
            u = F.normalize(m.encode_image(x), dim=-1)
            v = F.normalize(m.encode_text(tokens), dim=-1)
            parts.append((u - v).pow(2).sum(-1))
        assert torch.allclose(
            (img - txt).pow(2).sum(-1), 0.75 * parts[0] + 0.25 * parts[1], atol=1e-5
        )
    assert torch.allclose(
        pair.embed_texts(tokenizer, ["a red circle", "a blue square"]), txt, atol=1e-6
    )
    quick = G.GenerateConfig(size=32, steps=2, cutn=2, progress=False)
    result = G.generate("a red circle", small_vqgan, pair, tokenizer, preprocess, config=quick)
    assert result.image.size == (32, 32)
    with pytest.raises(ValueError, match="at least one"):
        CLIPEnsemble([])
    with pytest.raises(ValueError, match="one positive number per model"):
        CLIPEnsemble([a, b], weights=[1, 0])
    with pytest.raises(ValueError, match="different inputs"):
        CLIPEnsemble([a, vit_b32[0]])
    with pytest.raises(TypeError, match="encode_image and encode_text"):
        CLIPEnsemble([a, torch.nn.Linear(2, 2)])


def test_ensemble_dtype_is_bfloat16_only_if_every_member_agrees(tiny_clip, vit_b32, monkeypatch):
    from lessonlib import speed

    monkeypatch.setattr(speed, "_bf16_cpu_ok", lambda: True)  # as on a CPU with native bf16
    vit = as_critic(vit_b32[0])
    assert vit.dtype == torch.bfloat16 and as_critic(tiny_clip[0]).dtype == torch.float32
    assert CLIPEnsemble([vit_b32[0], vit_b32[0]]).dtype == torch.bfloat16
    mixed = CLIPEnsemble([tiny_clip[0], tiny_clip[0]])
    mixed.members[1] = vit  # (members with different inputs are refused; dtypes alone can differ)
    assert mixed.dtype == torch.float32
    monkeypatch.setattr(speed, "_bf16_cpu_ok", lambda: False)
    assert vit.dtype == torch.float32


def test_tiny_guides_load_as_one_ensemble_with_their_commands(tiny_clip):
    from lessonlib.models import TINY_GUIDE_WEIGHTS

    guide, preprocess, tokenizer = load_tiny_guides()
    assert isinstance(guide, CLIPEnsemble) and len(guide.members) == len(TINY_GUIDE_WEIGHTS) == 5
    commands = []
    for path in TINY_GUIDE_WEIGHTS:
        assert path.stat().st_size < 2_000_000
        info = json.loads(path.with_suffix(".json").read_text())
        commands.append(info["command"])
        assert info["command"].startswith("python -m lessonlib.train_tiny_clip")
        assert 0 < info["accuracy"]["seen_pairs"] <= 1
    assert sum("--adversarial-eps" in c for c in commands) == 2
    # The members really differ (other seeds, adversarial fine-tuning), and the first is the shipped one.
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        feats = [m.encode_image(x) for m in guide.members]
        assert torch.equal(feats[0], tiny_clip[0].encode_image(x))
    assert all(not torch.allclose(feats[0], f) for f in feats[1:])
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_tiny_guides(
            [TINY_GUIDE_WEIGHTS[0], TINY_GUIDE_WEIGHTS[0].with_name("missing.safetensors")]
        )
    reranker, _, _ = load_tiny_rerankers()
    assert len(reranker.members) == 3
