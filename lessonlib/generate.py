"""VQGAN+CLIP: draw a picture by optimising a VQGAN's latent grid until CLIP likes it.

Introduced in lesson 04_vqgan_clip.

One step of the loop (after Katherine Crowson's VQGAN+CLIP notebook, 2021):

1. snap the latent grid ``z`` to its nearest codebook vectors, with a *straight-through* gradient
   (the forward pass uses the code, the backward pass pretends the snap was the identity);
2. decode the codes to an image;
3. cut ``cutn`` random crops out of it (random scale, position, small rotation, flips, noise), resized
   to CLIP's input size: CLIP must like the picture from many viewpoints, not one adversarial pattern;
4. embed the crops with CLIP's image tower and measure the *spherical distance* (squared great-circle
   distance on the unit sphere) to every text prompt's embedding; weights scale each prompt, a
   negative weight pushes away from it;
5. back-propagate into ``z`` only (every model weight is frozen) and take an Adam step.

Memory stays bounded however many crops are asked for: the image is decoded once per step, the crops go
through CLIP in chunks whose gradients accumulate in the image, and only then does one backward pass
run through the decoder (``img.backward(img_grad)``).

Example:
    >>> parse_prompts("a red circle|a blue square:0.5|text:-1")
    [Prompt(text='a red circle', weight=1.0), Prompt(text='a blue square', weight=0.5), Prompt(text='text', weight=-1.0)]
"""

from __future__ import annotations

import contextlib
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_NUMBERISH = re.compile(r"^[-+0-9.eE]*$")


# ------------------------------------------------------------------------------------------ prompts


@dataclass(frozen=True)
class Prompt:
    """One text prompt and its weight (negative: steer away from it)."""

    text: str
    weight: float = 1.0


def parse_prompts(spec: str | Sequence[str]) -> list[Prompt]:
    """Parse prompts in the usual VQGAN+CLIP syntax ``"text|text:weight|text:-weight"``.

    Introduced in lesson 04_vqgan_clip.

    A ``:`` followed by one word is a weight and must be a number; a ``:`` followed by several words
    stays part of the text ("a photo: at night"). At least one weight must be positive.

    Example:
        >>> parse_prompts("a large red circle|a square:-0.5")
        [Prompt(text='a large red circle', weight=1.0), Prompt(text='a square', weight=-0.5)]
    """
    if isinstance(spec, str):
        parts = spec.split("|")
    elif isinstance(spec, Sequence) and all(isinstance(p, str) for p in spec):
        parts = list(spec)
    else:
        raise TypeError(
            f"prompts must be a string like 'a red circle|a blue square:0.5' or a list of strings, "
            f"got {type(spec).__name__}"
        )
    if not parts or not any(p.strip() for p in parts):
        raise ValueError(
            f"prompt {spec!r} is empty: give at least one text, e.g. 'a large red circle'"
        )
    prompts = []
    for part in parts:
        text, weight = part.strip(), 1.0
        if not text:
            raise ValueError(
                f"empty prompt between '|' in {spec!r}: write 'a|b:0.5', with text on both sides"
            )
        head, colon, tail = text.rpartition(":")
        tail_s = tail.strip()
        if colon and (" " not in tail_s or _NUMBERISH.match(tail_s)):
            try:
                weight = float(tail_s)
            except ValueError:
                raise ValueError(
                    f"malformed weight {tail_s!r} in prompt {part.strip()!r}: write 'text:weight' "
                    "with a number, e.g. 'a red circle:0.5' or 'a blue square:-1'"
                ) from None
            text = head.strip()
            if not text:
                raise ValueError(
                    f"prompt {part.strip()!r} has a weight but no text: write 'text:{tail_s}'"
                )
        if not math.isfinite(weight) or weight == 0:
            raise ValueError(
                f"weight {weight!r} in prompt {part.strip()!r} must be a non-zero finite number "
                "(positive: draw this; negative: avoid this)"
            )
        prompts.append(Prompt(text, weight))
    if not any(p.weight > 0 for p in prompts):
        raise ValueError(
            f"every weight in {spec!r} is negative: give at least one prompt with a positive weight "
            "(what to draw), e.g. 'a red circle|a square:-1'"
        )
    return prompts


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


# -------------------------------------------------------------------------------------- autograd


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
    """``x.clamp(lo, hi)`` whose gradient does not die at the bounds (it may pull values back in)."""
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


# --------------------------------------------------------------------------------------- cutouts


@dataclass
class Cutouts:
    """Random crops of an image, resized to CLIP's input size, with light augmentations.

    Introduced in lesson 04_vqgan_clip.

    All crops of a call come from one ``grid_sample`` (an affine grid per crop: scale, offset,
    rotation, horizontal flip), so making 32 of them costs about as much as one resize.

    Example:
        >>> cut = Cutouts(cut_size=16)
        >>> cut(torch.rand(1, 3, 32, 32), 4, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3, 16, 16])
    """

    cut_size: int
    scale: tuple[float, float] = (0.85, 1.0)  # crop side / image side
    rotate_degrees: float = 10.0
    flip: bool = True
    noise: float = 0.1  # per-crop noise level drawn from [0, noise]
    jitter: float = 0.05  # brightness/saturation jitter amplitude

    def __call__(self, image: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = image.shape
        if b != 1:
            raise ValueError(f"cutouts take one image (batch 1), got a batch of {b}")

        def rand(*shape):
            return torch.rand(*shape, generator=generator)

        lo, hi = self.scale
        s = lo + (hi - lo) * rand(n)
        # Offsets keep most of the crop inside the image: at scale s the centre can move by 1 - s.
        tx, ty = (rand(n) * 2 - 1) * (1 - s), (rand(n) * 2 - 1) * (1 - s)
        angle = (rand(n) * 2 - 1) * math.radians(self.rotate_degrees)
        flip = torch.where(rand(n) < 0.5, -1.0, 1.0) if self.flip else torch.ones(n)
        cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
        ).to(image)
        grid = F.affine_grid(theta, [n, c, self.cut_size, self.cut_size], align_corners=False)
        # Downscaling by more than 2x would alias: pre-blur with an area resize first.
        src = image
        if min(h, w) * lo > 2 * self.cut_size:
            side = 2 * self.cut_size
            src = F.interpolate(image, size=(side, side), mode="area")
        cuts = F.grid_sample(
            src.expand(n, -1, -1, -1),
            grid,
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
        if self.jitter:
            bright = 1 + (rand(n, 1, 1, 1).to(image) * 2 - 1) * self.jitter
            grey = cuts.mean(1, keepdim=True)
            sat = 1 + (rand(n, 1, 1, 1).to(image) * 2 - 1) * self.jitter
            cuts = (grey + (cuts - grey) * sat) * bright
        if self.noise:
            level = rand(n, 1, 1, 1).to(image) * self.noise
            cuts = cuts + level * torch.randn(cuts.shape, generator=generator).to(image)
        return cuts


# ------------------------------------------------------------------------------------ generation


@dataclass
class GenerationResult:
    """The final image, the frames along the way and the loss curve."""

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


def ink_penalty(weight: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ``image_loss`` for ``generate``: ``weight`` x the mean brightness of the image.

    Introduced in lesson 04_vqgan_clip. A prior for pictures of one object on black (Shapes World):
    every bright pixel costs a little, so CLIP's pull has to pay for each blob it paints.

    Example:
        >>> float(ink_penalty(2.0)(torch.ones(1, 3, 4, 4)))
        2.0
    """
    if not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(f"ink weight must be a non-negative number, got {weight!r}")

    def loss(image: torch.Tensor) -> torch.Tensor:
        return image.amax(1).mean() * weight

    return loss


def check_size(size: int | Sequence[int], factor: int) -> tuple[int, int]:
    """(width, height) rounded to multiples of the VQGAN's downsampling factor, with a warning.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> check_size(64, 16)
        (64, 64)
    """
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    ):
        raise ValueError(f"size {size!r} must be an int or (width, height) of ints, e.g. 256")
    if min(size) < 1:
        raise ValueError(f"size {tuple(size)!r} must be positive, e.g. {16 * factor}")
    rounded = tuple(max(factor, int(round(s / factor)) * factor) for s in size)
    if rounded != tuple(size):
        warnings.warn(
            f"image size {tuple(size)} is not a multiple of the VQGAN's downsampling factor {factor}: "
            f"using {rounded} (each code is {factor}x{factor} pixels)",
            UserWarning,
            stacklevel=3,
        )
    return rounded  # type: ignore[return-value]


def clip_input_spec(clip_model, preprocess=None) -> tuple[int, tuple, tuple]:
    """(input side, mean, std) of a CLIP model, read from its preprocess transform when given."""
    size = getattr(getattr(clip_model, "visual", None), "image_size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean, std = OPENAI_MEAN, OPENAI_STD
    cfg = getattr(getattr(clip_model, "visual", None), "preprocess_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
    for t in getattr(preprocess, "transforms", []):
        if type(t).__name__ == "Normalize":
            mean, std = tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    return size, mean, std


def _decoder_dtype(vqgan, device: torch.device, precision: str) -> torch.dtype:
    if precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"unknown precision {precision!r}: choose 'auto', 'float32' or 'bfloat16'")
    if precision != "auto":
        return getattr(torch, precision)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and vqgan.config.ch >= 64:
        # Measured on a 2-core AVX512-BF16 CPU: the f16 decoder's forward+backward is ~3x faster.
        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return torch.bfloat16
        except (AttributeError, RuntimeError):  # pragma: no cover - older torch
            pass
    return torch.float32


def auto_checkpoint_levels(vqgan, wh: tuple[int, int], min_side: int = 64) -> int:
    """How many of the decoder's levels (highest resolution first) have a side of ``min_side`` or more.

    Example:
        >>> from lessonlib.vqgan import VQGAN, VQGANConfig
        >>> auto_checkpoint_levels(VQGAN(VQGANConfig.imagenet_f16_16384(), with_encoder=False), (256, 256))
        3
    """
    levels = len(vqgan.config.ch_mult)
    side = min(wh)
    return sum(1 for i in range(levels) if side // 2**i >= min_side)


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


def _check_init_codes(codes, vqgan, wh: tuple[int, int]) -> torch.Tensor:
    w, h = wh
    f = vqgan.factor
    want = (1, h // f, w // f)
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex():
        raise ValueError(
            f"init_codes must be an integer tensor of shape {want}, got {type(codes).__name__}"
            + (f" of dtype {codes.dtype}" if isinstance(codes, torch.Tensor) else "")
        )
    if codes.dim() == 2:
        codes = codes[None]
    if tuple(codes.shape) != want:
        raise ValueError(
            f"init_codes has shape {tuple(codes.shape)}, but a {w}x{h} image with this factor-{f} "
            f"VQGAN needs {want}"
        )
    n = vqgan.config.n_embed
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= n):
        raise ValueError(
            f"init_codes must lie in [0, {n - 1}] (this VQGAN has {n} codes), got values from "
            f"{int(codes.min())} to {int(codes.max())}"
        )
    return codes.long()


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


# ------------------------------------------------------------------------- CLIP's image tower, fast


def fast_vit_supported(visual) -> bool:
    """True if ``encode_image_fast`` can run this image tower (open_clip's standard ViT)."""
    try:
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return False
    if type(visual) is not VisionTransformer or getattr(visual, "output_tokens", False):
        return False
    transformer = visual.transformer
    if not getattr(transformer, "batch_first", False) or transformer.grad_checkpointing:
        return False
    for block in transformer.resblocks:
        attn = getattr(block, "attn", None)
        if (
            type(block) is not ResidualAttentionBlock
            or hasattr(block, "ln_1_kv")
            or not isinstance(attn, torch.nn.MultiheadAttention)
            or not attn._qkv_same_embed_dim
            or not attn.batch_first
            or attn.in_proj_bias is None
            or attn.bias_k is not None
            or (attn.dropout and block.training)
        ):
            return False
    return True


def _fast_block(block, x: torch.Tensor) -> torch.Tensor:
    """open_clip's ``ResidualAttentionBlock.forward`` (no mask), with the attention written out."""
    attn = block.attn
    y = block.ln_1(x)
    n, length, width = y.shape
    heads = attn.num_heads
    # One (N*L, D) x (D, 3D) matrix product for q, k and v. nn.MultiheadAttention transposes to
    # (L, N, D) first, and a linear layer on that strided view runs as a batched product over L with
    # the weight expanded L times; in bfloat16 that expansion is copied, 2.5x slower than this.
    qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    # 50 tokens: plain attention; its backward is faster on CPU than the fused kernel's.
    weights = ((q * (width // heads) ** -0.5) @ k.transpose(-1, -2)).softmax(-1)
    o = (weights @ v).transpose(1, 2).reshape(n, length, width)
    x = x + block.ls_1(F.linear(o, attn.out_proj.weight, attn.out_proj.bias))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _fast_embeds(visual, x: torch.Tensor) -> torch.Tensor:
    """``VisionTransformer._embeds`` with the patch embedding as one matrix product.

    The patchify convolution (kernel = stride = patch size) is a reshape and a product with the
    kernel; its backward pass (a strided transposed convolution on CPU) was 13% of ViT-B-32's time.
    Falls back to ``visual._embeds`` for anything else.
    """
    conv = visual.conv1
    n, c, height, width = x.shape
    p = conv.kernel_size[0]
    plain = (
        conv.kernel_size == (p, p)
        and conv.stride == (p, p)
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and height % p == 0
        and width % p == 0
        and visual.positional_embedding.shape[0] == 1 + (height // p) * (width // p)
        and (not visual.training or isinstance(visual.patch_dropout, torch.nn.Identity))
    )
    if not plain:
        return visual._embeds(x)
    patches = x.reshape(n, c, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, (height // p) * (width // p), c * p * p)
    tokens = F.linear(patches, conv.weight.reshape(conv.out_channels, -1), conv.bias)
    cls = visual.class_embedding.view(1, 1, -1).expand(n, -1, -1).to(tokens.dtype)
    tokens = torch.cat([cls, tokens], dim=1) + visual.positional_embedding.to(tokens.dtype)
    return visual.ln_pre(visual.patch_dropout(tokens))


def encode_image_fast(visual, images: torch.Tensor) -> torch.Tensor:
    """``visual(images)`` for open_clip's ViT image towers, faster for the backward pass.

    Introduced in lesson 04_vqgan_clip.

    Same modules, same weights, same maths (equal to ``visual(images)`` to float rounding; tested),
    with the attention's projections as plain matrix products (see ``_fast_block``). On a 2-core CPU,
    ViT-B-32 forward + backward on 8 cutouts took 0.97 s instead of 1.17 s in float32, and 0.43 s in
    bfloat16 (BENCHMARKS.md). Towers it does not cover (``fast_vit_supported`` is False) run as usual.

    Example:
        >>> import open_clip
        >>> visual = open_clip.create_model("ViT-B-32").visual.eval()  # doctest: +SKIP
        >>> encode_image_fast(visual, torch.rand(2, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([2, 512])
    """
    if not fast_vit_supported(visual):
        return visual(images)
    h = _fast_embeds(visual, images)
    for block in visual.transformer.resblocks:
        h = _fast_block(block, h)
    pooled, _ = visual._pool(h)
    return pooled @ visual.proj if visual.proj is not None else pooled


class CLIPEnsemble(torch.nn.Module):
    """Several CLIPs as one critic: each embeds, and the unit embeddings are joined end to end.

    Introduced in lesson 04_vqgan_clip.

    The joined vector has unit length (each member's part is scaled by ``sqrt(weight / total)``), so
    the squared distance between two joined embeddings is the weighted mean of the members' squared
    distances: ``generate``'s spherical-distance loss then asks *every* member to agree. A picture
    that fools one small CLIP (a blob of the right colour) rarely fools several trained
    differently, e.g. with other seeds or adversarially (``lessonlib.models.load_tiny_guides``).
    All members must take the same input size and normalisation and share one tokenizer.

    Example:
        >>> from lessonlib.models import load_tiny_clip
        >>> a, preprocess, tokenizer = load_tiny_clip()
        >>> pair = CLIPEnsemble([a, load_tiny_clip()[0]])
        >>> float(pair.encode_image(torch.rand(1, 3, 32, 32)).norm())  # doctest: +ELLIPSIS
        1.0...
    """

    def __init__(self, models: Sequence, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("CLIPEnsemble needs at least one CLIP model, got none")
        for m in models:
            if not (hasattr(m, "encode_image") and hasattr(m, "encode_text")):
                raise TypeError(
                    f"CLIPEnsemble members need encode_image and encode_text, got {type(m).__name__}"
                )
        specs = {clip_input_spec(m) for m in models}
        if len(specs) > 1:
            raise ValueError(
                f"CLIPEnsemble members take different inputs {sorted(specs)}: use models with the same "
                "input size and normalisation"
            )
        weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
        if len(weights) != len(models) or any(not w > 0 for w in weights):
            raise ValueError(
                f"weights {weights!r}: give one positive number per model ({len(models)} models)"
            )
        self.members = torch.nn.ModuleList(models)
        total = sum(weights)
        self.register_buffer(
            "scales", torch.tensor([math.sqrt(w / total) for w in weights]), persistent=False
        )

    @property
    def visual(self):
        """The first member's image tower (for the input size and normalisation)."""
        return self.members[0].visual

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(
            [F.normalize(p.float(), dim=-1) * s for p, s in zip(parts, self.scales)], dim=-1
        )

    def encode_image(self, image: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._join([_encode_member(m, image) for m in self.members])

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._join([m.encode_text(tokens) for m in self.members])


def _encode_member(model, image: torch.Tensor) -> torch.Tensor:
    """``model.encode_image``, through ``encode_image_fast`` for a plain open_clip ViT CLIP
    (``ImageGuide`` and ``CLIPEnsemble`` already take that path themselves)."""
    visual = getattr(model, "visual", None)
    if isinstance(model, (ImageGuide, CLIPEnsemble)) or visual is None:
        return model.encode_image(image)
    if fast_vit_supported(visual):
        return encode_image_fast(visual, image)
    return model.encode_image(image)


def _bf16_cpu_ok() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        return False


def _clip_dtype(clip_model, device: torch.device, precision: str) -> torch.dtype:
    """CLIP's compute precision: bfloat16 for ViTs where measured faster (CPU with native bf16, GPU)."""
    if precision != "auto":
        return getattr(torch, precision)
    visual = getattr(clip_model, "visual", None)
    if isinstance(clip_model, ImageGuide) and clip_model.dtype != torch.float32:
        return clip_model.dtype
    if isinstance(clip_model, CLIPEnsemble):
        visuals = [getattr(m, "visual", None) for m in clip_model.members]
        visual = visual if all(v is not None and fast_vit_supported(v) for v in visuals) else None
    if visual is None or not fast_vit_supported(visual):
        return torch.float32  # e.g. the tiny ResNet CLIP: float32 is as fast and exact
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and _bf16_cpu_ok():
        return torch.bfloat16  # ViT-B-32 forward+backward 2.3x faster on a 2-core AVX512-BF16 CPU
    return torch.float32


def _encode_crops(clip_model, crops: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Image embeddings of normalised crops, in float32, computed in ``dtype``."""
    with torch.autocast(crops.device.type, dtype=dtype, enabled=dtype != torch.float32):
        return _encode_member(clip_model, crops).float()


class ImageGuide(torch.nn.Module):
    """A CLIP's image tower plus the embeddings of chosen prompts: all that ``generate`` needs.

    Introduced in lesson 04_vqgan_clip.

    ViT-B-32's text tower is 38% of its weights (63 M of 151 M parameters) but is used only once, to
    embed the prompts. ``ImageGuide`` embeds them up front and keeps only ``clip_model.visual`` (shared,
    not copied); drop your own reference to the full model (``del clip_model``) and the text tower's
    memory is freed. Pass the guide to ``generate`` in place of the CLIP model, with the same
    tokenizer; ``encode_text`` answers for the cached prompts only.

    Example:
        >>> from lessonlib.models import load_tiny_clip
        >>> model, preprocess, tokenizer = load_tiny_clip()
        >>> guide = ImageGuide(model, tokenizer, "a red circle|a blue square:-1")
        >>> guide.encode_text(tokenizer(["a blue square"])).shape
        torch.Size([1, 64])
    """

    def __init__(
        self,
        clip_model,
        tokenizer,
        prompts: str | Sequence[str],
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not hasattr(clip_model, "visual") or not hasattr(clip_model, "encode_text"):
            raise TypeError(
                f"ImageGuide needs an open_clip CLIP (with .visual and .encode_text), got "
                f"{type(clip_model).__name__}"
            )
        if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(
                f"dtype {dtype!r}: use None (share the model's weights), torch.bfloat16 or "
                "torch.float16"
            )
        texts = [p.text for p in parse_prompts(prompts)]
        self.visual = (
            clip_model.visual if dtype is None else _converted_copy(clip_model.visual, dtype)
        )
        self.dtype = dtype or next(clip_model.visual.parameters()).dtype
        was_training = clip_model.training
        clip_model.eval()
        with torch.no_grad():
            tokens = tokenizer(texts)
            device = next(clip_model.parameters()).device
            features = clip_model.encode_text(tokens.to(device)).detach()
        clip_model.train(was_training)
        self.texts = tuple(texts)
        self._rows = {tuple(row.tolist()): i for i, row in enumerate(tokens)}
        self.register_buffer("text_features", features, persistent=False)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = encode_image_fast(self.visual, image.to(self.dtype)).float()
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        index = []
        for row in tokens.cpu():
            key = tuple(row.tolist())
            if key not in self._rows:
                raise ValueError(
                    f"this ImageGuide only knows the prompts it was made with {list(self.texts)}; "
                    "make a new ImageGuide (from the full CLIP) for other prompts"
                )
            index.append(self._rows[key])
        features = self.text_features[index]
        return F.normalize(features, dim=-1) if normalize else features


def _converted_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``module`` with floating-point weights in ``dtype``, made without a full-precision
    copy in between (each tensor is converted straight into the copy)."""
    import copy

    memo = {}
    for tensor in list(module.parameters()) + list(module.buffers()):
        converted = tensor.detach().to(dtype) if tensor.is_floating_point() else tensor.detach()
        memo[id(tensor)] = (
            torch.nn.Parameter(converted, requires_grad=False)
            if isinstance(tensor, torch.nn.Parameter)
            else converted.clone()
        )
    return copy.deepcopy(module, memo).eval()


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc's ``malloc_trim``).

    After ``del clip_model`` (see ``ImageGuide``), the text tower's ~250 MB are free inside the process
    but glibc keeps most of them mapped; trimming returns them, so the peak of the steps that follow
    stays lower. Does nothing where there is no glibc (macOS, Windows).
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def encode_prompts(clip_model, tokenizer, prompts: list[Prompt], device) -> torch.Tensor:
    """Unit-length text embeddings (one row per prompt), computed without gradients."""
    with torch.no_grad():
        tokens = tokenizer([p.text for p in prompts]).to(device)
        return F.normalize(clip_model.encode_text(tokens).float(), dim=-1)


def generate(
    prompts: str | Sequence[str],
    vqgan,
    clip_model,
    tokenizer,
    preprocess=None,
    size: int | Sequence[int] = 256,
    steps: int = 100,
    lr: float = 0.1,
    cutn: int = 32,
    cut_scale: tuple[float, float] = (0.85, 1.0),
    chunk: int = 8,
    cutouts: Cutouts | None = None,
    image_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    init_image=None,
    init_weight: float = 0.0,
    init_codes: torch.Tensor | None = None,
    frame_every: int = 10,
    precision: str = "auto",
    checkpoint_levels: int | None = None,
    progress: bool = True,
    callback: Callable[[int, Image.Image, float], None] | None = None,
    device: str | torch.device | None = None,
) -> GenerationResult:
    """Generate an image for ``prompts`` by optimising the VQGAN latents with CLIP as the critic.

    Introduced in lesson 04_vqgan_clip.

    Args:
        prompts: ``"text|text:weight|text:-weight"`` or a list of such texts (see ``parse_prompts``).
        vqgan, clip_model, tokenizer, preprocess: a ``lessonlib.vqgan.VQGAN`` and an open_clip-style
            model (``encode_image`` / ``encode_text``) with its tokenizer and (optionally) preprocess,
            from which the input size and normalisation are read.
        size: image side, or (width, height); rounded to a multiple of the VQGAN factor (warning).
        steps, lr: Adam steps on the latents and their learning rate.
        cutn, cut_scale, chunk: crops per step, their size range (fraction of the image side), and how
            many go through CLIP at once (peak memory grows with ``chunk``, not ``cutn``).
        cutouts: a ``Cutouts`` with other augmentation settings (its ``cut_size`` must be CLIP's).
        image_loss: an extra loss on the whole image (1, 3, H, W) in [0, 1], added to CLIP's, e.g.
            ``ink_penalty(1.0)``, a prior for "one object on a black background".
        seed: fixes the initial codes, the crops and the noise (same seed, same picture on one machine).
        init_image: start from this picture (path / PIL / array) instead of random codes;
            ``init_weight`` > 0 also keeps the latents close to it.
        init_codes: start from these VQGAN codes instead, a (1, height / factor, width / factor)
            integer grid (e.g. a sample of ``lessonlib.prior.CodePrior``); not with ``init_image``.
        frame_every: keep a frame every this many steps (``GenerationResult.frames``), and call
            ``callback(step, frame, loss)`` (e.g. a live preview widget) at the same moments.
        precision: ``"auto"`` runs the decoder and CLIP's image tower in bfloat16 where that was
            measured faster (a GPU with bf16; a CPU with native bf16 for the f16 decoder and for ViT
            towers), else in float32; ``"float32"`` or ``"bfloat16"`` force one for both.
        checkpoint_levels: recompute the decoder's ``checkpoint_levels`` highest-resolution levels in
            the backward pass instead of storing them (see ``VQGAN.decode_lean``). ``None``: every level
            whose side is 64 pixels or more (at 256x256 with the f16 decoder: 3 levels, peak memory
            -270 MB for +4% time; BENCHMARKS.md); 0 stores everything.

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

    parsed = parse_prompts(prompts)
    for name, value, low in (("steps", steps, 1), ("cutn", cutn, 1), ("chunk", chunk, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    lo, hi = cut_scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(
            f"cut_scale {cut_scale!r} must satisfy 0 < low <= high <= 1, e.g. (0.85, 1.0)"
        )
    wh = check_size(size, vqgan.factor)
    device = torch.device(device) if device is not None else next(vqgan.parameters()).device
    cut_size, mean, std = clip_input_spec(clip_model, preprocess)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    if cutouts is None:
        cutouts = Cutouts(cut_size, scale=(lo, hi))
    elif not isinstance(cutouts, Cutouts):
        raise TypeError(
            f"cutouts must be a lessonlib.generate.Cutouts, got {type(cutouts).__name__}"
        )
    elif cutouts.cut_size != cut_size:
        raise ValueError(
            f"cutouts.cut_size={cutouts.cut_size} but this CLIP takes {cut_size}x{cut_size} images: "
            f"use Cutouts({cut_size}, ...)"
        )
    dec_dtype = _decoder_dtype(vqgan, device, precision)
    if checkpoint_levels is None:
        checkpoint_levels = auto_checkpoint_levels(vqgan, wh)
    elif not isinstance(checkpoint_levels, int) or isinstance(checkpoint_levels, bool):
        raise ValueError(f"checkpoint_levels must be None or an integer, got {checkpoint_levels!r}")
    clip_dtype = _clip_dtype(clip_model, device, precision)
    if init_image is not None and not vqgan.has_encoder:
        raise ValueError(
            "an init image needs the VQGAN's encoder, and this one was loaded without it "
            "(with_encoder=False or drop_encoder()): load it with with_encoder=True, or leave out "
            "init_image"
        )
    if init_codes is not None:
        init_codes = _check_init_codes(init_codes, vqgan, wh)
        if init_image is not None:
            raise ValueError("give init_image or init_codes, not both")
    release_freed_memory()
    generator = torch.Generator().manual_seed(seed)
    weights = torch.tensor([p.weight for p in parsed], device=device)

    start = time.perf_counter()
    with _frozen(vqgan, clip_model):
        text = encode_prompts(clip_model, tokenizer, parsed, device)
        z = _init_latents(vqgan, init_image, wh, generator, device, init_codes)
        z.requires_grad_(True)
        z_init = z.detach().clone()
        book = vqgan.codebook.detach()
        z_min = book.min(0).values.view(1, -1, 1, 1)
        z_max = book.max(0).values.view(1, -1, 1, 1)
        opt = torch.optim.Adam([z], lr=lr)
        result = GenerationResult(image=None, seed=seed, prompts=parsed, size=wh)  # type: ignore[arg-type]
        bar = tqdm(range(steps), desc="VQGAN+CLIP", disable=not progress, mininterval=1)
        for step in bar:
            t_step = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            z_q = quantize_straight_through(z, book)
            with torch.autocast(device.type, dtype=dec_dtype, enabled=dec_dtype != torch.float32):
                decoded = vqgan.decode_lean(z_q, checkpoint_levels=checkpoint_levels)
            image = clamp_with_grad(decoded.float().add(1).div(2), 0.0, 1.0)
            # CLIP on crops, chunk by chunk, gradients accumulating in a detached copy of the image.
            leaf = image.detach().requires_grad_(True)
            loss_value = 0.0
            for first in range(0, cutn, chunk):
                n = min(chunk, cutn - first)
                crops = cutouts(leaf, n, generator)
                emb = _encode_crops(clip_model, (crops - mean_t) / std_t, clip_dtype)
                dists = spherical_distance(emb[:, None, :], text[None, :, :])  # (n, prompts)
                loss = (dists.mean(0) * weights).sum() * (n / cutn)
                loss.backward()
                loss_value += loss.item()
            if image_loss is not None:
                extra = image_loss(leaf)
                extra.backward()
                loss_value += extra.item()
            if init_weight:
                anchor = F.mse_loss(z, z_init) * init_weight
                anchor.backward()
                loss_value += anchor.item()
            image.backward(leaf.grad)  # one pass back through the decoder into z
            opt.step()
            with torch.no_grad():
                z.copy_(torch.maximum(torch.minimum(z, z_max), z_min))
            result.losses.append(loss_value)
            result.step_seconds.append(time.perf_counter() - t_step)
            if step % frame_every == 0 or step == steps - 1:
                frame = _to_pil(image)
                result.frames.append(frame)
                result.frame_steps.append(step)
                if callback is not None:
                    callback(step, frame, loss_value)
            bar.set_postfix(loss=f"{loss_value:.3f}")
        with torch.no_grad():
            z_q = quantize_straight_through(z, book)
            final = vqgan.decode(z_q).float().add(1).div(2).clamp(0, 1)
        result.image = _to_pil(final)
        if result.frames and result.frame_steps[-1] == steps - 1:
            result.frames[-1] = result.image
    result.seconds = time.perf_counter() - start
    return result
