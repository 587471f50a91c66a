"""lessonlib.speed: every speed path computes the same maths as the plain path.

Tolerances, once for the whole file:
* float32 against float32 computed another way (other kernels, another summation order): ~1e-7
  relative per operation, ~1e-6 after a dozen layers; we allow 1e-4 (relative, or of the largest value),
  far below any real change of maths (a wrong scale or a missing bias moves values by 1e-2 or more).
* bfloat16 against float32: bfloat16 keeps 8 significant bits, ~3 significant digits (relative
  rounding 2^-9 = 0.2% per value); after many layers errors of a few percent are normal, so bfloat16
  results are compared by direction (cosine similarity) and by relative error at the percent level.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lessonlib import speed
from lessonlib.vqgan import VQGAN, VQGANConfig

# A decoder with attention at every level and two residual blocks per level: every path of
# decode_lean runs (the shipped tiny VQGAN has no attention).
SMALL = dict(
    ch=32,
    ch_mult=(1, 2),
    num_res_blocks=2,
    attn_resolutions=(8, 16),
    z_channels=32,
    resolution=16,
    n_embed=32,
    embed_dim=8,
)


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """|got - want| / |want| over the whole tensor (L2 norms)."""
    got, want = got.detach().float(), want.detach().float()
    return float((got - want).norm() / want.norm())


@pytest.fixture(scope="module")
def vit_b32():
    import open_clip

    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-32", pretrained=None).eval()


# ------------------------------------------------------------------------------ the fast ViT path


def test_encode_image_fast_equals_open_clip_forward_and_gradients(vit_b32):
    """The fast ViT path is the same function as open_clip's forward: values and input gradients."""
    visual = vit_b32.visual
    assert speed.fast_vit_supported(visual)
    x = torch.randn(3, 3, 224, 224, requires_grad=True)
    want = visual(x)
    (grad_want,) = torch.autograd.grad(want.square().sum(), x)
    got = speed.encode_image_fast(visual, x)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    # float32 both ways: equal to float rounding (1e-4, see the module docstring).
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert torch.allclose(grad_got, grad_want, atol=1e-4 * grad_want.abs().max().item())


def test_encode_image_fast_in_bfloat16_is_float32_to_bfloat16_precision(vit_b32):
    """What generate runs on CPUs with native bf16: the fast path under bf16 autocast, against the
    plain float32 forward. Values and input gradients agree in direction (cosine > 0.99) and to a
    few percent (bf16 has ~3 significant digits, and the error grows over 12 blocks)."""
    visual = vit_b32.visual
    x = torch.randn(3, 3, 224, 224, requires_grad=True)
    want = visual(x)
    (grad_want,) = torch.autograd.grad(want.square().sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = speed.encode_image_fast(visual, x).float()
    (grad_low,) = torch.autograd.grad(low.square().sum(), x)
    # Measured on an AVX512-BF16 CPU: values 0.9% off (cosine 0.99995), gradients 1.5% off. The
    # bounds leave 3x to 5x room for other CPUs' bf16 kernels; a real change of maths is >> 10%.
    assert F.cosine_similarity(low, want.detach(), dim=-1).min() > 0.99
    assert rel_error(low, want) < 0.05
    assert F.cosine_similarity(grad_low.flatten(1), grad_want.flatten(1), dim=-1).min() > 0.99
    assert rel_error(grad_low, grad_want) < 0.05


def test_fast_path_falls_back_for_other_towers():
    from lessonlib.models import load_tiny_clip

    clip_model, _, _ = load_tiny_clip()  # a ResNet tower
    assert not speed.fast_vit_supported(clip_model.visual)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(speed.encode_image_fast(clip_model.visual, x), clip_model.visual(x))
    assert speed.vit_dtype(clip_model.visual, torch.device("cpu")) == torch.float32


# ------------------------------------------------------------------------------ precision choices


def test_precision_choices(monkeypatch, vit_b32):
    from lessonlib.critics import as_critic

    cpu = torch.device("cpu")
    tiny = VQGAN(VQGANConfig(**SMALL), with_encoder=False)
    wide = VQGAN(VQGANConfig(**{**SMALL, "ch": 64}), with_encoder=False)
    monkeypatch.setattr(speed, "_bf16_cpu_ok", lambda: True)
    assert speed.decoder_dtype(wide, cpu, "auto") == torch.bfloat16
    assert speed.decoder_dtype(tiny, cpu, "auto") == torch.float32  # ch 32: float32 as fast
    assert speed.vit_dtype(vit_b32.visual, cpu) == torch.bfloat16
    assert speed.critic_dtype(as_critic(vit_b32), "auto") == torch.bfloat16
    monkeypatch.setattr(speed, "_bf16_cpu_ok", lambda: False)
    assert speed.decoder_dtype(wide, cpu, "auto") == torch.float32
    assert speed.critic_dtype(as_critic(vit_b32), "auto") == torch.float32
    # Forced precisions hold for any model.
    assert speed.decoder_dtype(tiny, cpu, "bfloat16") == torch.bfloat16
    assert speed.critic_dtype(as_critic(vit_b32), "bfloat16") == torch.bfloat16
    assert speed.critic_dtype(as_critic(vit_b32), "float32") == torch.float32
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        speed.decoder_dtype(tiny, cpu, "fp8")
    with speed.autocast(cpu, torch.float32):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with speed.autocast(cpu, torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_bfloat16_decoder_is_float32_to_bfloat16_precision():
    """The decoder under bf16 autocast (generate's choice for wide decoders) against float32: the
    image and the gradient into the latents agree to bf16's precision (a few percent)."""
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(**SMALL)).eval().requires_grad_(False)
    z = torch.randn(1, 8, 8, 8, requires_grad=True)
    weights = torch.linspace(-1, 1, 3 * 16 * 16).view(1, 3, 16, 16)
    want = speed.decode_lean(model, z)
    (grad_want,) = torch.autograd.grad((want * weights).sum(), z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = speed.decode_lean(model, z).float()
    (grad_low,) = torch.autograd.grad((low * weights).sum(), z)
    # Measured on an AVX512-BF16 CPU: image 2.1% off, latent gradient 2.4% off (bf16 rounds every
    # conv's inputs to ~3 digits); 5% leaves 2x room, and a wrong op would be off by far more.
    assert rel_error(low, want) < 0.05
    assert rel_error(grad_low, grad_want) < 0.05


def test_converted_copy_is_the_same_weights_rounded(vit_b32):
    visual = vit_b32.visual
    copy = speed._converted_copy(visual, torch.bfloat16)
    assert copy is not visual and not copy.training
    for (name, p), q in zip(visual.named_parameters(), copy.parameters()):
        assert q.dtype == torch.bfloat16 and not q.requires_grad, name
        assert torch.equal(q, p.detach().to(torch.bfloat16)), name  # rounding, nothing else
        assert p.dtype == torch.float32  # the original is untouched


# ----------------------------------------------------------------------------- memory: checkpoints


def test_auto_checkpoint_levels():
    f16 = VQGAN(VQGANConfig.imagenet_f16_16384(), with_encoder=False)
    assert speed.auto_checkpoint_levels(f16, (256, 256)) == 3  # sides 256, 128, 64
    assert speed.auto_checkpoint_levels(f16, (512, 256)) == 3  # the short side counts
    assert speed.auto_checkpoint_levels(f16, (32, 32)) == 0
    small = VQGAN(VQGANConfig(**SMALL), with_encoder=False)
    assert speed.auto_checkpoint_levels(small, (128, 128), min_side=32) == 2  # 128, 64


@pytest.mark.parametrize("checkpoint_levels", [0, 1, 2])
def test_lean_decoder_matches_taming_forward(checkpoint_levels):
    """decode_lean (F.silu, fused attention, optional recomputation) computes taming's Decoder.forward:
    same output and same gradient with respect to the latents (moved from test_vqgan.py). float32
    both ways: 1e-5 absolute on values of order 1 (see the module docstring)."""
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(**SMALL)).eval().requires_grad_(False)
    z = torch.randn(2, 8, 8, 8, requires_grad=True)
    want = model.decode(z)
    (want * torch.linspace(-1, 1, want.numel()).view_as(want)).sum().backward()
    want_grad, z.grad = z.grad.clone(), None
    got = speed.decode_lean(model, z, checkpoint_levels=checkpoint_levels)
    (got * torch.linspace(-1, 1, got.numel()).view_as(got)).sum().backward()
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(z.grad, want_grad, atol=1e-5)


def test_release_freed_memory_leaves_live_tensors_alone():
    x = torch.arange(1000.0)
    garbage = [torch.randn(10_000) for _ in range(10)]
    del garbage
    speed.release_freed_memory()  # must not fail, glibc or not
    assert torch.equal(x, torch.arange(1000.0))


# ------------------------------------------------------------------------- the whole loop, bf16


def test_generate_in_bfloat16_matches_float32_at_the_first_step():
    """The whole loop forced to bf16 (decoder and critic) against float32: step 0's loss is a forward
    pass from the same start on the same crops, so it agrees to bf16's precision (1%)."""
    from lessonlib.generate import generate
    from lessonlib.models import load_tiny_clip

    torch.manual_seed(0)
    vqgan = VQGAN(VQGANConfig(**SMALL)).eval()
    clip_model, preprocess, tokenizer = load_tiny_clip()
    run = dict(size=32, steps=2, cutn=4, chunk=4, seed=1, progress=False)
    exact = generate(
        "a red circle", vqgan, clip_model, tokenizer, preprocess, precision="float32", **run
    )
    low = generate(
        "a red circle", vqgan, clip_model, tokenizer, preprocess, precision="bfloat16", **run
    )
    assert low.losses[0] == pytest.approx(exact.losses[0], rel=1e-2)
