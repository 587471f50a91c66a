"""lessonlib.embed: the one embedding path that lessons 02 (zero-shot) and 03 (image search) share.

Uses the shipped tiny CLIP and Shapes World images, so it needs no download.
"""

from __future__ import annotations

import pytest
import torch

from lessonlib import data, embed
from lessonlib import zeroshot as zs
from lessonlib.models import load_tiny_clip
from lessonlib.search import ImageIndex

CAPTIONS = ["a red circle", "a blue square", "a green triangle"]


@pytest.fixture(scope="module")
def tiny():
    return load_tiny_clip()


@pytest.fixture(scope="module")
def shapes():
    ds = data.ShapesWorld(6, split="test", seed=0)
    return [ds.pil(i) for i in range(len(ds))]


def test_lessons_02_and_03_get_identical_embeddings(tiny, shapes):
    """The same model and inputs give the same vectors through lesson 02's path (``ZeroShotClassifier``,
    ``embed.embed_images``) and lesson 03's (``ImageIndex``). Tolerance 1e-6, not 0: it is the same maths
    on the same pixels and tokens, but the batches differ (6 images at once here, batches of 4 in the
    index; one template averaged and renormalised in the classifier), and a matrix product may sum in
    another order for another batch shape, which moves the last bits of a float32."""
    model, preprocess, tokenizer = tiny
    index = ImageIndex(model, preprocess, tokenizer, cache=None, batch_size=4)
    report = index.add(shapes, progress=False)
    assert report.embedded == len(shapes)

    lesson_02_images = embed.embed_images(model, shapes, preprocess)
    torch.testing.assert_close(index.embeddings, lesson_02_images, rtol=0, atol=1e-6)
    torch.testing.assert_close(index.embed_images(shapes), lesson_02_images, rtol=0, atol=1e-6)

    classifier = zs.ZeroShotClassifier(model, tokenizer, CAPTIONS, templates="{}")
    lesson_03_texts = index.embed_texts(CAPTIONS)
    torch.testing.assert_close(classifier.weights.T, lesson_03_texts, rtol=0, atol=1e-6)
    weights = zs.zero_shot_classifier(model, tokenizer, CAPTIONS, "{}")
    torch.testing.assert_close(weights.T, lesson_03_texts, rtol=0, atol=1e-6)
    # ... and so the two lessons rank alike: the classifier's probabilities follow the index's scores.
    probs = classifier.predict_proba(shapes, preprocess)
    assert probs.argmax(-1).tolist() == (index.embeddings @ lesson_03_texts.T).argmax(-1).tolist()


def test_training_mode_is_restored_and_nothing_needs_grad(tiny, shapes):
    model, preprocess, tokenizer = tiny
    model.train()
    try:
        seen = []
        handle = model.visual.register_forward_hook(
            lambda module, args, out: seen.append((module.training, torch.is_grad_enabled()))
        )
        try:
            images = embed.embed_images(model, shapes[:2], preprocess)
        finally:
            handle.remove()
        assert seen == [(False, False)]  # eval mode (no dropout) and no autograd while embedding
        assert model.training  # put back the way it was
        texts = embed.embed_texts(model, tokenizer, CAPTIONS)
        assert model.training
        assert not images.requires_grad and not texts.requires_grad
        assert images.grad_fn is None and texts.grad_fn is None
    finally:
        model.eval()
    assert not model.training  # a model in eval mode stays in eval mode
    embed.embed_texts(model, tokenizer, CAPTIONS[:1])
    assert not model.training


def test_unit_length_float32_on_the_cpu(tiny, shapes):
    model, preprocess, tokenizer = tiny
    images = embed.embed_images(model, shapes, preprocess, batch_size=4)
    texts = embed.embed_texts(model, tokenizer, CAPTIONS, batch_size=2)
    for features in (images, texts):
        assert features.dtype == torch.float32 and features.device.type == "cpu"
        torch.testing.assert_close(features.norm(dim=-1), torch.ones(len(features)))
    raw = embed.embed_texts(model, tokenizer, CAPTIONS, normalize=False)
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), texts)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, p, t: embed.embed_images(m, [], p), "no images given"),
        (lambda m, p, t: embed.embed_images(m, torch.zeros(0, 3, 32, 32)), "holds 0 images"),
        (
            lambda m, p, t: embed.embed_images(m, torch.utils.data.TensorDataset(torch.zeros(0))),
            "TensorDataset holds 0 images",
        ),
        (lambda m, p, t: embed.embed_texts(m, t, []), "no texts given"),
        (lambda m, p, t: embed.embed_texts(m, t, [""]), "prompt '' is empty"),
        (lambda m, p, t: embed.embed_texts(m, t, ["a red circle", "   "]), "prompt '   ' is empty"),
        (
            lambda m, p, t: embed.embed_images(m, torch.zeros(1, 2, 3, 32, 32)),
            r"shape \(1, 2, 3, 32, 32\): give a batch \[N, 3, H, W\]",
        ),
    ],
    ids=[
        "no images",
        "empty tensor",
        "empty dataset",
        "no texts",
        "empty prompt",
        "blank prompt",
        "5-D tensor",
    ],
)
def test_bad_input_names_the_problem(tiny, call, match):
    model, preprocess, tokenizer = tiny
    with pytest.raises(ValueError, match=match):
        call(model, preprocess, tokenizer)


def test_pictures_without_preprocess_are_refused(tiny, shapes):
    model, _, _ = tiny
    with pytest.raises(ValueError, match="need the model's preprocess: pass preprocess="):
        embed.embed_images(model, shapes)
