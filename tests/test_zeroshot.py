"""lessonlib.zeroshot: prompt ensembles, classification, evaluation and the bad inputs of lesson 02.

The classifier is cross-checked against open_clip's ``build_zero_shot_classifier`` on a real open_clip
architecture (small config, random weights) with open_clip's own BPE tokenizer. The helpers of
``lessonlib.embed`` that lesson 02 calls (``token_length``, ``load_folder``, ``embed_images``) are tested
here on that architecture too; tests/test_embed.py checks that lessons 02 and 03 share them.
"""

from __future__ import annotations

import json
import warnings

import open_clip
import pytest
import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES
from PIL import Image

from lessonlib import embed
from lessonlib import zeroshot as zs
from lessonlib.metrics import topk_accuracy

ARCH = "lessonlib-test-ViT-zs"
CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
LABELS = ["cat", "dog", "person", "rocket", "coffee mug", "astronaut"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{ARCH}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH)
    return model.eval(), preprocess, open_clip.get_tokenizer(ARCH)


# ------------------------------------------------------------------------------------------- templates


def test_template_sets_match_open_clip():
    assert len(zs.CLIP_TEMPLATES_7) == 7
    assert len(zs.IMAGENET_TEMPLATES_80) == 80
    for ours, theirs in [
        (zs.CLIP_TEMPLATES_7, SIMPLE_IMAGENET_TEMPLATES),
        (zs.IMAGENET_TEMPLATES_80, OPENAI_IMAGENET_TEMPLATES),
    ]:
        assert [t.format("axolotl") for t in ours] == [t("axolotl") for t in theirs]
    assert zs.get_templates("clip7") == zs.CLIP_TEMPLATES_7
    assert zs.get_templates("a {} in space") == ("a {} in space",)


@pytest.mark.parametrize("templates", ["single", "clip7", "imagenet80"])
def test_classifier_equals_open_clip_build_zero_shot_classifier(clip, templates):
    model, _, tokenizer = clip
    ours = zs.zero_shot_classifier(model, tokenizer, LABELS, templates)
    theirs = build_zero_shot_classifier(
        model, tokenizer, LABELS, list(zs.get_templates(templates)), num_classes_per_batch=4
    )
    assert ours.shape == theirs.shape == (CONFIG["embed_dim"], len(LABELS))
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(ours.norm(dim=0), torch.ones(len(LABELS)), atol=1e-5)


def test_ensemble_is_not_the_single_template(clip):
    model, _, tokenizer = clip
    one = zs.zero_shot_classifier(model, tokenizer, LABELS, "single")
    many = zs.zero_shot_classifier(model, tokenizer, LABELS, "clip7")
    assert not torch.allclose(one, many, atol=1e-3)


# ------------------------------------------------------------------------------------------ bad inputs


def test_empty_label_list(clip):
    model, _, tokenizer = clip
    with pytest.raises(ValueError, match="label list is empty"):
        zs.zero_shot_classifier(model, tokenizer, [], "single")


def test_duplicate_labels_are_named():
    with pytest.raises(ValueError, match="duplicate labels 'cat'"):
        zs.check_labels(["cat", "dog", "Cat "])
    with pytest.raises(ValueError, match="empty"):
        zs.check_labels(["cat", "  "])
    with pytest.raises(TypeError, match="single string 'cat, dog'"):
        zs.check_labels("cat, dog")
    with pytest.raises(TypeError, match="3"):
        zs.check_labels(["cat", 3])


def test_template_without_braces():
    with pytest.raises(ValueError, match="'a photo of a cat'.*'a photo of a \\{\\}.'"):
        zs.get_templates(["a photo of a cat"])
    with pytest.raises(ValueError, match="neither a template set"):
        zs.get_templates("clip8")
    with pytest.raises(ValueError, match="exactly once"):
        zs.get_templates(["a {} and a {}"])
    with pytest.raises(ValueError, match="other braces"):
        zs.get_templates(["a {} {colour}"])
    with pytest.raises(ValueError, match="template list is empty"):
        zs.get_templates([])


def test_long_prompt_is_truncated_with_a_warning(clip):
    model, _, tokenizer = clip
    long_label = " ".join(["very"] * 40) + " fluffy cat"
    with pytest.warns(
        UserWarning, match="44 tokens, more than the model's context of 24"
    ) as record:
        weights = zs.zero_shot_classifier(model, tokenizer, [long_label, "dog"], "{}")
    assert len(record) == 1
    assert weights.shape == (CONFIG["embed_dim"], 2)
    # A prompt that fits gives no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zs.zero_shot_classifier(model, tokenizer, ["cat", "dog"], "clip7")


def test_token_length_matches_the_tokenizer(clip):
    _, _, tokenizer = clip
    text = "a photo of a dog"
    assert embed.token_length(tokenizer, text) == int(
        (tokenizer([text], context_length=77) != 0).sum()
    )


def test_non_image_file_in_a_folder_is_skipped_with_a_warning(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.warns(UserWarning) as record:
        images, paths = embed.load_folder(tmp_path)
    assert [p.name for p in paths] == ["a.png", "b.jpg"]
    assert len(images) == 2 and images[0].mode == "RGB"
    messages = " ".join(str(w.message) for w in record)
    assert "notes.txt" in messages and "broken.jpg" in messages


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with (
        pytest.warns(UserWarning, match="notes.txt"),
        pytest.raises(ValueError, match="no readable"),
    ):
        embed.load_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        embed.load_folder(tmp_path / "missing")


# ---------------------------------------------------------------------------------- images and probs


def test_embed_images_accepts_pictures_paths_tensors_and_folders(clip, tmp_path):
    model, preprocess, _ = clip
    pictures = [Image.new("RGB", (40, 30), c) for c in ("red", "green", "blue")]
    for i, p in enumerate(pictures):
        p.save(tmp_path / f"{i}.png")
    from_pil = embed.embed_images(model, pictures, preprocess, batch_size=2)
    from_tensor = embed.embed_images(model, torch.stack([preprocess(p) for p in pictures]))
    from_folder = embed.embed_images(model, tmp_path, preprocess)
    assert from_pil.shape == (3, CONFIG["embed_dim"])
    assert torch.allclose(from_pil, from_tensor, atol=1e-6)
    assert torch.allclose(from_pil, from_folder, atol=1e-6)
    assert torch.allclose(from_pil.norm(dim=-1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="preprocess"):
        embed.embed_images(model, pictures)
    with pytest.raises(ValueError, match="no images"):
        embed.embed_images(model, [], preprocess)
    with pytest.raises(ValueError, match="shape"):
        embed.embed_images(model, torch.zeros(2, 3))


def test_classify_picks_the_class_whose_vector_the_image_matches():
    torch.manual_seed(0)
    weights = torch.nn.functional.normalize(torch.randn(16, 5), dim=0)
    features = weights.T[[3, 0, 4]]  # images that *are* the class vectors of 3, 0 and 4
    probs = zs.classify(features, weights, scale=100.0)
    assert probs.shape == (3, 5)
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    assert probs.argmax(-1).tolist() == [3, 0, 4]
    soft = zs.classify(features, weights, scale=1.0)
    assert soft.max() < probs.max()  # a lower temperature multiplier gives flatter probabilities
    with pytest.raises(ValueError, match="do not fit"):
        zs.classify(features, weights[:8])


def test_zero_shot_classifier_object(clip):
    model, preprocess, tokenizer = clip
    clf = zs.ZeroShotClassifier(model, tokenizer, ["cat", "dog"], templates="clip7")
    pictures = [Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "white")]
    probs = clf.predict_proba(pictures, preprocess)
    assert probs.shape == (2, 2)
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    assert clf.predict(pictures, preprocess) == [clf.class_names[i] for i in probs.argmax(-1)]
    assert clf.scale == pytest.approx(float(model.logit_scale.detach().exp()))


# ---------------------------------------------------------------------------------- the tiny model


def test_tiny_model_on_shapes_world_beats_chance():
    """With the shipped tiny CLIP, zero-shot colour+shape classification is far above chance (1/24)."""
    from lessonlib.models import TINY_CLIP_WEIGHTS

    if not TINY_CLIP_WEIGHTS.exists():
        pytest.skip("tiny CLIP weights not shipped yet")
    from lessonlib import data
    from lessonlib.registry import load_clip

    model, preprocess, tokenizer = load_clip("tiny", device="cpu")
    names = data.class_names()
    ds = data.ShapesWorld(200, split="test", seed=0, transform=preprocess)
    clf = zs.ZeroShotClassifier(model, tokenizer, names, templates="a {}")
    probs = clf.predict_proba(ds)
    acc = topk_accuracy(probs, ds.class_indices(), ks=(1,))[1]
    assert acc > 3 / len(names)


# ------------------------------------------------------------------- the notebook's pretrained cells


def test_notebook_pretrained_cells_run_on_a_random_model(clip, monkeypatch):
    """The pretrained-only cells of lesson 02 cannot run here (no hub). Run their code on a random-weight
    open_clip model instead, so that every API call they make is exercised; their asserts about what a
    trained CLIP answers are compiled out (optimize=1), since random weights answer at random."""
    import matplotlib

    matplotlib.use("Agg")
    import types
    from pathlib import Path

    import matplotlib.pyplot as plt

    from lessonlib import registry

    path = Path(__file__).resolve().parents[1] / "notebooks" / "02_zero_shot_classification.ipynb"
    exercises = {"exercise", "solution", "check"}  # they use the tiny model, whatever the mode
    cells = [
        "".join(c["source"])
        for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
        if c["cell_type"] == "code" and not exercises & set(c["metadata"].get("tags", []))
    ]
    wanted = [
        src
        for src in cells
        if "from lessonlib import" in src
        or 'load_clip("ViT-B-32"' in src
        or 'cfg.mode == "pretrained"' in src
        or "box.update(" in src
    ]
    assert len(wanted) >= 7
    requested = []

    def fake_load_clip(name="ViT-B-32", *args, **kwargs):
        requested.append(name)
        return clip

    monkeypatch.setattr(registry, "load_clip", fake_load_clip)
    namespace = {"cfg": types.SimpleNamespace(mode="pretrained")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Agg's "non-interactive" on plt.show()
        for src in wanted:
            exec(compile(src, "notebook-cell", "exec", optimize=1), namespace)
    plt.close("all")
    assert requested == ["ViT-B-32", "xlm-roberta-base-ViT-B-32"]
    assert namespace["clf_probs"].shape == (9, len(namespace["clf_labels"]))
    assert namespace["ml_probs"].shape == (9, len(namespace["urdu_labels"]))
    assert namespace["box"].probs.shape[0] == 4
    assert namespace["box"].shown == namespace["box"].labels  # the box opens with its chart
    assert set(namespace["box_truth"]) <= set(namespace["box"].labels)


def test_example_photos_ship_with_the_packages():
    photos, names = zs.example_photos()
    assert names == list(zs.PHOTO_DESCRIPTIONS) and len(photos) == 9
    assert "chelsea" in names and "grace_hopper" in names
    assert all(p.mode == "RGB" for p in photos)  # camera.png and horse.png are grayscale files
