"""lessonlib.gan: taming's patch discriminator, hinge loss and adaptive weight, and the fine-tune."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from taming.modules.losses import vqperceptual

from lessonlib import gan
from lessonlib.vqgan import load_vqgan

TINY_RUN = dict(steps=3, batch_size=4, n_train=8, log_every=1, progress=False)


@pytest.fixture(scope="module")
def shipped():
    return load_vqgan()


@pytest.mark.parametrize(("n_layers", "grid", "field"), [(1, 14, 16), (2, 6, 34), (3, 2, 70)])
def test_discriminator_grid_matches_its_geometry(n_layers, grid, field):
    """One verdict per patch: the output grid is what patch_geometry computes from the layers."""
    torch.manual_seed(0)
    disc = gan.build_discriminator(n_layers=n_layers).eval()
    assert isinstance(disc, vqperceptual.NLayerDiscriminator)  # taming's own class
    with torch.no_grad():
        out = disc(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1, grid, grid)
    assert gan.patch_geometry(disc, 32) == (((grid, grid)), field, 2**n_layers)


def test_one_verdict_sees_only_its_patch():
    """The receptive field is real: one verdict's gradient touches at most a 16x16 square of pixels."""
    torch.manual_seed(0)
    disc = gan.build_discriminator().eval()
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    disc(x)[0, 0, 7, 7].backward()
    rows, cols = (x.grad.abs().sum((0, 1)) > 0).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == 16 and cols.max() - cols.min() + 1 == 16


def test_discriminator_uses_tamings_weight_init():
    torch.manual_seed(0)
    disc = gan.build_discriminator()
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    big = max(convs, key=lambda m: m.weight.numel())
    assert abs(big.weight.std().item() - 0.02) < 0.002  # taming's weights_init: N(0, 0.02)


def test_hinge_loss_on_hand_made_logits():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - real) = 0, 0.5, 2 -> mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + fake) = 0, 1, 2 -> mean 1
    assert gan.hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1))
    # Past the margins (real > 1, fake < -1) nothing is left to learn; a coin-flip judge scores 1.
    assert gan.hinge_d_loss(torch.full((4,), 3.0), torch.full((4,), -3.0)).item() == 0.0
    assert gan.hinge_d_loss(torch.zeros(4), torch.zeros(4)).item() == 1.0


def test_hinge_and_adopt_weight_are_tamings_own():
    assert gan.hinge_d_loss is vqperceptual.hinge_d_loss
    assert gan.adopt_weight is vqperceptual.adopt_weight
    torch.manual_seed(0)
    real, fake = torch.randn(2, 1, 14, 14), torch.randn(2, 1, 14, 14)
    by_formula = 0.5 * ((1 - real).clamp(min=0).mean() + (1 + fake).clamp(min=0).mean())
    assert torch.allclose(gan.hinge_d_loss(real, fake), by_formula)
    assert (
        gan.adopt_weight(1.0, 4, threshold=5) == 0.0
        and gan.adopt_weight(1.0, 5, threshold=5) == 1.0
    )


def test_adaptive_weight_by_hand_and_against_taming():
    """|d rec / d W| / (|d g / d W| + 1e-4) * disc_weight, with both gradients written out by hand."""
    W = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    v, target = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])
    out = W @ v
    rec_loss = ((out - target) ** 2).sum()
    g_loss = -(out * torch.tensor([1.0, 3.0])).sum()
    rec_grad = 2 * torch.outer(out.detach() - target, v)  # d rec / d W
    g_grad = -torch.outer(torch.tensor([1.0, 3.0]), v)  # d g / d W
    expected = 0.8 * rec_grad.norm() / (g_grad.norm() + 1e-4)
    got = gan.adaptive_weight(rec_loss, g_loss, W, disc_weight=0.8)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not got.requires_grad  # a number, not part of the graph
    # taming's method, called on a stand-in for the loss object it belongs to
    taming = vqperceptual.VQLPIPSWithDiscriminator.calculate_adaptive_weight(
        SimpleNamespace(discriminator_weight=0.8), rec_loss, g_loss, last_layer=W
    )
    assert got.item() == pytest.approx(taming.item(), rel=1e-6)
    # An adversarial loss with no gradient at the last layer: the ratio is clamped to 1e4.
    flat = gan.adaptive_weight(rec_loss, 0 * out.sum(), W, disc_weight=0.5)
    assert flat.item() == pytest.approx(0.5e4)


def test_three_step_finetune_changes_the_weights(shipped):
    before = {k: v.clone() for k, v in shipped.state_dict().items()}
    disc = gan.build_discriminator()
    disc_before = {k: v.clone() for k, v in disc.state_dict().items()}
    model, history = gan.finetune_with_discriminator(
        shipped, gan.GANConfig(disc_start=0, **TINY_RUN), discriminator=disc
    )
    assert model is not shipped and not model.training
    assert all(torch.equal(v, shipped.state_dict()[k]) for k, v in before.items())  # untouched
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("decoder.") for k in changed) and any("encoder." in k for k in changed)
    assert any(not torch.equal(v, disc.state_dict()[k]) for k, v in disc_before.items())
    assert history["step"] == [0, 1, 2]
    for key in ("rec_loss", "g_loss", "d_loss", "adaptive_weight", "d_acc_real", "d_acc_fake"):
        assert len(history[key]) == 3 and all(math.isfinite(v) for v in history[key]), key
    assert all(w > 0 for w in history["adaptive_weight"])
    assert all(0 <= a <= 1 for a in history["d_acc_real"] + history["d_acc_fake"])


def test_control_is_the_same_training_without_the_adversarial_term(shipped):
    """disc_weight=0, or a disc_start after the last step, give the very same VQGAN; the term on
    from step 0 gives another one."""
    control, h0 = gan.finetune_with_discriminator(shipped, gan.GANConfig(disc_weight=0, **TINY_RUN))
    late, _ = gan.finetune_with_discriminator(shipped, gan.GANConfig(disc_start=10, **TINY_RUN))
    on, _ = gan.finetune_with_discriminator(shipped, gan.GANConfig(disc_start=0, **TINY_RUN))
    sd_c, sd_l, sd_o = control.state_dict(), late.state_dict(), on.state_dict()
    assert all(torch.equal(sd_c[k], sd_l[k]) for k in sd_c)
    assert not all(torch.equal(sd_c[k], sd_o[k]) for k in sd_c)
    assert h0["adaptive_weight"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("steps", 2.5),
        ("batch_size", -1),
        ("lr", 0.0),
        ("disc_lr", float("nan")),
        ("disc_weight", -0.5),
        ("disc_start", -1),
        ("disc_layers", 0),
        ("n_train", True),
    ],
)
def test_bad_config_values_are_named(field, value):
    with pytest.raises(ValueError, match=rf"GANConfig\.{field} must be .*got {value!r}"):
        gan.GANConfig(**{field: value})


def test_bad_discriminator_and_inputs(shipped):
    with pytest.raises(ValueError, match="n_layers must be an integer >= 1, got 0"):
        gan.build_discriminator(n_layers=0)
    with pytest.raises(ValueError, match="too small.*n_layers=1 suits 32x32"):
        gan.patch_geometry(gan.build_discriminator(n_layers=4), 32)
    with pytest.raises(TypeError, match="GANConfig, got dict"):
        gan.finetune_with_discriminator(shipped, {"steps": 3})
    with pytest.raises(ValueError, match="models is empty"):
        gan.compare_reconstructions({})


def test_sharpness_drops_when_an_image_is_blurred():
    x = -torch.ones(1, 3, 16, 16)
    x[..., 4:12, 4:12] = 1.0  # a white square on black, in [-1, 1]
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    assert gan.sharpness(blurred) < gan.sharpness(x)
    assert gan.laplacian_variance(blurred) < gan.laplacian_variance(x)
    assert gan.edge_sharpness(x, x) == 1.0 and gan.edge_sharpness(blurred, x) < 0.9
    with pytest.raises(ValueError, match="no edges"):
        gan.edge_sharpness(x, torch.zeros_like(x))
    assert gan.sharpness(torch.zeros(1, 3, 8, 8)) == 0.0


def test_compare_reconstructions_rows(shipped):
    rows = gan.compare_reconstructions({"shipped": shipped}, n=8)
    assert set(rows) == {"originals", "shipped"}
    assert rows["originals"]["psnr_db"] is None and rows["originals"]["edge_sharpness"] == 1.0
    assert rows["shipped"]["psnr_db"] > 20 and 0 <= rows["shipped"]["judged_right"] <= 1
    json.dumps(rows)  # goes into the weights' .json as it is


def test_trainer_writes_weights_and_json(tmp_path, monkeypatch):
    from lessonlib import judge
    from lessonlib import train_tiny_vqgan_gan as T

    real_images, real_compare = T.make_images, T.compare_reconstructions
    monkeypatch.setattr(T, "make_images", lambda n, seed, image_size: real_images(8, seed))
    monkeypatch.setattr(T, "compare_reconstructions", lambda models: real_compare(models, n=4))
    monkeypatch.setattr(judge, "judge_reconstructions", lambda model, n, seed: {"judge_all": 1.0})
    out = tmp_path / "gan.safetensors"
    args = ["--steps", "1", "--batch-size", "2", "--n-train", "4", "--disc-start", "0", "--half"]
    T.main([*args, "--out", str(out)])
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["command"].startswith("python -m lessonlib.train_tiny_vqgan_gan --init shipped")
    assert info["dtype"] == "float16" and info["training"]["steps"] == 1
    assert set(info["heldout_comparison"]) == {"originals", "start", "finetuned"}
    assert load_vqgan(out).factor == 4
    for bad in (["--disc-weight", "-1"], ["--init", str(tmp_path / "missing.safetensors")]):
        with pytest.raises(SystemExit):
            T.main([*bad, "--out", str(out)])


def test_train_discriminator_trains_only_the_judge(shipped):
    before = {k: v.clone() for k, v in shipped.state_dict().items()}
    torch.manual_seed(0)
    disc = gan.build_discriminator()
    disc_before = {k: v.clone() for k, v in disc.state_dict().items()}
    history = gan.train_discriminator(disc, shipped, gan.GANConfig(**TINY_RUN))
    assert all(torch.equal(v, shipped.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, disc.state_dict()[k]) for k, v in disc_before.items())
    assert history["step"] == [0, 1, 2] and len(history["d_loss"]) == 3 and not disc.training
    with pytest.raises(TypeError, match="GANConfig, got int"):
        gan.train_discriminator(disc, shipped, 3)


def test_shipped_gan_vqgan_is_small_sharper_and_says_how_it_was_made():
    from lessonlib.checkpoints import weights_info
    from lessonlib.train_tiny_vqgan_gan import TINY_VQGAN_GAN_WEIGHTS

    assert TINY_VQGAN_GAN_WEIGHTS.stat().st_size <= 4_000_000
    info = weights_info(TINY_VQGAN_GAN_WEIGHTS)
    assert info["command"].startswith("python -m lessonlib.train_tiny_vqgan_gan --init shipped")
    measured = info["heldout_comparison"]
    assert measured["finetuned"]["edge_sharpness"] > measured["start"]["edge_sharpness"]
    assert measured["finetuned"]["psnr_db"] >= measured["start"]["psnr_db"]
    model = load_vqgan(TINY_VQGAN_GAN_WEIGHTS)
    assert model.factor == 4 and not model.training
