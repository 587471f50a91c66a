"""lessonlib.unclip and lessonlib.train_tiny_unclip: the tiny DALL-E 2 (unCLIP) built from diffusers.

Every test but the last builds small decoders and priors with random weights around the shipped tiny CLIP
and the f2 VQGAN, so the file runs before ``tiny_unclip.safetensors`` is trained. The sampling loops are
checked against hand-written loops over diffusers' own ``DDIMScheduler`` / ``DDPMScheduler``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lessonlib import train_tiny_unclip as T
from lessonlib.checkpoints import CheckpointError, weights_info
from lessonlib.data import HELD_OUT_PAIRS, ShapeObject, render
from lessonlib.images import ImageLoadError
from lessonlib.models import TINY_CLIP_WEIGHTS, load_tiny_clip
from lessonlib.prior import TINY_PRIOR_VQGAN
from lessonlib.tokenizer import UnknownWordWarning
from lessonlib.unclip import (
    REPRODUCE_COMMAND,
    TINY_UNCLIP_WEIGHTS,
    Decoder,
    DecoderConfig,
    DiffusionPrior,
    EmbeddingPriorConfig,
    RegressionPrior,
    TinyUnCLIP,
    UnCLIPResult,
    check_sampling,
    load_unclip,
    save_unclip,
    slerp,
)
from lessonlib.vqgan import load_vqgan

CLIP_DIM = 64
# (in_channels, sample_size) of each space: RGB pixels, or the f2 VQGAN's 32-channel 16x16 latents.
SPACES = {"pixel": (3, 32), "latent": (32, 16)}
# The coarsest width is 32: the decoder's attention uses 32-dim heads (see test_narrow_attention_...).
# Plain conditioning (added to the timestep embedding only), so hand loops can call the UNet directly;
# the concat and FiLM variants have their own test.
TINY_DECODER = dict(channels=(8, 32), layers_per_block=1, concat_channels=0, scale_shift=False)
TINY_DIFFUSION_PRIOR = dict(width=16, layers=1, heads=2)


def small_decoder(space: str = "pixel", seed: int = 0, **kw) -> Decoder:
    torch.manual_seed(seed)
    channels, side = SPACES[space]
    cfg = DecoderConfig(
        space=space, in_channels=channels, sample_size=side, **{**TINY_DECODER, **kw}
    )
    decoder = Decoder(cfg).eval()
    with torch.no_grad():  # a trained null vector is not zero; make it differ from every condition
        decoder.null_embedding.normal_()
    return decoder


def small_priors(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {
        "regression": RegressionPrior(EmbeddingPriorConfig(kind="regression", width=16, layers=2)),
        "diffusion": DiffusionPrior(EmbeddingPriorConfig(**TINY_DIFFUSION_PRIOR)).eval(),
    }


def unit(n: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(
        torch.randn(n, CLIP_DIM, generator=torch.Generator().manual_seed(seed)), dim=-1
    )


def picture(shape="circle", colour="red", size="large"):
    return render([ShapeObject(shape, colour, size)])


@pytest.fixture(scope="module")
def clip_parts():
    return load_tiny_clip(TINY_CLIP_WEIGHTS)  # (model, preprocess, tokenizer)


@pytest.fixture(scope="module")
def vqgan():
    return load_vqgan(TINY_PRIOR_VQGAN).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def latent_unclip(clip_parts, vqgan):
    clip, preprocess, tokenizer = clip_parts
    decoder = small_decoder("latent", latent_scale=2.5)  # as if measured by the trainer
    return TinyUnCLIP(clip, preprocess, tokenizer, decoder, small_priors(), vqgan)


@pytest.fixture(scope="module")
def pixel_unclip(clip_parts):
    clip, preprocess, tokenizer = clip_parts
    return TinyUnCLIP(clip, preprocess, tokenizer, small_decoder("pixel"), small_priors())


# ------------------------------------------------------------------------------ decoder: training maths
@pytest.mark.parametrize("prediction", ["sample", "epsilon", "v_prediction"])
def test_decoder_loss_is_diffusers_ddpm_target_with_gradients(prediction, one_torch_thread):
    from diffusers import DDPMScheduler

    decoder = small_decoder("latent", prediction=prediction)
    x0, embeds = torch.randn(3, 32, 16, 16), unit(3)
    torch.manual_seed(7)
    loss = decoder.loss(x0, embeds, p_uncond=0.0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in decoder.parameters())
    assert decoder.embed_proj[0].weight.grad.abs().sum() > 0  # the condition is trained
    assert decoder.null_embedding.grad.abs().sum() == 0  # p_uncond=0: the null vector is never used

    # The same draw by hand, with a scheduler built here: t, noise, keep are drawn in that order.
    sched = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction
    )
    torch.manual_seed(7)
    t = torch.randint(0, 1000, (3,))
    noise = torch.randn_like(x0)
    torch.rand(3)
    ab = sched.alphas_cumprod[t][:, None, None, None]
    noisy = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    target = {
        "sample": x0,
        "epsilon": noise,
        "v_prediction": ab.sqrt() * noise - (1 - ab).sqrt() * x0,
    }
    with torch.no_grad():
        want = F.mse_loss(
            decoder.unet(noisy, t, class_labels=decoder.embed_proj(embeds)).sample,
            target[prediction],
        )
    torch.testing.assert_close(loss.detach(), want, rtol=1e-4, atol=1e-6)

    decoder.zero_grad()
    decoder.loss(
        x0, embeds, p_uncond=1.0
    ).backward()  # every row dropped: only the null vector conditions
    assert decoder.null_embedding.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "extra", [dict(concat_channels=4), dict(scale_shift=True, attention=False)]
)
def test_decoder_conditioning_variants_train_and_sample(extra, one_torch_thread):
    decoder = small_decoder("pixel", **extra)
    loss = decoder.loss(torch.rand(2, 3, 32, 32) * 2 - 1, unit(2))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in decoder.parameters())
    assert decoder.sample(unit(2), steps=2).shape == (2, 3, 32, 32)


def test_keep_false_is_the_null_embedding(one_torch_thread):
    decoder = small_decoder("pixel")
    x, t, embeds = torch.randn(3, 3, 32, 32), torch.tensor([5, 500, 900]), unit(3)
    with torch.no_grad():
        dropped = decoder(x, t, embeds, keep=torch.zeros(3, dtype=torch.bool))
        null = decoder(x, t, decoder.null_embedding.expand(3, -1))
        kept = decoder(x, t, embeds, keep=torch.ones(3, dtype=torch.bool))
        mixed = decoder(x, t, embeds, keep=torch.tensor([True, False, True]))
    torch.testing.assert_close(dropped, null)
    torch.testing.assert_close(kept, decoder(x, t, embeds))
    assert not torch.allclose(kept, null, atol=1e-4)  # the condition matters at all
    torch.testing.assert_close(mixed[1], null[1])
    torch.testing.assert_close(mixed[[0, 2]], kept[[0, 2]])


# ------------------------------------------------------------------------------ decoder: sampling maths
def hand_ddim(decoder: Decoder, embeds, steps: int, seed: int, guidance: float | None = None):
    """DDIM with diffusers' scheduler, written out. ``guidance=None``: one UNet call on ``embeds``."""
    from diffusers import DDIMScheduler

    cfg = decoder.config
    sched = DDIMScheduler(
        num_train_timesteps=cfg.train_timesteps,
        beta_schedule=cfg.schedule,
        prediction_type=cfg.prediction,
        clip_sample=False,
        set_alpha_to_one=True,
    )
    sched.set_timesteps(steps)
    shape = (len(embeds), cfg.in_channels, cfg.sample_size, cfg.sample_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    null = decoder.null_embedding.expand_as(embeds)
    with torch.no_grad():
        for t in sched.timesteps:
            pred = decoder.unet(x, t, class_labels=decoder.embed_proj(embeds)).sample
            if guidance is not None:
                uncond = decoder.unet(x, t, class_labels=decoder.embed_proj(null)).sample
                pred = uncond + guidance * (pred - uncond)
            x = sched.step(pred, t, x).prev_sample
    return x


@pytest.mark.parametrize("prediction", ["sample", "epsilon", "v_prediction"])
def test_guidance_one_is_the_plain_conditional_ddim_loop(prediction, one_torch_thread):
    decoder = small_decoder("pixel", prediction=prediction)
    embeds = unit(2)
    got = decoder.sample(embeds, steps=4, guidance=1.0, seed=3)
    torch.testing.assert_close(got, hand_ddim(decoder, embeds, 4, seed=3), rtol=1e-4, atol=1e-5)


def test_guidance_zero_is_the_null_loop_and_guidance_extrapolates(one_torch_thread):
    decoder = small_decoder("latent")
    embeds = unit(2, seed=1)
    null = decoder.null_embedding.detach().expand(2, -1)
    got0 = decoder.sample(embeds, steps=4, guidance=0.0, seed=5)
    torch.testing.assert_close(got0, hand_ddim(decoder, null, 4, seed=5), rtol=1e-4, atol=1e-5)
    # guidance 0 ignores the condition entirely
    torch.testing.assert_close(got0, decoder.sample(unit(2, seed=9), steps=4, guidance=0.0, seed=5))
    got3 = decoder.sample(embeds, steps=4, guidance=3.0, seed=5)
    want3 = hand_ddim(decoder, embeds, 4, seed=5, guidance=3.0)
    torch.testing.assert_close(got3, want3, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got3, got0, atol=1e-3)


def test_decoder_sample_shapes_seeds_and_callback(one_torch_thread):
    for space, (channels, side) in SPACES.items():
        decoder = small_decoder(space)
        seen = []
        x = decoder.sample(
            unit(3), steps=3, seed=1, callback=lambda i, x0, seen=seen: seen.append((i, x0.shape))
        )
        assert x.shape == (3, channels, side, side) and torch.isfinite(x).all()
        assert seen == [(i, (3, channels, side, side)) for i in range(3)]
    torch.testing.assert_close(decoder.sample(unit(3), steps=3, seed=1), x, rtol=0, atol=0)
    assert not torch.allclose(decoder.sample(unit(3), steps=3, seed=2), x, atol=1e-3)
    shared = decoder.sample(unit(1).expand(3, -1), steps=3, seed=1, noise_shared=True)
    torch.testing.assert_close(shared[0], shared[2], rtol=1e-5, atol=1e-5)
    apart = decoder.sample(unit(1).expand(3, -1), steps=3, seed=1)
    assert not torch.allclose(apart[0], apart[2], atol=1e-3)


# ------------------------------------------------------------------------------ priors and slerp
def test_slerp_endpoints_and_unit_length():
    a, b = unit(4, seed=0), unit(4, seed=1)
    torch.testing.assert_close(slerp(a, b, 0.0), a, rtol=0, atol=1e-5)
    torch.testing.assert_close(slerp(a, b, 1.0), b, rtol=0, atol=1e-5)
    for w in (0.25, 0.5, 0.9):
        mid = slerp(a * 3, b * 0.5, w)  # inputs need not be unit vectors
        torch.testing.assert_close(mid.norm(dim=-1), torch.ones(4), rtol=0, atol=1e-5)
    # the angle is split in proportion to w (a straight lerp would not do this)
    angle = torch.arccos((a * b).sum(-1))
    torch.testing.assert_close(
        torch.arccos((slerp(a, b, 0.25) * a).sum(-1)), angle * 0.25, rtol=1e-3, atol=1e-4
    )
    torch.testing.assert_close(slerp(a, a, 0.5), a, rtol=0, atol=1e-4)  # same point: no NaN


def test_diffusion_prior_gives_unit_vectors_seeded_and_guidance_zero_ignores_text(one_torch_thread):
    prior = small_priors()["diffusion"]
    text = unit(3)
    out = prior.sample(text, seed=1, steps=4)
    assert out.shape == (3, CLIP_DIM)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(prior.sample(text, seed=1, steps=4), out, rtol=0, atol=0)
    assert not torch.allclose(prior.sample(text, seed=2, steps=4), out, atol=1e-3)
    with torch.no_grad():
        prior.null_embedding.normal_()
    blank = prior.sample(text, seed=1, steps=4, guidance=0.0)
    torch.testing.assert_close(blank, prior.sample(unit(3, seed=8), seed=1, steps=4, guidance=0.0))
    assert not torch.allclose(blank, prior.sample(text, seed=1, steps=4, guidance=2.0), atol=1e-3)
    loss = prior.loss(text, unit(3, seed=4))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert prior.transformer.proj_in.weight.grad.abs().sum() > 0


def test_regression_prior_loss_is_one_minus_cosine():
    prior = small_priors()["regression"]
    text, image = unit(5), unit(5, seed=2)
    pred = prior(text)
    torch.testing.assert_close(pred.norm(dim=-1), torch.ones(5))
    want = (1 - F.cosine_similarity(prior.net(text), image, dim=-1)).mean()
    torch.testing.assert_close(prior.loss(text, image), want)
    assert prior.loss(text, pred.detach()).item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(prior.sample(text, seed=1), prior.sample(text, seed=2))


# ------------------------------------------------------------------------------ the bundle
def test_decode_gives_pictures_in_both_spaces(latent_unclip, pixel_unclip, one_torch_thread):
    for model in (latent_unclip, pixel_unclip):
        images = model.decode(unit(2), steps=2, seed=0)
        assert images.shape == (2, 3, 32, 32)
        assert images.min() >= 0 and images.max() <= 1 and images.std() > 0


def test_latent_pictures_are_the_vqgan_decoding_of_snapped_latents(latent_unclip, vqgan):
    z = torch.randn(2, 32, 16, 16)
    scale = latent_unclip.decoder.config.latent_scale
    codes = vqgan.nearest_codes(z * scale)
    with torch.no_grad():
        want = vqgan.decode_codes(codes).add(1).div(2).clamp(0, 1)
    torch.testing.assert_close(latent_unclip.to_pixels(z), want)


@pytest.mark.parametrize("prior", ["regression", "diffusion"])
def test_draw_returns_pictures_unit_embeddings_and_scores(prior, latent_unclip, one_torch_thread):
    out = latent_unclip.draw("a large red circle", n=2, seed=1, prior=prior, steps=2, prior_steps=2)
    assert isinstance(out, UnCLIPResult)
    assert out.images.shape == (2, 3, 32, 32)
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert out.image_embeds.shape == (2, CLIP_DIM)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(2))
    assert out.scores.shape == (2,) and ((out.scores >= -1) & (out.scores <= 1)).all()
    want = (
        latent_unclip.image_embeds(out.images) * latent_unclip.text_embeds("a large red circle")
    ).sum(-1)
    torch.testing.assert_close(out.scores, want)
    assert out.seconds > 0
    assert out.pil(1).size == (32, 32)
    again = latent_unclip.draw(
        "a large red circle", n=2, seed=1, prior=prior, steps=2, prior_steps=2
    )
    torch.testing.assert_close(again.images, out.images, rtol=0, atol=0)


def test_image_embeds_agree_for_pil_paths_and_tensors(pixel_unclip, tmp_path):
    pics = [picture(), picture("cross", "green", "small")]
    pics[0].save(tmp_path / "a.png")
    from_pil = pixel_unclip.image_embeds(pics)
    batch = torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1) for p in pics])
    torch.testing.assert_close(
        pixel_unclip.image_embeds(batch.float() / 255), from_pil, rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        pixel_unclip.image_embeds(tmp_path / "a.png"), from_pil[:1], rtol=0, atol=1e-5
    )
    torch.testing.assert_close(pixel_unclip.image_embeds(pics[1]), from_pil[1:], rtol=0, atol=1e-5)
    torch.testing.assert_close(from_pil.norm(dim=-1), torch.ones(2))


def test_variations_interpolate_and_text_diff(pixel_unclip, one_torch_thread):
    red, blue = picture(), picture("square", "blue", "small")
    variations = pixel_unclip.variations(red, n=3, steps=2, seed=4)
    assert variations.shape == (3, 3, 32, 32)
    assert not torch.allclose(variations[0], variations[1], atol=1e-3)  # new noise, new pictures
    same = pixel_unclip.interpolate(red, red, k=4, steps=2, seed=4)
    assert same.shape == (4, 3, 32, 32)
    for row in same[1:]:  # one noise for all rows: a picture with itself gives the same row k times
        torch.testing.assert_close(row, same[0], rtol=0, atol=1e-4)
    path = pixel_unclip.interpolate(red, blue, k=3, steps=2, seed=4)
    assert path.shape == (3, 3, 32, 32)
    # the row's ends are the two pictures' own decodings with that noise
    a = pixel_unclip.decode(pixel_unclip.image_embeds(red), steps=2, seed=4)
    b = pixel_unclip.decode(pixel_unclip.image_embeds(blue), steps=2, seed=4)
    torch.testing.assert_close(path[0], a[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(path[2], b[0], rtol=0, atol=1e-4)
    assert not torch.allclose(path[1], path[0], atol=1e-3)
    diff = pixel_unclip.text_diff(red, "a red circle", "a blue circle", k=3, steps=2, seed=4)
    assert diff.shape == (3, 3, 32, 32)
    torch.testing.assert_close(diff[0], a[0], rtol=0, atol=1e-4)  # step 0 is the picture itself
    assert diff.min() >= 0 and diff.max() <= 1


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("steps", [0, 1001, 2.5, True])
def test_check_sampling_refuses_steps(steps):
    with pytest.raises(
        ValueError, match=rf"steps must be an integer from 1 to 1000.*got {re.escape(repr(steps))}$"
    ):
        check_sampling(steps, 3.0)


@pytest.mark.parametrize("guidance", [-1, 21, "3"])
def test_check_sampling_refuses_guidance(guidance):
    with pytest.raises(
        ValueError, match=rf"guidance must be a number from 0.*got {re.escape(repr(guidance))}$"
    ):
        check_sampling(25, guidance)


def test_check_sampling_accepts_the_limits_and_sampling_uses_it():
    assert check_sampling(1, 0) == (1, 0.0) and check_sampling(1000, 20) == (1000, 20.0)
    assert isinstance(check_sampling(25, 3)[1], float)
    with pytest.raises(ValueError, match="got 0$"):
        small_decoder().sample(unit(1), steps=0)
    with pytest.raises(ValueError, match="got 99$"):
        small_priors()["diffusion"].sample(unit(1), guidance=99)


def test_draw_refuses_bad_requests(latent_unclip):
    quick = dict(steps=1, prior_steps=1)
    with pytest.raises(ValueError, match="n must be an integer from 1 to 256.*got 0"):
        latent_unclip.draw("a red circle", n=0, **quick)
    with pytest.raises(
        ValueError, match="unknown prior 'clip': this model has regression, diffusion"
    ):
        latent_unclip.draw("a red circle", prior="clip", **quick)
    with pytest.raises(ValueError, match="prompt '' is empty"):
        latent_unclip.draw("", **quick)
    with pytest.warns(UnknownWordWarning, match="zebra"):
        latent_unclip.draw("a red zebra", **quick)


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="space must be 'latent' or 'pixel', got 'rgb'"):
        DecoderConfig(space="rgb")
    with pytest.raises(ValueError, match="prediction must be .*got 'x'"):
        DecoderConfig(prediction="x")
    with pytest.raises(ValueError, match="kind must be 'diffusion' or 'regression', got 'gan'"):
        EmbeddingPriorConfig(kind="gan")


def test_a_text_file_is_not_a_picture(pixel_unclip, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("a large red circle, honestly")
    with pytest.raises(ImageLoadError, match="notes.png"):
        pixel_unclip.image_embeds(notes)
    with pytest.raises(ValueError, match="notes.png"):
        pixel_unclip.variations(str(notes), n=1, steps=1)


def test_a_latent_decoder_needs_its_vqgan(clip_parts):
    clip, preprocess, tokenizer = clip_parts
    with pytest.raises(ValueError, match="latent-space decoder needs the VQGAN"):
        TinyUnCLIP(clip, preprocess, tokenizer, small_decoder("latent"), {})


def test_narrow_attention_decoder_works_or_is_refused_up_front():
    try:
        decoder = Decoder(
            DecoderConfig(space="pixel", in_channels=3, sample_size=32, channels=(8, 16))
        )
    except ValueError as err:
        assert "attention" in str(err) or "channels" in str(err)
        return
    decoder.loss(torch.zeros(1, 3, 32, 32), unit(1))


# ------------------------------------------------------------------------------ save and load
def test_save_load_round_trip_and_the_partner_pins(latent_unclip, tmp_path, one_torch_thread):
    path = save_unclip(
        latent_unclip,
        tmp_path / "u.safetensors",
        TINY_CLIP_WEIGHTS,
        TINY_PRIOR_VQGAN,
        command="test",
    )
    info = weights_info(path)
    assert info["clip"] == TINY_CLIP_WEIGHTS.name and info["vqgan"] == TINY_PRIOR_VQGAN.name
    assert set(info["config"]["priors"]) == {"regression", "diffusion"}
    loaded = load_unclip(path, TINY_CLIP_WEIGHTS, TINY_PRIOR_VQGAN)
    assert loaded.decoder.config == latent_unclip.decoder.config
    assert not any(p.requires_grad for p in loaded.decoder.parameters())
    for prior in ("regression", "diffusion"):
        want = latent_unclip.draw(
            "a small blue square", n=2, seed=3, prior=prior, steps=2, prior_steps=2
        )
        got = loaded.draw("a small blue square", n=2, seed=3, prior=prior, steps=2, prior_steps=2)
        torch.testing.assert_close(got.images, want.images, rtol=0, atol=0)
        torch.testing.assert_close(got.image_embeds, want.image_embeds, rtol=0, atol=0)
    # without partner paths the recorded names are found in lessonlib/weights
    by_name = load_unclip(path)
    torch.testing.assert_close(by_name.decoder.null_embedding, latent_unclip.decoder.null_embedding)

    other_clip = TINY_CLIP_WEIGHTS.with_name("tiny_clip_seed1.safetensors")
    with pytest.raises(
        CheckpointError,
        match="'tiny_clip_seed1.safetensors' is a different file.*'tiny_clip.safetensors'",
    ):
        load_unclip(path, other_clip, TINY_PRIOR_VQGAN)
    other_vqgan = TINY_PRIOR_VQGAN.with_name("tiny_vqgan.safetensors")
    with pytest.raises(
        CheckpointError, match="VQGAN.*'tiny_vqgan.safetensors'.*'tiny_vqgan_f2.safetensors'"
    ):
        load_unclip(path, TINY_CLIP_WEIGHTS, other_vqgan)
    with pytest.raises(FileNotFoundError, match=re.escape(f"run `{REPRODUCE_COMMAND}`")):
        load_unclip(tmp_path / "missing.safetensors")


def test_pixel_unclip_saves_without_a_vqgan(pixel_unclip, tmp_path):
    path = save_unclip(pixel_unclip, tmp_path / "p.safetensors", TINY_CLIP_WEIGHTS)
    assert "vqgan" not in weights_info(path)
    loaded = load_unclip(path, TINY_CLIP_WEIGHTS)
    assert loaded.vqgan is None
    torch.testing.assert_close(
        loaded.decode(unit(1), steps=2, seed=1),
        pixel_unclip.decode(unit(1), steps=2, seed=1),
        rtol=0,
        atol=0,
    )


def test_a_latent_unclip_saved_without_its_vqgan_is_refused_or_loads(latent_unclip, tmp_path):
    try:
        path = save_unclip(latent_unclip, tmp_path / "u.safetensors", TINY_CLIP_WEIGHTS)
    except ValueError as err:
        assert "vqgan" in str(err).lower()
        return
    load_unclip(path, TINY_CLIP_WEIGHTS)


# ------------------------------------------------------------------------------ the trainer
def test_training_settings_are_checked():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        T.UnCLIPTraining(batch_size=0)
    with pytest.raises(ValueError, match=r"p_uncond must be in \[0, 1\), got 1.0"):
        T.UnCLIPTraining(p_uncond=1.0)
    with pytest.raises(ValueError, match="n_train"):
        T.UnCLIPTraining(n_train=True)
    with pytest.raises(ValueError, match="decoder_steps must be a positive integer, got 0"):
        T.UnCLIPTraining(decoder_steps=0)
    with pytest.raises(ValueError, match="prior_split must be 'all' or 'train', got 'trian'"):
        T.UnCLIPTraining(prior_split="trian")
    with pytest.raises(ValueError, match="time budget"):
        T.UnCLIPTraining(decoder_seconds=0)


def test_fit_stops_after_the_given_steps_whatever_the_time_budget():
    model = T.build_prior(EmbeddingPriorConfig(kind="regression", width=8, layers=2))
    x = F.normalize(torch.randn(8, CLIP_DIM), dim=-1)
    facts = T.fit(model, lambda step: (x, x), 3600.0, 1e-3, 0.9, 0, None, 5)
    assert facts["steps"] == 5 and len(facts["losses"]) == 5
    facts = T.fit(model, lambda step: (x, x), 0.2, 1e-3, 0.9, 0)
    assert facts["steps"] >= 1 and facts["seconds"] < 5


def tiny_configs(space: str = "latent") -> dict:
    return {
        "decoder": DecoderConfig(space=space, **TINY_DECODER),
        "priors": {
            "regression": EmbeddingPriorConfig(kind="regression", width=16, layers=2),
            "diffusion": EmbeddingPriorConfig(**TINY_DIFFUSION_PRIOR),
        },
    }


def test_train_unclip_trains_every_part(clip_parts, vqgan, one_torch_thread):
    clip, preprocess, tokenizer = clip_parts
    settings = T.UnCLIPTraining(decoder_seconds=2, prior_seconds=1, n_train=64, batch_size=8)
    configs = tiny_configs("latent")
    parts = set()
    unclip, facts = T.train_unclip(
        clip,
        preprocess,
        tokenizer,
        vqgan,
        settings,
        configs,
        callback=lambda part, *a: parts.add(part),
    )
    assert parts == {"decoder", "regression", "diffusion"}
    for part in ("decoder", "prior_regression", "prior_diffusion"):
        assert facts[part]["steps"] >= 1, facts
        assert facts[part]["final_loss"] == pytest.approx(facts[part]["final_loss"])  # not NaN
    assert facts["prior_regression"]["final_loss"] < 2  # 1 - cosine
    cfg = unclip.decoder.config
    assert cfg.in_channels == 32 and cfg.sample_size == 16
    assert cfg.latent_scale > 0 and cfg.latent_scale != 1.0  # the latents' spread, measured
    assert configs["decoder"].latent_scale == 1.0  # the caller's config is left alone
    assert not any(p.requires_grad for p in unclip.decoder.parameters())
    out = unclip.draw("a large red circle", prior="regression", steps=2)
    assert out.images.shape == (1, 3, 32, 32)


@pytest.fixture(scope="module")
def pixel_data(clip_parts):
    clip, preprocess, tokenizer = clip_parts
    data = T.make_data(clip, preprocess, tokenizer, None, 64, seed=0)
    assert data["pixels"].shape == (64, 3, 32, 32) and "latents" not in data
    assert -1 <= data["pixels"].min() and data["pixels"].max() <= 1
    for key in ("image_embeds", "text_embeds"):
        assert data[key].shape == (64, CLIP_DIM)
        torch.testing.assert_close(data[key].norm(dim=-1), torch.ones(64))
    assert len(data["captions"]) == len(data["pairs"]) == 64
    return data


@pytest.mark.parametrize("split", ["train", "all"])
def test_prior_split_train_never_shows_the_priors_a_held_out_caption(
    split, clip_parts, pixel_data, monkeypatch
):
    """Rows are tagged (first embedding coordinate = row index) and ``fit`` records every batch."""
    clip, preprocess, tokenizer = clip_parts
    data = dict(pixel_data)
    rows = torch.arange(64, dtype=torch.float32)
    data["image_embeds"], data["text_embeds"] = (
        data["image_embeds"].clone(),
        data["text_embeds"].clone(),
    )
    data["image_embeds"][:, 0] = rows
    data["text_embeds"][:, 0] = rows
    monkeypatch.setattr(T, "make_data", lambda *a, **k: data)
    seen = {"decoder": set(), "prior": set()}

    def fake_fit(model, batches, seconds, lr, ema, seed, callback=None, steps=None):
        part = "decoder" if isinstance(model, Decoder) else "prior"
        for step in range(30):
            batch = batches(step)
            if part == "prior":  # a caption goes with its own picture
                torch.testing.assert_close(batch[0][:, 0], batch[1][:, 0])
            seen[part].update(batch[1][:, 0].long().tolist())
        return {"steps": 30, "seconds": 0.0, "losses": [0.0]}

    monkeypatch.setattr(T, "fit", fake_fit)
    settings = T.UnCLIPTraining(n_train=64, batch_size=8, prior_split=split)
    _, facts = T.train_unclip(clip, preprocess, tokenizer, None, settings, tiny_configs("pixel"))
    assert facts["prior_regression"]["steps"] == 30
    held = {i for i, pair in enumerate(data["pairs"]) if pair in set(HELD_OUT_PAIRS)}
    assert 0 < len(held) < 64
    assert seen["decoder"] & held  # decoder_split="all": the decoder sees every picture
    if split == "train":
        assert not seen["prior"] & held, [data["captions"][i] for i in seen["prior"] & held]
        assert seen["prior"]
    else:
        assert seen["prior"] & held


def test_main_trains_evaluates_and_saves(tmp_path, monkeypatch, capsys, one_torch_thread):
    import lessonlib.judge

    prompts = ["a large red circle", "a small blue circle"]  # blue circle is a held-out pair
    monkeypatch.setattr(lessonlib.judge, "object_prompts", lambda n, seed=0: prompts)
    out = tmp_path / "u.safetensors"
    args = [
        "--space",
        "pixel",
        "--channels",
        "8,32",
        "--decoder-minutes",
        "0.02",
        "--prior-minutes",
        "0.005",
    ]
    T.main(args + ["--n-train", "64", "--batch-size", "8", "--out", str(out)])
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["command"].startswith("python -m lessonlib.train_tiny_unclip --space pixel")
    assert "vqgan" not in info and info["clip"] == TINY_CLIP_WEIGHTS.name
    test = info["results"]["test"]
    for name in ("regression", "diffusion"):
        assert test[name]["n"] == 2 and test[name]["held_out_n"] == 1
        assert 0 <= test[name]["right"] <= 2
    assert 0 <= test["decoder_on_real_embeddings"] <= 2
    assert info["training"]["threads"] == 1 and info["training"]["n_train"] == 64
    assert load_unclip(out).decoder.config.space == "pixel"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        T.main(["--decoder-minutes", "0", "--out", str(tmp_path / "x.safetensors")])
    assert "must be positive" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the shipped model
@pytest.mark.skipif(
    not TINY_UNCLIP_WEIGHTS.is_file(),
    reason=f"{TINY_UNCLIP_WEIGHTS.name} is not trained yet: run `{REPRODUCE_COMMAND}`",
)
def test_shipped_unclip_draws_a_32x32_picture(one_torch_thread):
    unclip = load_unclip()
    info = weights_info(TINY_UNCLIP_WEIGHTS)
    assert info["command"].startswith(REPRODUCE_COMMAND) and info["clip"] == TINY_CLIP_WEIGHTS.name
    out = unclip.draw("a large red circle", n=1, seed=0)
    assert out.images.shape == (1, 3, 32, 32) and out.pil().size == (32, 32)
    assert out.images.min() >= 0 and out.images.max() <= 1
