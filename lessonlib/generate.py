"""VQGAN+CLIP: draw a picture by optimising a VQGAN's latent grid until CLIP likes it.

Introduced in lesson 04_vqgan_clip.

This file is the loop, to be read top to bottom: the three small pieces of maths it needs, the settings
(``GenerateConfig``), and ``generate``. One step (after Katherine Crowson's VQGAN+CLIP notebook, 2021):

1. snap the latent grid ``z`` to its nearest codebook vectors, with a *straight-through* gradient
   (the forward pass uses the code, the backward pass pretends the snap was the identity);
2. decode the codes to an image;
3. cut ``cutn`` random crops out of it (random scale, position, small rotation, flips, noise), resized
   to CLIP's input size: CLIP must like the picture from many viewpoints, not one adversarial pattern;
4. embed the crops with the critic's image tower and measure the *spherical distance* (squared
   great-circle distance on the unit sphere) to every text prompt's embedding; weights scale each
   prompt, a negative weight pushes away from it;
5. back-propagate into ``z`` only (every model weight is frozen) and take an Adam step.

Memory stays bounded however many crops are asked for: the image is decoded once per step, the crops go
through CLIP in chunks whose gradients accumulate in the image, and only then does one backward pass
run through the decoder (``image.backward(leaf.grad)``).

Two settings switch a trick off, to see what it is for: ``distance="cosine"`` (``1 - cosine`` instead of
step 4's spherical distance) and ``straight_through=False`` (decode ``z`` itself, never snapped).

Elsewhere, so that this file stays the loop: prompts, cutouts, ``ink_penalty``, ``cosine_distance`` and
the size and init-code checks in ``lessonlib.generate_parts``; the critics (a CLIP, ``CLIPEnsemble``, ``ImageGuide``) in
``lessonlib.critics``; the optional speed paths (bfloat16, the fast ViT, decoder checkpointing) in
``lessonlib.speed``.

Example:
    >>> parse_prompts("a red circle|a blue square:0.5|text:-1")
    [Prompt(text='a red circle', weight=1.0), Prompt(text='a blue square', weight=0.5), Prompt(text='text', weight=-1.0)]
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lessonlib import speed
from lessonlib.critics import as_critic
from lessonlib.embed import clip_input_spec, pixels_to_clip_input
from lessonlib.generate_parts import (  # noqa: F401 - the loop's parts, importable from here too
    Cutouts,
    Prompt,
    check_init_codes,
    check_size,
    cosine_distance,
    ink_penalty,
    parse_prompts,
)

# ------------------------------------------------------------------------------- the loop's maths


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between directions: ``2 * arcsin(|x̂ - ŷ| / 2) ** 2``.

    Introduced in lesson 04_vqgan_clip. Broadcasts like ``x - y``; 0 for the same direction,
    pi^2 / 2 for opposite ones. Unlike 1 - cosine it keeps a useful gradient near the optimum.

    Example:
        >>> round(float(spherical_distance(torch.tensor([1.0, 0]), torch.tensor([0.0, 1]))), 4)
        1.2337
    """
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).clamp(max=1).arcsin().pow(2).mul(2)


class _ClampWithGrad(torch.autograd.Function):
    """Clamp in the forward pass; in the backward pass let through gradients that point inwards."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def clamp_with_grad(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``x.clamp(lo, hi)`` whose gradient does not die at the bounds (it may pull values back in).

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> clamp_with_grad(torch.tensor([-0.5, 0.5, 1.5]), 0.0, 1.0).tolist()
        [0.0, 0.5, 1.0]
    """
    return _ClampWithGrad.apply(x, lo, hi)


def quantize_straight_through(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Snap each latent vector of ``z`` (B, D, h, w) to its nearest code; gradient passes as identity.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> book = torch.eye(2)
        >>> z = torch.tensor([[[[0.9]], [[0.2]]]], requires_grad=True)
        >>> quantize_straight_through(z, book).flatten().tolist()
        [1.0, 0.0]
    """
    flat = z.movedim(1, -1).reshape(-1, z.shape[1])
    with torch.no_grad():
        d = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.T
        idx = d.argmin(1)
    z_q = codebook[idx].view(z.shape[0], z.shape[2], z.shape[3], z.shape[1]).movedim(-1, 1)
    return z + (z_q - z).detach()


# -------------------------------------------------------------------------------------- settings


@dataclass
class GenerateConfig:
    """Every setting of one VQGAN+CLIP run (the defaults suit the pretrained models at 256x256).

    Introduced in lesson 04_vqgan_clip.

    Fields:
        size: image side, or (width, height); rounded to a multiple of the VQGAN factor (warning).
        steps, lr: Adam steps on the latents and their learning rate.
        cutn, cut_scale, chunk: crops per step, their size range (fraction of the image side), and how
            many go through CLIP at once (peak memory grows with ``chunk``, not ``cutn``).
        cutouts: a ``Cutouts`` with other augmentation settings (its ``cut_size`` must be CLIP's).
        image_loss: an extra loss on the whole image (1, 3, H, W) in [0, 1], added to CLIP's, e.g.
            ``ink_penalty(1.0)``, a prior for "one object on a black background".
        distance: the loss between crop and prompt embeddings: ``"spherical"`` (step 4) or
            ``"cosine"`` (``1 - cosine``, lesson 04's exercise 3).
        straight_through: ``True`` snaps ``z`` to the codebook with a straight-through gradient
            (step 1); ``False`` decodes ``z`` as it is, never snapped (lesson 04's exercise 4).
        seed: fixes the initial codes, the crops and the noise (same seed, same picture on one machine).
        init_image: start from this picture (path / PIL / array) instead of random codes;
            ``init_weight`` > 0 also keeps the latents close to it.
        init_codes: start from these VQGAN codes instead, a (1, height / factor, width / factor)
            integer grid (e.g. a sample of ``lessonlib.prior.CodePrior``); not with ``init_image``.
        frame_every: keep a frame every this many steps (``GenerationResult.frames``) and call the
            callback then.
        precision: ``"auto"`` runs the decoder and the critic's image tower in bfloat16 where that was
            measured faster (``lessonlib.speed``), else float32; ``"float32"`` or ``"bfloat16"`` force
            one for both.
        checkpoint_levels: recompute the decoder's ``checkpoint_levels`` highest-resolution levels in
            the backward pass instead of storing them; ``None``: every level whose side is 64 pixels
            or more (``speed.auto_checkpoint_levels``); 0 stores everything.
        progress: show a tqdm progress bar.
        device: where the latents live (default: the VQGAN's device).

    Example:
        >>> GenerateConfig(steps=50).replace(cutn=8).cutn
        8
    """

    size: int | tuple[int, int] = 256
    steps: int = 100
    lr: float = 0.1
    cutn: int = 32
    cut_scale: tuple[float, float] = (0.85, 1.0)
    chunk: int = 8
    cutouts: Cutouts | None = None
    image_loss: Callable[[torch.Tensor], torch.Tensor] | None = None
    distance: str = "spherical"
    straight_through: bool = True
    seed: int = 0
    init_image: object = None
    init_weight: float = 0.0
    init_codes: torch.Tensor | None = None
    frame_every: int = 10
    precision: str = "auto"
    checkpoint_levels: int | None = None
    progress: bool = True
    device: str | torch.device | None = None

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("cutn", 1), ("chunk", 1), ("frame_every", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        lo, hi = self.cut_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(
                f"cut_scale {self.cut_scale!r} must satisfy 0 < low <= high <= 1, e.g. (0.85, 1.0)"
            )
        if not (isinstance(self.init_weight, (int, float)) and self.init_weight >= 0):
            raise ValueError(f"init_weight must be a number >= 0, got {self.init_weight!r}")
        if self.distance not in ("spherical", "cosine"):
            raise ValueError(f"distance {self.distance!r}: choose 'spherical' or 'cosine'")
        if not isinstance(self.straight_through, bool):
            raise ValueError(
                f"straight_through must be True or False, got {self.straight_through!r}"
            )
        speed.check_precision(self.precision)
        levels = self.checkpoint_levels
        if levels is not None and (not isinstance(levels, int) or isinstance(levels, bool)):
            raise ValueError(f"checkpoint_levels must be None or an integer, got {levels!r}")
        if self.cutouts is not None and not isinstance(self.cutouts, Cutouts):
            raise TypeError(
                f"cutouts must be a lessonlib.generate.Cutouts, got {type(self.cutouts).__name__}"
            )

    def replace(self, **changes) -> GenerateConfig:
        """A copy with some settings changed; an unknown name is refused with the closest one.

        Example:
            >>> GenerateConfig().replace(steps=5).steps
            5
        """
        names = [f.name for f in dataclasses.fields(self)]
        for name in changes:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise TypeError(
                    f"unknown generate setting {name!r}: {hint}the settings are {', '.join(names)}"
                )
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------- result


@dataclass
class GenerationResult:
    """What ``generate`` made: the final image, the frames along the way and the loss curve.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> GenerationResult(image=Image.new("RGB", (8, 8))).losses
        []
    """

    image: Image.Image
    frames: list[Image.Image] = field(default_factory=list)
    frame_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0
    seed: int = 0
    prompts: list[Prompt] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)

    def save_animation(self, path: str | Path, fps: int = 8, scale: int = 1) -> Path:
        """Save the frames as a GIF (or MP4 if imageio-ffmpeg is installed), enlarged ``scale`` x.

        Example:
            >>> result.save_animation("run.gif")  # doctest: +SKIP
        """
        import imageio.v2 as imageio

        path = Path(path)
        frames = self.frames or [self.image]
        if scale != 1:
            frames = [f.resize((f.width * scale, f.height * scale), Image.NEAREST) for f in frames]
        arrays = [np.asarray(f) for f in frames]
        suffix = path.suffix.lower()
        if suffix == ".gif":
            imageio.mimsave(path, arrays, duration=1.0 / fps, loop=0)
        elif suffix == ".mp4":
            try:
                import imageio_ffmpeg  # noqa: F401
            except ImportError:
                raise ValueError(
                    f"cannot write '{path}': MP4 needs `pip install imageio-ffmpeg`; save as .gif instead"
                ) from None
            imageio.mimsave(path, arrays, fps=fps)
        else:
            raise ValueError(
                f"unknown animation format {path.suffix!r} in '{path}': use .gif or .mp4"
            )
        return path


# -------------------------------------------------------------------------------------- the loop


def encode_prompts(critic, tokenizer, prompts: list[Prompt]) -> torch.Tensor:
    """Unit-length text embeddings (one row per prompt), on the critic's device, without gradients.

    Introduced in lesson 04_vqgan_clip. Goes through ``critic.embed_texts`` (``lessonlib.embed``).

    Example:
        >>> from lessonlib.models import load_tiny_clip
        >>> model, preprocess, tokenizer = load_tiny_clip()
        >>> encode_prompts(as_critic(model), tokenizer, parse_prompts("a red circle")).shape
        torch.Size([1, 64])
    """
    return critic.embed_texts(tokenizer, [p.text for p in prompts])


def generate(
    prompts: str | Sequence[str],
    vqgan,
    clip_model,
    tokenizer,
    preprocess=None,
    config: GenerateConfig | None = None,
    callback: Callable[[int, Image.Image, float], None] | None = None,
    **overrides,
) -> GenerationResult:
    """Generate an image for ``prompts`` by optimising the VQGAN latents with CLIP as the critic.

    Introduced in lesson 04_vqgan_clip.

    Args:
        prompts: ``"text|text:weight|text:-weight"`` or a list of such texts (see ``parse_prompts``).
        vqgan: a ``lessonlib.vqgan.VQGAN``.
        clip_model: the critic: an open_clip CLIP, or a ``lessonlib.critics`` critic
            (``CLIPEnsemble``, ``ImageGuide``); a plain CLIP is wrapped once by ``as_critic``.
        tokenizer, preprocess: the CLIP's tokenizer and (optionally) its preprocess, from which the
            input size and normalisation are read.
        config: the settings (``GenerateConfig``); ``**overrides`` change some of them
            (``steps=50``); an unknown name raises ``TypeError``.
        callback: ``callback(step, frame, loss)`` every ``frame_every`` steps (e.g. a live preview).

    Example:
        >>> from lessonlib.vqgan import load_vqgan
        >>> from lessonlib.models import load_tiny_clip
        >>> clip_model, preprocess, tokenizer = load_tiny_clip()
        >>> result = generate("a large red circle", load_vqgan(), clip_model, tokenizer, preprocess,
        ...                   size=32, steps=5, cutn=8, progress=False)
        >>> result.image.size
        (32, 32)
    """
    from tqdm.auto import tqdm

    cfg = (config or GenerateConfig()).replace(**overrides)
    parsed = parse_prompts(prompts)
    critic = as_critic(clip_model)
    wh = check_size(cfg.size, vqgan.factor)
    device = torch.device(cfg.device) if cfg.device is not None else next(vqgan.parameters()).device
    cut_size, mean, std = clip_input_spec(critic, preprocess)
    cutouts = cfg.cutouts or Cutouts(cut_size, scale=tuple(cfg.cut_scale))
    if cutouts.cut_size != cut_size:
        raise ValueError(
            f"cutouts.cut_size={cutouts.cut_size} but this CLIP takes {cut_size}x{cut_size} images: "
            f"use Cutouts({cut_size}, ...)"
        )
    # Speed paths (lessonlib.speed): same maths, less time or memory.
    dec_dtype = speed.decoder_dtype(vqgan, device, cfg.precision)
    clip_dtype = speed.critic_dtype(critic, cfg.precision)
    levels = cfg.checkpoint_levels
    if levels is None:
        levels = speed.auto_checkpoint_levels(vqgan, wh)
    init_codes = _check_start(cfg, vqgan, wh)
    speed.release_freed_memory()
    generator = torch.Generator().manual_seed(cfg.seed)
    weights = torch.tensor([p.weight for p in parsed], device=device)
    distance = spherical_distance if cfg.distance == "spherical" else cosine_distance

    start = time.perf_counter()
    with _frozen(vqgan, critic):
        text = encode_prompts(critic, tokenizer, parsed).to(device)
        z = _init_latents(vqgan, cfg.init_image, wh, generator, device, init_codes)
        z.requires_grad_(True)
        z_init = z.detach().clone()
        book = vqgan.codebook.detach()
        z_min = book.min(0).values.view(1, -1, 1, 1)
        z_max = book.max(0).values.view(1, -1, 1, 1)
        opt = torch.optim.Adam([z], lr=cfg.lr)
        result = GenerationResult(image=None, seed=cfg.seed, prompts=parsed, size=wh)  # type: ignore[arg-type]
        bar = tqdm(range(cfg.steps), desc="VQGAN+CLIP", disable=not cfg.progress, mininterval=1)
        for step in bar:
            t_step = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            # 1. snap z to the codebook, gradient straight through (or, to see why, do not snap)
            z_q = quantize_straight_through(z, book) if cfg.straight_through else z
            # 2. decode to an image in [0, 1]
            with speed.autocast(device, dec_dtype):
                decoded = speed.decode_lean(vqgan, z_q, checkpoint_levels=levels)
            image = clamp_with_grad(decoded.float().add(1).div(2), 0.0, 1.0)
            # 3 + 4. cutouts -> critic -> spherical distance to the prompts, chunk by chunk; the
            # gradients accumulate in a detached copy of the image (``leaf``)
            leaf = image.detach().requires_grad_(True)
            loss_value = 0.0
            for first in range(0, cfg.cutn, cfg.chunk):
                n = min(cfg.chunk, cfg.cutn - first)
                crops = pixels_to_clip_input(cutouts(leaf, n, generator), cut_size, mean, std)
                with speed.autocast(device, clip_dtype):
                    emb = critic.encode_image(crops).float()
                dists = distance(emb[:, None, :], text[None, :, :])  # (n, prompts)
                loss = (dists.mean(0) * weights).sum() * (n / cfg.cutn)
                loss.backward()
                loss_value += loss.item()
            if cfg.image_loss is not None:
                extra = cfg.image_loss(leaf)
                extra.backward()
                loss_value += extra.item()
            if cfg.init_weight:
                anchor = F.mse_loss(z, z_init) * cfg.init_weight
                anchor.backward()
                loss_value += anchor.item()
            # 5. one pass back through the decoder into z, an Adam step, z kept in the codebook's range
            image.backward(leaf.grad)
            opt.step()
            with torch.no_grad():
                z.copy_(torch.maximum(torch.minimum(z, z_max), z_min))
            result.losses.append(loss_value)
            result.step_seconds.append(time.perf_counter() - t_step)
            if step % cfg.frame_every == 0 or step == cfg.steps - 1:
                frame = _to_pil(image)
                result.frames.append(frame)
                result.frame_steps.append(step)
                if callback is not None:
                    callback(step, frame, loss_value)
            bar.set_postfix(loss=f"{loss_value:.3f}")
        with torch.no_grad():
            z_q = quantize_straight_through(z, book) if cfg.straight_through else z
            final = vqgan.decode(z_q).float().add(1).div(2).clamp(0, 1)
        result.image = _to_pil(final)
        if result.frames and result.frame_steps[-1] == cfg.steps - 1:
            result.frames[-1] = result.image
    result.seconds = time.perf_counter() - start
    return result


# ------------------------------------------------------------------------------------ the start


def _check_start(cfg: GenerateConfig, vqgan, wh: tuple[int, int]) -> torch.Tensor | None:
    """Refuse an init image the VQGAN cannot encode, or both kinds of start; check init codes."""
    if cfg.init_image is not None and not vqgan.has_encoder:
        raise ValueError(
            "an init image needs the VQGAN's encoder, and this one was loaded without it "
            "(with_encoder=False or drop_encoder()): load it with with_encoder=True, or leave out "
            "init_image"
        )
    if cfg.init_codes is None:
        return None
    codes = check_init_codes(cfg.init_codes, vqgan, wh)
    if cfg.init_image is not None:
        raise ValueError("give init_image or init_codes, not both")
    return codes


def _init_latents(
    vqgan, init_image, wh: tuple[int, int], generator, device, init_codes=None
) -> torch.Tensor:
    w, h = wh
    f = vqgan.factor
    if init_codes is not None:
        with torch.no_grad():
            return vqgan.codes_to_latents(init_codes.to(device)).clone()
    if init_image is not None:
        from lessonlib.images import load_image

        pil = load_image(init_image).resize((w, h), Image.LANCZOS)
        x = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float().div(127.5).sub(1)
        with torch.no_grad():
            return vqgan.encode(x[None].to(device))
    codes = torch.randint(vqgan.config.n_embed, (1, h // f, w // f), generator=generator)
    with torch.no_grad():
        return vqgan.codes_to_latents(codes.to(device)).clone()


def _to_pil(image: torch.Tensor) -> Image.Image:
    arr = image.detach()[0].float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu()
    return Image.fromarray(arr.numpy())


@contextlib.contextmanager
def _frozen(*models):
    """Turn off requires_grad on every parameter (no weight gradients), restore afterwards."""
    saved = [(p, p.requires_grad) for m in models for p in m.parameters()]
    modes = [(m, m.training) for m in models]
    try:
        for m in models:
            m.eval().requires_grad_(False)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
        for m, training in modes:
            m.train(training)
