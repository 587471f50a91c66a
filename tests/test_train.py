"""train_clip, the live plot, the grey augmentation, zero-shot scoring and the reproduce script."""

import json

import matplotlib
import numpy as np
import pytest
import torch

from lessonlib.augment import RecolourWhenColourUnsaid, ReshapeWhenShapeUnsaid
from lessonlib.data import ShapesWorld
from lessonlib.models import (
    TinyCLIPConfig,
    build_tiny_clip,
    load_tiny_clip,
    make_preprocess,
    make_tokenizer,
)
from lessonlib.train import LivePlot, TrainConfig, TrainHistory, train_clip, zero_shot_accuracy

matplotlib.use("Agg")
SMALL = {"embed_dim": 16, "vision_width": 8, "text_width": 32, "text_layers": 1, "text_heads": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    cfg = TinyCLIPConfig(**SMALL)
    return cfg, build_tiny_clip(cfg), make_tokenizer(cfg)


def test_loss_falls_on_a_fixed_batch_and_callback_runs(tiny):
    cfg, model, tok = tiny
    data = ShapesWorld(16, seed=0, detail="simple")
    calls = []
    history = train_clip(
        model,
        tok,
        data,
        steps=30,
        batch_size=16,
        lr=3e-3,
        warmup=5,
        mean=cfg.mean,
        std=cfg.std,
        callback=lambda step, h: calls.append((step, len(h.loss))),
        callback_every=15,
        progress=False,
    )
    assert isinstance(history, TrainHistory)
    assert history.steps == 30 and len(history.loss) == 30 and history.images_seen == 30 * 16
    assert calls == [(15, 15), (30, 30)]
    assert sum(history.loss[-5:]) / 5 < 0.8 * sum(history.loss[:5]) / 5
    assert all(
        0.01 <= t <= 1.0 for t in history.temperature
    )  # temperature stays in open_clip's range
    assert not model.training  # handed back in eval mode


def test_fresh_data_every_epoch(tiny):
    cfg, model, tok = tiny
    epochs = []

    def make(epoch):
        epochs.append(epoch)
        return ShapesWorld(16, seed=epoch)

    train_clip(model, tok, make, steps=5, batch_size=8, mean=cfg.mean, std=cfg.std, progress=False)
    assert epochs == [0, 1, 2]  # 2 batches per epoch, 5 steps


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"batch_size": 1}, ValueError, "needs at least two .image, text. pairs per batch"),
        ({"batch_size": 64}, ValueError, "has 16 items, fewer than batch_size=64"),
        ({"steps": 0}, ValueError, "steps must be a positive integer"),
        ({"mean": (0.5, 0.5, 0.5), "std": None}, ValueError, "give both mean and std"),
    ],
)
def test_bad_training_arguments(tiny, kwargs, error, message):
    cfg, model, tok = tiny
    args = {"steps": 2, "batch_size": 8, "progress": False, **kwargs}
    with pytest.raises(error, match=message):
        train_clip(model, tok, ShapesWorld(16), **args)


def test_train_config_refuses_unknown_and_bad_settings(tiny):
    cfg, model, tok = tiny
    with pytest.raises(TypeError, match=r"unknown training setting\(s\) \['stepz'\].*steps"):
        train_clip(model, tok, ShapesWorld(16), stepz=3, progress=False)
    with pytest.raises(ValueError, match="lr must be a number >= 0"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="warmup must be a whole number"):
        TrainConfig(warmup=2.5)
    config = TrainConfig(steps=2, batch_size=8, mean=cfg.mean, std=cfg.std)
    history = train_clip(model, tok, ShapesWorld(16), config, progress=False, steps=3)
    assert history.steps == 3 and config.steps == 2  # keyword settings change a copy


def test_model_must_be_a_clip(tiny):
    _, _, tok = tiny
    with pytest.raises(TypeError, match="model must be an open_clip CLIP"):
        train_clip(
            torch.nn.Linear(2, 2), tok, ShapesWorld(16), steps=1, batch_size=8, progress=False
        )


def test_live_plot_headless_draws_and_tracks_the_diagonal(tiny):
    cfg, model, tok = tiny
    probe = ShapesWorld(6, seed=1, detail="simple")
    images = torch.stack([probe[i][0] for i in range(6)])
    live = LivePlot(
        model, tok, images, probe.captions, mean=cfg.mean, std=cfg.std, headless_ok=True
    )
    history = train_clip(
        model,
        tok,
        ShapesWorld(32),
        steps=4,
        batch_size=16,
        mean=cfg.mean,
        std=cfg.std,
        callback=live,
        callback_every=2,
        progress=False,
    )
    assert [step for step, _ in live.diagonal] == [2, 4]
    assert live.fig is not None and "step 4" in live.axes[0].get_title()
    colourbars = [ax for ax in live.fig.axes if ax.get_ylabel() == "cosine similarity"]
    assert (
        len(colourbars) == 1
    )  # the heat-map's colours are explained, once, however often it redraws
    assert live.similarity().shape == (6, 6)
    assert len(history.smoothed_loss(2)) == 3
    with pytest.raises(ValueError, match="6 probe images but 2 probe texts"):
        LivePlot(model, tok, images, ["a", "b"])
    quiet = LivePlot(model, tok, images, probe.captions)  # not in Jupyter: no figure
    quiet(1, history)
    assert quiet.fig is None and len(quiet.diagonal) == 1


def test_recolour_only_touches_captions_without_colour_and_never_uses_a_named_colour():
    from lessonlib.data import COLOUR_RGB, COLOURS

    world = ShapesWorld(200, seed=0, detail="random")
    recoloured = RecolourWhenColourUnsaid(world, p=1.0)
    named = torch.tensor(list(COLOUR_RGB.values()), dtype=torch.float32) / 255
    n_changed = 0
    for i in range(len(world)):
        image, text = recoloured[i]
        original, caption = world[i]
        assert text == caption
        if any(c in text.split() for c in COLOURS):
            assert torch.equal(image, original)
            continue
        n_changed += 1
        assert image.shape == original.shape and 0 <= image.min() and image.max() <= 1
        # same silhouette, new colour: the brightest pixel's hue is far from every named colour
        assert torch.equal(image.amax(0) > 0, original.amax(0) > 0)
        flat = image.reshape(3, -1)
        brightest = flat[:, flat.sum(0).argmax()]
        direction = brightest / brightest.norm()
        assert (named / named.norm(dim=1, keepdim=True) @ direction).max() < 0.95
    assert n_changed > 20
    assert torch.equal(recoloured[3][0], recoloured[3][0])  # deterministic per index
    with pytest.raises(ValueError, match="p must be a probability"):
        RecolourWhenColourUnsaid(world, p=1.5)
    with pytest.raises(ValueError, match="must be non-empty and name no caption colour"):
        RecolourWhenColourUnsaid(world, palette={"red": (255, 0, 0)})


def test_reshape_only_touches_captions_without_shape_and_keeps_the_colour():
    from lessonlib.data import SHAPES

    world = ShapesWorld(120, seed=2, detail="random")
    reshaped = ReshapeWhenShapeUnsaid(world, p=1.0)
    n_changed = 0
    for i in range(len(world)):
        image, text = reshaped[i]
        original, _ = world[i]
        if any(s in text.split() for s in SHAPES):
            assert torch.equal(image, original)
            continue
        n_changed += 1
        assert not torch.equal(image, original)  # another outline ...
        colour = lambda x: x.reshape(3, -1)[:, x.sum(0).reshape(-1).argmax()]  # noqa: E731
        same_hue = torch.nn.functional.cosine_similarity(colour(image), colour(original), dim=0)
        assert same_hue > 0.999  # ... in the same colour (anti-aliasing may dim a thin ring)
    assert n_changed > 5
    with pytest.raises(TypeError, match="needs a ShapesWorld"):
        ReshapeWhenShapeUnsaid([(torch.zeros(3, 8, 8), "a red shape")])


def test_zero_shot_accuracy_of_an_untrained_model_is_near_chance(tiny):
    cfg, model, tok = tiny
    acc = zero_shot_accuracy(model.eval(), tok, make_preprocess(cfg), "test", n=240, seed=0)
    assert 0.0 <= acc <= 0.25  # 24 classes: chance is 4%
    with pytest.raises(ValueError, match="n must be a positive integer"):
        zero_shot_accuracy(model, tok, make_preprocess(cfg), n=0)


def test_reproduce_script_runs_end_to_end(tmp_path):
    from lessonlib import train_tiny_clip

    out = tmp_path / "quick.safetensors"
    config = json.dumps(SMALL)
    info = train_tiny_clip.main(
        [
            "--steps",
            "3",
            "--batch-size",
            "16",
            "--images-per-epoch",
            "64",
            "--eval-images",
            "48",
            "--recolour",
            "1.0",
            "--reshape",
            "1.0",
            "--no-progress",
            "--config",
            config,
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["command"].startswith("python -m lessonlib.train_tiny_clip --steps 3")
    assert set(saved["accuracy"]) >= {"seen_pairs", "held_out_pairs"}
    assert saved["accuracy"] == info["accuracy"]
    model, preprocess, tok = load_tiny_clip(out)
    assert model.visual is not None and tok.context_length == TinyCLIPConfig().context_length


def test_l2_attack_stays_in_the_ball_and_raises_the_loss():
    from lessonlib.loss import clip_loss
    from lessonlib.train import l2_attack

    model, preprocess, tok = load_tiny_clip()
    cfg = TinyCLIPConfig()
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)

    def norm(x):
        return (x - mean) / std

    world = ShapesWorld(16, seed=3, detail="simple")
    images = torch.stack([world[i][0] for i in range(16)])
    texts = tok([world[i][1] for i in range(16)])

    def loss(x):
        with torch.no_grad():
            return float(
                clip_loss(
                    model.encode_image(norm(x), normalize=True),
                    model.encode_text(texts, normalize=True),
                    model.logit_scale,
                )
            )

    adv = l2_attack(model, images, texts, eps=1.0, steps=3, normalize=norm)
    dist = (adv - images).flatten(1).norm(dim=1)
    assert (dist <= 1.0 + 1e-4).all() and dist.max() > 0.5
    assert adv.min() >= 0 and adv.max() <= 1
    assert loss(adv) > loss(images) + 0.5
    assert all(p.grad is None for p in model.parameters())


def test_adversarial_training_runs_and_validates(tiny):
    cfg, model, tok = tiny
    seen = []

    def augment(images, generator):
        seen.append(images.shape)
        return images.flip(-1)

    history = train_clip(
        model,
        tok,
        ShapesWorld(32),
        steps=2,
        batch_size=16,
        progress=False,
        mean=cfg.mean,
        std=cfg.std,
        adversarial_eps=0.5,
        adversarial_steps=2,
        augment=augment,
    )
    assert len(history.loss) == 2 and seen == [torch.Size([16, 3, 32, 32])] * 2
    with pytest.raises(ValueError, match="adversarial_eps must be a number >= 0"):
        train_clip(model, tok, ShapesWorld(32), steps=1, batch_size=16, adversarial_eps=-1)


def test_blur_augment_matches_a_gaussian_filter_and_keeps_crisp_images():
    from scipy import ndimage

    from lessonlib.train_tiny_clip import _blur_augment, _compose

    world = ShapesWorld(6, seed=5)
    x = torch.stack([world.tensor(i) for i in range(6)])
    sigmas = torch.rand(6, generator=torch.Generator().manual_seed(1))
    y = _blur_augment(1.0, p=1.0)(x, torch.Generator().manual_seed(1))
    for i in range(6):  # same sigma draw as the augmentation's (first use of the same generator)
        s = float(sigmas[i])
        ref = ndimage.gaussian_filter(x[i].numpy(), (0, s, s), mode="nearest", truncate=2.0 / s)
        np.testing.assert_allclose(y[i].numpy(), ref, atol=1e-5)
    assert (y - x).abs().max() > 0.05  # something was blurred
    assert torch.equal(_blur_augment(1.0, p=0.0)(x, torch.Generator()), x)
    assert _compose(None, None) is None
    twice = _compose(_blur_augment(0.5, p=1.0), _blur_augment(0.5, p=1.0))
    assert twice(x, torch.Generator().manual_seed(0)).shape == x.shape
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive sigma"):
            _blur_augment(bad)


def test_training_data_split_all_shows_held_out_pairs_and_train_never_does():
    from lessonlib.data import HELD_OUT_PAIRS
    from lessonlib.train_tiny_clip import training_data

    held = set(HELD_OUT_PAIRS)

    def pairs(split):
        world = training_data(400, 0, 32, split=split)(0)
        return {obj.pair for i in range(len(world)) for obj in world.objects(i)}

    assert not pairs("train") & held
    assert pairs("all") & held
    with pytest.raises(ValueError, match="'test'"):
        training_data(10, 0, 32, split="test")
    with pytest.raises(ValueError, match=r"unknown augmentation\(s\) \['recolor'\]"):
        training_data(10, 0, 32, augment={"recolor": 1.0})
    from lessonlib.train_tiny_clip import parse_args

    for bad in (["--split", "test"], ["--blur", "-1"], ["--copies", "2"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    assert parse_args(["--split", "all", "--blur", "1", "--copies", "0.5"]).copies == 0.5


def test_repeat_the_object_adds_copies_and_names_them():
    from lessonlib.augment import RepeatTheObject

    world = ShapesWorld(60, seed=2, detail="simple")
    ds = RepeatTheObject(world, p=0.5, seed=1)
    repeated = 0
    for i in range(len(ds)):
        objects, base = ds.objects(i), world.objects(i)
        image, text = ds[i]
        assert objects[: len(base)] == base
        if len(objects) == len(base):
            assert text == world.captions[i] and torch.equal(image, world.tensor(i))
            continue
        repeated += 1
        assert 2 <= len(objects) <= 3  # max_objects=3
        assert all(o.pair == base[0].pair for o in objects[len(base) :])
        assert len({o.position for o in objects}) == len(objects)  # copies never overlap a cell
        assert text.count(" and ") == len(objects) - 1
        assert image.shape == (3, world.image_size, world.image_size)
    assert 15 <= repeated <= 45  # p = 0.5 of 60
    assert ds.objects(7) == ds.objects(7)  # the same seed gives the same scene
    assert all(len(RepeatTheObject(world, p=0.0).objects(i)) == 1 for i in range(10))
    with pytest.raises(ValueError, match="probability"):
        RepeatTheObject(world, p=1.5)
    with pytest.raises(TypeError, match="ShapesWorld"):
        RepeatTheObject([(torch.zeros(3, 32, 32), "a red circle")])
    with pytest.raises(ValueError, match="max_objects"):
        RepeatTheObject(world, max_objects=1)
    full = ShapesWorld(30, seed=4, max_objects=3)  # scenes that are full already stay as they are
    capped = RepeatTheObject(full, p=1.0)
    assert all(len(capped.objects(i)) <= 3 for i in range(30))
    assert any(len(full.objects(i)) == 3 == len(capped.objects(i)) for i in range(30))
