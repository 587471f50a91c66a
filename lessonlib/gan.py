"""The "GAN" in VQGAN: taming-transformers' patch discriminator, hinge loss and adaptive weight.

Introduced in lesson 04_vqgan_clip.

taming-transformers trains its VQGANs with two networks that play against each other:

* the **VQGAN** (the generator) reconstructs images: L1 (+ perceptual) loss, codebook loss, and an
  adversarial term that rewards reconstructions the discriminator takes for real;
* the **patch discriminator** (``NLayerDiscriminator``, pix2pix's PatchGAN) is a small conv net that
  outputs a *grid* of real/fake verdicts, one per overlapping image patch, where a classic GAN gives one
  verdict per image. Blur anywhere is caught by the verdicts of the patches around it.

The discriminator learns with the **hinge loss** (``hinge_d_loss``): a verdict (logit) of a real patch
is pushed above +1, of a fake patch below -1, and patches already past their margin add nothing. The
generator's term is ``-mean(verdicts on its reconstructions)``, scaled by an **adaptive weight**: the
ratio of the gradient norms of the reconstruction loss and of the adversarial loss at the decoder's last
layer (so that neither term drowns the other), clamped to [0, 1e4], times ``disc_weight``; it is
switched on only after ``disc_start`` steps (``adopt_weight``).

The discriminator, its weight init, ``hinge_d_loss`` and ``adopt_weight`` are taming's own code,
imported. Importing ``taming.modules.losses.vqperceptual`` imports the *code* of its LPIPS class (and
torchvision's model definitions) but builds nothing and downloads nothing: LPIPS fetches VGG weights
only when it is instantiated, which lessonlib never does. ``adaptive_weight`` is taming's
``VQLPIPSWithDiscriminator.calculate_adaptive_weight`` written out as a function (the method needs a
whole LPIPS loss object around it); ``tests/test_gan.py`` checks it against taming's method.

Example:
    >>> disc = build_discriminator()
    >>> geometry = patch_geometry(disc, image_size=32)
    >>> geometry.grid, geometry.receptive_field
    ((14, 14), 16)
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from taming.modules.discriminator.model import NLayerDiscriminator, weights_init
from taming.modules.losses.vqperceptual import adopt_weight, hinge_d_loss
from torch import nn

from lessonlib.train_tiny_vqgan import make_images, psnr

__all__ = [
    "GANConfig",
    "PatchGeometry",
    "adaptive_weight",
    "adopt_weight",
    "build_discriminator",
    "compare_reconstructions",
    "edge_sharpness",
    "finetune_with_discriminator",
    "hinge_d_loss",
    "laplacian_variance",
    "patch_geometry",
    "sharpness",
    "train_discriminator",
]

# Seeds of the images: fine-tuning data never overlaps the shipped VQGAN's training images (seeds 0, 1),
# its test images (1000, 2000) or the held-out images that compare the models (EVAL_SEED).
FINETUNE_DATA_SEED = 3000
EVAL_SEED = 5000


def build_discriminator(n_layers: int = 1, ndf: int = 64) -> NLayerDiscriminator:
    """taming's ``NLayerDiscriminator`` with taming's ``weights_init``, sized for 32x32 images.

    Introduced in lesson 04_vqgan_clip.

    taming uses ``n_layers=3`` on 256x256 images (a 30x30 grid of verdicts, each seeing 70x70 pixels,
    a quarter of the side). On 32x32 images ``n_layers=3`` leaves a 2x2 grid and ``n_layers=2`` a 6x6
    grid whose verdicts each see 34 pixels, more than the whole image; ``n_layers=1`` gives a 14x14
    grid of verdicts that each see a 16x16 patch (half the side), a real *patch* discriminator.

    Example:
        >>> disc = build_discriminator()
        >>> disc(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 1, 14, 14])
    """
    for name, value in (("n_layers", n_layers), ("ndf", ndf)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return NLayerDiscriminator(input_nc=3, ndf=ndf, n_layers=n_layers).apply(weights_init)


class PatchGeometry(NamedTuple):
    """Where a patch discriminator looks: its grid of verdicts and the pixels each verdict sees."""

    grid: tuple[int, int]  # verdicts per column and per row
    receptive_field: int  # side, in pixels, of the patch one verdict depends on
    stride: int  # pixels between the centres of neighbouring patches


def patch_geometry(disc: nn.Module, image_size: int = 32) -> PatchGeometry:
    """The grid size, receptive field and stride of a conv-only discriminator, from its layers.

    Introduced in lesson 04_vqgan_clip.

    Each convolution of kernel ``k`` and stride ``s`` widens the receptive field by ``(k - 1)`` times
    the product of the strides before it, and maps a side ``n`` to ``(n + 2 p - k) // s + 1``.

    Example:
        >>> patch_geometry(build_discriminator(n_layers=2), 32)
        PatchGeometry(grid=(6, 6), receptive_field=34, stride=4)
    """
    side, field, jump = image_size, 1, 1
    for layer in disc.modules():
        if isinstance(layer, nn.Conv2d):
            (k, _), (s, _), (p, _) = layer.kernel_size, layer.stride, layer.padding
            side = (side + 2 * p - k) // s + 1
            field += (k - 1) * jump
            jump *= s
    if side < 1:
        raise ValueError(
            f"a {image_size}x{image_size} image is too small for this discriminator (its grid would "
            "be empty): use fewer layers (n_layers=1 suits 32x32)"
        )
    return PatchGeometry((side, side), field, jump)


def adaptive_weight(
    rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float = 1.0
) -> torch.Tensor:
    """taming's adaptive weight of the adversarial term: ``|grad rec| / (|grad g| + 1e-4)``.

    Introduced in lesson 04_vqgan_clip.

    Both gradients are taken at ``last_layer`` (the decoder's ``conv_out.weight``); the ratio is
    clamped to [0, 1e4], detached (it is a number, not part of the graph) and multiplied by
    ``disc_weight``: the adversarial term then pushes the last layer as hard as the reconstruction loss
    does, times ``disc_weight``.

    Example:
        >>> w = torch.ones(3, requires_grad=True)
        >>> round(float(adaptive_weight((2 * w).sum(), w.sum(), w, disc_weight=0.5)), 4)  # 0.5 * 2
        0.9999
    """
    rec_grads = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(rec_grads) / (torch.norm(g_grads) + 1e-4)
    weight = torch.clamp(weight, 0.0, 1e4).detach()
    return weight * disc_weight


@dataclass
class GANConfig:
    """Settings of ``finetune_with_discriminator``.

    Introduced in lesson 04_vqgan_clip.

    Fields:
        steps, batch_size: training steps and images per step.
        lr, disc_lr: Adam learning rates of the VQGAN and of the discriminator (betas 0.5, 0.9, as taming).
        disc_weight: multiplies the adaptive weight (taming's ImageNet VQGANs use 0.8); 0 turns the
            adversarial term off, which makes the fair control: the same steps, data and discriminator
            training, but the VQGAN learns from reconstruction and codebook losses only.
        disc_start: the generator's adversarial term is off before this step (taming's ``adopt_weight``).
            Unlike taming, the discriminator trains from step 0: the VQGAN here is already trained, so
            the discriminator gets a head start instead of both starting at once.
        disc_layers, disc_ndf: ``n_layers`` and ``ndf`` of the ``NLayerDiscriminator``.
        n_train: fresh Shapes World images to draw batches from; seed: data, batches and weights init.
        log_every: record the history every this many steps; progress: show a tqdm bar.

    Example:
        >>> GANConfig(steps=100, disc_start=20).disc_weight
        0.8
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-4
    disc_lr: float = 2e-4
    disc_weight: float = 0.8
    disc_start: int = 50
    disc_layers: int = 1
    disc_ndf: int = 64
    n_train: int = 5000
    seed: int = 0
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        counts = {"steps": 1, "batch_size": 1, "disc_start": 0, "disc_layers": 1, "disc_ndf": 1}
        counts |= {"n_train": 1, "seed": 0, "log_every": 1}
        for name, low in counts.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"GANConfig.{name} must be an integer >= {low}, got {value!r}")
        for name in ("lr", "disc_lr"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"GANConfig.{name} must be a positive number, got {value!r}")
        w = self.disc_weight
        if not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise ValueError(
                f"GANConfig.disc_weight must be a number >= 0 (0 turns the adversarial term off, "
                f"taming uses 0.8), got {w!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _reconstruction_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 + L2, as ``train_tiny_vqgan`` trains the shipped tiny VQGAN."""
    return (rec - x).abs().mean() + F.mse_loss(rec, x)


def _start(config, vqgan):
    """The common start of a run: the checked config, a seeded generator, the image side, the data."""
    config = GANConfig() if config is None else config
    if not isinstance(config, GANConfig):
        raise TypeError(f"config must be a GANConfig, got {type(config).__name__}")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    size = vqgan.config.resolution
    images = make_images(config.n_train, seed=FINETUNE_DATA_SEED + config.seed, image_size=size)
    return config, gen, size, images


def finetune_with_discriminator(
    vqgan: nn.Module, config: GANConfig | None = None, discriminator: nn.Module | None = None
) -> tuple[nn.Module, dict]:
    """Fine-tune a copy of ``vqgan`` against a patch discriminator: ``(model, history)``.

    Introduced in lesson 04_vqgan_clip.

    Each step, on a batch of fresh Shapes World images:

    1. **VQGAN step**: reconstruction loss (L1 + L2) + codebook loss (as ``train_tiny_vqgan``) +
       ``adaptive_weight * adopt_weight(...) * g_loss``, where ``g_loss = -mean(D(reconstruction))``.
       The discriminator is frozen during this step.
    2. **Discriminator step**: ``hinge_d_loss(D(real), D(reconstruction.detach()))``.

    ``vqgan`` itself is not changed (the copy is trained and returned frozen, in eval mode).
    ``discriminator`` (default: ``build_discriminator(config.disc_layers, config.disc_ndf)``) is trained
    in place, so the caller can look at its verdicts afterwards. ``history`` holds, every
    ``log_every`` steps: ``step``, ``rec_loss``, ``g_loss``, ``d_loss``, ``adaptive_weight`` (the weight
    actually applied: 0 before ``disc_start``), ``d_acc_real`` / ``d_acc_fake`` (fraction of patch
    verdicts on the right side of 0), and ``seconds`` at the end.

    Example:
        >>> from lessonlib.vqgan import load_vqgan
        >>> model, history = finetune_with_discriminator(load_vqgan(), GANConfig(steps=2, batch_size=4,
        ...     n_train=8, disc_start=0, progress=False))
        >>> history["step"]  # logged every log_every steps, and at the last one
        [0, 1]
    """
    from tqdm.auto import tqdm

    config, gen, size, images = _start(config, vqgan)
    model = copy.deepcopy(vqgan).train().requires_grad_(True)
    model.quantize.legacy = False  # beta on the commitment term, as train_tiny_vqgan trained it
    disc = discriminator
    if disc is None:
        disc = build_discriminator(config.disc_layers, config.disc_ndf)
    patch_geometry(disc, size)  # a clear error now if the grid would be empty
    disc.train()
    opt_g = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.9))
    last_layer = model.decoder.conv_out.weight
    keys = ("step", "rec_loss", "g_loss", "d_loss", "adaptive_weight", "d_acc_real", "d_acc_fake")
    history = {k: [] for k in keys}
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="VQGAN + discriminator", disable=not config.progress)
    for step in bar:
        x = images[torch.randint(len(images), (config.batch_size,), generator=gen)]
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(3)
        # 1. The VQGAN (generator) step; the discriminator only judges.
        z_q, vq_loss, _ = model.quantize(model.encode(x))
        rec = model.decode(z_q)
        rec_loss = _reconstruction_loss(rec, x)
        disc.requires_grad_(False)
        g_loss = -disc(rec).mean()
        on = adopt_weight(1.0, step, threshold=config.disc_start)
        if on and config.disc_weight > 0:
            weight = adaptive_weight(rec_loss, g_loss, last_layer, config.disc_weight)
        else:  # the term is off: its weight is 0 and the gradient norms are not needed
            weight = torch.tensor(0.0)
        loss = rec_loss + weight * g_loss + vq_loss
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        # 2. The discriminator step: real patches above +1, reconstructed ones below -1.
        disc.requires_grad_(True)
        logits_real, logits_fake = disc(x), disc(rec.detach())
        d_loss = hinge_d_loss(logits_real, logits_fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        if step % config.log_every == 0 or step == config.steps - 1:
            values = (
                step,
                rec_loss.item(),
                g_loss.item(),
                d_loss.item(),
                float(weight),
                (logits_real > 0).float().mean().item(),
                (logits_fake < 0).float().mean().item(),
            )
            for k, v in zip(keys, values):
                history[k].append(v)
            bar.set_postfix(rec=f"{values[1]:.4f}", d=f"{values[3]:.3f}", w=f"{values[4]:.3g}")
    history["seconds"] = round(time.perf_counter() - start, 1)
    disc.eval()
    return model.eval().requires_grad_(False), history


def train_discriminator(disc: nn.Module, vqgan: nn.Module, config: GANConfig | None = None) -> dict:
    """Train only the judge, against a frozen VQGAN's reconstructions: its ``history``.

    Introduced in lesson 04_vqgan_clip.

    The discriminator step of ``finetune_with_discriminator`` alone (``config.steps``, ``batch_size``,
    ``disc_lr``, ``n_train``, ``seed``; the other fields are not used); ``vqgan`` is not changed. A
    judge trained this way shows what separates a VQGAN's reconstructions from real images.

    Example:
        >>> from lessonlib.vqgan import load_vqgan
        >>> disc = build_discriminator()
        >>> history = train_discriminator(disc, load_vqgan(), GANConfig(steps=2, batch_size=4,
        ...     n_train=8, progress=False))
        >>> sorted(history)
        ['d_acc_fake', 'd_acc_real', 'd_loss', 'seconds', 'step']
    """
    from tqdm.auto import tqdm

    config, gen, size, images = _start(config, vqgan)
    patch_geometry(disc, size)
    start = time.perf_counter()
    with torch.no_grad():  # the VQGAN is frozen: reconstruct the pool once, not every step
        recs = torch.cat([vqgan.eval()(b)[0] for b in images.split(250)])
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.9))
    history = {k: [] for k in ("step", "d_loss", "d_acc_real", "d_acc_fake")}
    disc.train().requires_grad_(True)
    for step in tqdm(range(config.steps), desc="discriminator", disable=not config.progress):
        pick = torch.randint(len(images), (config.batch_size,), generator=gen)
        logits_real, logits_fake = disc(images[pick]), disc(recs[pick])
        d_loss = hinge_d_loss(logits_real, logits_fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        if step % config.log_every == 0 or step == config.steps - 1:
            history["step"].append(step)
            history["d_loss"].append(d_loss.item())
            history["d_acc_real"].append((logits_real > 0).float().mean().item())
            history["d_acc_fake"].append((logits_fake < 0).float().mean().item())
    history["seconds"] = round(time.perf_counter() - start, 1)
    disc.eval()
    return history


def sharpness(images: torch.Tensor) -> float:
    """Mean gradient magnitude of images in [-1, 1], measured on [0, 1] pixels: higher = sharper edges.

    Introduced in lesson 04_vqgan_clip.

    Finite differences to the right and downwards, per channel; a blurred edge spreads the same step
    over more pixels, and its squared differences sum to less.

    Example:
        >>> edge = -torch.ones(1, 3, 8, 8)
        >>> edge[..., 4:] = 1.0  # black | white
        >>> round(sharpness(edge), 4)  # one step of 1 (in [0, 1]) in 7 columns of differences
        0.1429
    """
    return _gradient_magnitude(images).mean().item()


def _gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    x = images.clamp(-1, 1).add(1).div(2)
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return (dx.pow(2) + dy.pow(2)).sqrt()


def edge_sharpness(reconstructions: torch.Tensor, originals: torch.Tensor) -> float:
    """How steep the originals' edges are in the reconstructions: 1 = as steep, below 1 = blurred.

    Introduced in lesson 04_vqgan_clip.

    The gradient magnitude of the reconstructions, averaged over the pixels where the originals have an
    edge (a gradient above 0.1 on [0, 1] pixels), divided by the originals' own average there. Unlike
    ``sharpness`` it ignores faint noise in the flat background.

    Example:
        >>> edge = -torch.ones(1, 3, 8, 8)
        >>> edge[..., 4:] = 1.0
        >>> edge_sharpness(edge, edge)
        1.0
    """
    g_rec, g_orig = _gradient_magnitude(reconstructions), _gradient_magnitude(originals)
    edges = g_orig > 0.1
    if not edges.any():
        raise ValueError("the originals have no edges (flat images): give images with objects")
    return (g_rec[edges].sum() / g_orig[edges].sum()).item()


def laplacian_variance(images: torch.Tensor) -> float:
    """Variance of the 4-neighbour Laplacian of images in [-1, 1] (on [0, 1] pixels): the usual blur
    detector; a blurred image has a smaller one.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> laplacian_variance(torch.zeros(1, 3, 8, 8))
        0.0
    """
    x = images.clamp(-1, 1).add(1).div(2)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    lap = F.conv2d(x.reshape(-1, 1, *x.shape[-2:]), kernel.view(1, 1, 3, 3))
    return lap.var().item()


@torch.no_grad()
def compare_reconstructions(models: dict, n: int = 200, seed: int = EVAL_SEED) -> dict:
    """PSNR, sharpness and the judge's verdicts of several VQGANs on the same held-out images.

    Introduced in lesson 04_vqgan_clip.

    ``n`` one-object Shapes World images (seed ``seed``, never used for training) are reconstructed by
    every model; the row ``"originals"`` gives the images' own sharpness and the judge's score on them
    (its ceiling). ``sharpness_ratio`` is the reconstructions' ``sharpness`` over the originals' (faint
    background noise raises it too), ``edge_sharpness`` how steep the originals' edges stay (1 = as
    steep), ``laplacian_ratio`` the ratio of ``laplacian_variance`` (1 = as much fine detail), and
    ``judged_right`` the fraction the judge finds right for their caption (colour, shape and size).

    Example:
        >>> from lessonlib.vqgan import load_vqgan
        >>> rows = compare_reconstructions({"shipped": load_vqgan()}, n=10)
        >>> rows["shipped"]["psnr_db"] > 24, rows["originals"]["edge_sharpness"]
        (True, 1.0)
    """
    from lessonlib.data import ShapesWorld
    from lessonlib.judge import judge

    if not models:
        raise ValueError("models is empty: give a dict like {'shipped': load_vqgan()}")
    size = next(iter(models.values())).config.resolution
    ds = ShapesWorld(n, split="all", seed=seed, image_size=size, max_objects=1)
    x = torch.stack([ds.tensor(i) for i in range(n)]) * 2 - 1
    captions = [f"a {o.size} {o.colour} {o.shape}" for o in (ds.objects(i)[0] for i in range(n))]
    sharp0, lap0 = sharpness(x), laplacian_variance(x)

    def row(images: torch.Tensor) -> dict:
        pictures = images.clamp(-1, 1).add(1).div(2)
        right = sum(judge(p, c).ok for p, c in zip(pictures, captions))
        return {
            "psnr_db": round(psnr(images, x), 2),
            "sharpness": round(sharpness(images), 4),
            "sharpness_ratio": round(sharpness(images) / sharp0, 3),
            "edge_sharpness": round(edge_sharpness(images, x), 3),
            "laplacian_variance": round(laplacian_variance(images), 5),
            "laplacian_ratio": round(laplacian_variance(images) / lap0, 3),
            "judged_right": round(right / n, 3),
        }

    rows = {"originals": {**row(x), "psnr_db": None}}  # no error: PSNR is infinite
    for name, model in models.items():
        rows[name] = row(model.eval()(x)[0])
    return rows
