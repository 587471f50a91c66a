"""A tiny DALL-E 2 (unCLIP) built from diffusers: a prior and a diffusion decoder around the tiny CLIP.

Introduced in lesson 05_dalle.

DALL-E 2 draws a caption in two steps, both about CLIP embeddings:

1. a **prior** turns the caption's CLIP *text* embedding into a CLIP *image* embedding (the embedding a
   picture of that caption would have). ``RegressionPrior`` predicts it in one step (an MLP);
   ``DiffusionPrior`` samples it by denoising, with diffusers' ``PriorTransformer`` (the class of
   Kandinsky 2.2's and Karlo's priors) and a DDPM schedule.
2. a **decoder** draws a picture from the image embedding by denoising, with diffusers' ``UNet2DModel``.
   The embedding is projected and added to the timestep embedding, as unCLIP's decoder does
   (``UnCLIPTextProjModel``). It is replaced by a learnt "no condition" vector 10% of the time in
   training, so sampling can use classifier-free guidance. With ``space="latent"`` the decoder works on
   the 16x16 latents of the course's tiny VQGAN and the VQGAN decodes them, as Kandinsky 2.2 decodes
   through its MoVQ; with ``space="pixel"`` it draws the 32x32 pixels itself.

The decoder needs only an image embedding, so one model gives what made DALL-E 2 famous: ``variations``
(embed a picture, decode it with new noise), ``interpolate`` and ``text_diff`` (move an embedding along
the difference of two captions).

``python -m lessonlib.train_tiny_unclip`` trains both parts; ``save_unclip`` / ``load_unclip`` go through
``lessonlib.checkpoints``, and the files record the sha256 of the CLIP (and VQGAN) they were trained on,
so a decoder is never paired with another CLIP by mistake.

Example:
    >>> from lessonlib.unclip import load_unclip
    >>> unclip = load_unclip()  # doctest: +SKIP
    >>> unclip.draw("a large red circle", n=4).images.shape  # doctest: +SKIP
    torch.Size([4, 3, 32, 32])
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lessonlib.checkpoints import (
    WEIGHTS_DIR,
    CheckpointError,
    file_sha256,
    load_into,
    read_state_dict,
    save_weights,
    weights_info,
)
from lessonlib.embed import embed_images, embed_texts

TINY_UNCLIP_WEIGHTS = WEIGHTS_DIR / "tiny_unclip.safetensors"
REPRODUCE_COMMAND = "python -m lessonlib.train_tiny_unclip"
MAX_STEPS = 1000
MAX_GUIDANCE = 20.0


class _Config:
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**d)


@dataclass
class DecoderConfig(_Config):
    """The diffusion decoder's architecture and noise schedule. Introduced in lesson 05_dalle."""

    space: str = "latent"  # "latent" (the tiny VQGAN's 16x16 latents) or "pixel" (32x32 RGB)
    channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention: bool = True  # self-attention at the coarsest resolution
    concat_channels: int = 16  # the embedding also enters as this many constant input channels
    scale_shift: bool = True  # the embedding scales and shifts normalised features (FiLM)
    clip_dim: int = 64
    in_channels: int = 32  # 3 for pixels, the VQGAN's embed_dim for latents
    sample_size: int = 16
    latent_scale: float = 1.0  # latents are divided by this so that they have unit spread
    prediction: str = "sample"  # what the UNet predicts: "sample" (x0), "epsilon" or "v_prediction"
    train_timesteps: int = 1000
    schedule: str = "squaredcos_cap_v2"

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.space not in ("latent", "pixel"):
            raise ValueError(f"space must be 'latent' or 'pixel', got {self.space!r}")
        if self.prediction not in ("sample", "epsilon", "v_prediction"):
            raise ValueError(
                f"prediction must be 'sample', 'epsilon' or 'v_prediction', got {self.prediction!r}"
            )


@dataclass
class EmbeddingPriorConfig(_Config):
    """The prior's kind and size. Introduced in lesson 05_dalle."""

    kind: str = "diffusion"  # "diffusion" (PriorTransformer) or "regression" (an MLP)
    clip_dim: int = 64
    width: int = 128
    layers: int = 4
    heads: int = 4
    train_timesteps: int = 1000
    schedule: str = "squaredcos_cap_v2"

    def __post_init__(self) -> None:
        if self.kind not in ("diffusion", "regression"):
            raise ValueError(f"kind must be 'diffusion' or 'regression', got {self.kind!r}")


def _ddpm(timesteps: int, schedule: str, prediction: str):
    from diffusers import DDPMScheduler

    kw = {"beta_schedule": schedule, "prediction_type": prediction, "clip_sample": False}
    return DDPMScheduler(num_train_timesteps=timesteps, **kw)


def _ddim(train: object):
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(train.config, clip_sample=False, set_alpha_to_one=True)


def check_sampling(steps: object, guidance: object) -> tuple[int, float]:
    """Refuse a step count or guidance scale that cannot work, naming what would. Lesson 05_dalle."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(
            f"steps must be an integer from 1 to {MAX_STEPS} (try 25-50), got {steps!r}"
        )
    if (
        isinstance(guidance, bool)
        or not isinstance(guidance, (int, float))
        or not 0 <= guidance <= MAX_GUIDANCE
    ):
        raise ValueError(
            f"guidance must be a number from 0 (no condition) to {MAX_GUIDANCE:g} (1 = plain "
            f"conditional; 2-4 work best here), got {guidance!r}"
        )
    return steps, float(guidance)


class Decoder(nn.Module):
    """CLIP image embedding -> picture, by denoising with diffusers' ``UNet2DModel``. Lesson 05_dalle."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        self.config = config
        n = len(config.channels)
        down = ["DownBlock2D"] * n
        up = ["UpBlock2D"] * n
        if config.attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        time_dim = config.channels[0] * 4
        self.unet = UNet2DModel(
            sample_size=config.sample_size,
            in_channels=config.in_channels + config.concat_channels,
            out_channels=config.in_channels,
            layers_per_block=config.layers_per_block,
            block_out_channels=config.channels,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=min(32, config.channels[0] // 2),
            attention_head_dim=min(32, config.channels[-1]),
            class_embed_type="identity",
            resnet_time_scale_shift="scale_shift" if config.scale_shift else "default",
        )
        self.concat_proj = (
            nn.Linear(config.clip_dim, config.concat_channels) if config.concat_channels else None
        )
        # unCLIP's UnCLIPTextProjModel: the image embedding joins the timestep embedding.
        self.embed_proj = nn.Sequential(
            nn.Linear(config.clip_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.null_embedding = nn.Parameter(torch.zeros(config.clip_dim))
        self.scheduler = _ddpm(config.train_timesteps, config.schedule, config.prediction)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        embeds: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The UNet's prediction; where ``keep`` is False the condition is the learnt null vector."""
        if keep is not None:
            embeds = torch.where(keep[:, None], embeds, self.null_embedding.expand_as(embeds))
        if self.concat_proj is not None:
            maps = self.concat_proj(embeds)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            x = torch.cat([x, maps], dim=1)
        return self.unet(x, t, class_labels=self.embed_proj(embeds)).sample

    def loss(self, x0: torch.Tensor, embeds: torch.Tensor, p_uncond: float = 0.1) -> torch.Tensor:
        """One training loss: noise ``x0`` to a random step and score the UNet's prediction."""
        sched = self.scheduler
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), device=x0.device)
        noise = torch.randn_like(x0)
        noisy = sched.add_noise(x0, noise, t)
        keep = torch.rand(len(x0), device=x0.device) >= p_uncond
        pred = self(noisy, t, embeds, keep)
        target = {"sample": x0, "epsilon": noise}.get(self.config.prediction)
        if target is None:
            target = sched.get_velocity(x0, noise, t)
        return F.mse_loss(pred, target)

    @torch.no_grad()
    def sample(
        self,
        embeds: torch.Tensor,
        steps: int = 25,
        guidance: float = 3.0,
        seed: int = 0,
        callback=None,
        noise_shared: bool = False,
    ) -> torch.Tensor:
        """Denoise from pure noise with DDIM and classifier-free guidance: (N, C, side, side).

        ``callback(i, x0_estimate)`` is called after every step (for a strip of partial pictures);
        ``noise_shared`` starts every row from the same noise (for interpolations).
        """
        steps, guidance = check_sampling(steps, guidance)
        cfg = self.config
        sched = _ddim(self.scheduler)
        sched.set_timesteps(steps)
        gen = torch.Generator().manual_seed(int(seed))
        shape = (
            1 if noise_shared else len(embeds),
            cfg.in_channels,
            cfg.sample_size,
            cfg.sample_size,
        )
        x = torch.randn(shape, generator=gen).expand(len(embeds), -1, -1, -1).to(embeds.device)
        null = self.null_embedding.expand_as(embeds)
        both = torch.cat([embeds, null])
        for i, t in enumerate(sched.timesteps):
            out = self(torch.cat([x, x]), t.expand(2 * len(x)), both)
            cond, uncond = out.chunk(2)
            pred = uncond + guidance * (cond - uncond)
            step = sched.step(pred, t, x)
            x = step.prev_sample
            if callback is not None:
                callback(i, step.pred_original_sample)
        return x


class RegressionPrior(nn.Module):
    """Text embedding -> image embedding in one step (an MLP, cosine loss). Lesson 05_dalle."""

    def __init__(self, config: EmbeddingPriorConfig) -> None:
        super().__init__()
        self.config = config
        d, w = config.clip_dim, config.width
        layers: list[nn.Module] = [nn.Linear(d, w), nn.SiLU()]
        for _ in range(max(0, config.layers - 2)):
            layers += [nn.Linear(w, w), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(w, d))

    def forward(self, text_embeds: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(text_embeds), dim=-1)

    def loss(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        return (1 - (self(text_embeds) * image_embeds).sum(-1)).mean()

    @torch.no_grad()
    def sample(self, text_embeds: torch.Tensor, seed: int = 0, **_) -> torch.Tensor:
        """The one embedding it predicts (a regression has no randomness: ``seed`` is unused)."""
        return self(text_embeds)


class DiffusionPrior(nn.Module):
    """Text embedding -> image embedding by denoising, with diffusers' ``PriorTransformer``.

    Introduced in lesson 05_dalle. As in DALL-E 2, the transformer predicts the clean embedding
    directly (``prediction_type="sample"``); the embeddings are unit vectors scaled by
    ``sqrt(clip_dim)`` so that they have unit spread per dimension, like the noise.
    """

    def __init__(self, config: EmbeddingPriorConfig) -> None:
        super().__init__()
        from diffusers import PriorTransformer

        self.config = config
        self.transformer = PriorTransformer(
            num_attention_heads=config.heads,
            attention_head_dim=config.width // config.heads,
            num_layers=config.layers,
            embedding_dim=config.clip_dim,
            num_embeddings=0,
            additional_embeddings=4,  # text embedding, timestep, noisy image embedding, readout
            encoder_hid_proj_type=None,
        )
        self.null_embedding = nn.Parameter(torch.zeros(config.clip_dim))
        self.scheduler = _ddpm(config.train_timesteps, config.schedule, "sample")
        self.scale = math.sqrt(config.clip_dim)

    def forward(self, x, t, text_embeds, keep=None) -> torch.Tensor:
        if keep is not None:
            text_embeds = torch.where(
                keep[:, None], text_embeds, self.null_embedding.expand_as(text_embeds)
            )
        return self.transformer(x, t, proj_embedding=text_embeds).predicted_image_embedding

    def loss(self, text_embeds, image_embeds, p_uncond: float = 0.1) -> torch.Tensor:
        x0 = image_embeds * self.scale
        t = torch.randint(0, self.config.train_timesteps, (len(x0),), device=x0.device)
        noisy = self.scheduler.add_noise(x0, torch.randn_like(x0), t)
        keep = torch.rand(len(x0), device=x0.device) >= p_uncond
        return F.mse_loss(self(noisy, t, text_embeds, keep), x0)

    @torch.no_grad()
    def sample(
        self, text_embeds: torch.Tensor, seed: int = 0, steps: int = 25, guidance: float = 1.0
    ) -> torch.Tensor:
        """Sample one image embedding per text embedding (unit length)."""
        steps, guidance = check_sampling(steps, guidance)
        sched = _ddim(self.scheduler)
        sched.set_timesteps(steps)
        gen = torch.Generator().manual_seed(int(seed))
        x = torch.randn(text_embeds.shape, generator=gen).to(text_embeds.device)
        null = self.null_embedding.expand_as(text_embeds)
        for t in sched.timesteps:
            t_batch = t.expand(len(x))
            pred = self(x, t_batch, text_embeds)
            if guidance != 1.0:
                uncond = self(x, t_batch, null)
                pred = uncond + guidance * (pred - uncond)
            x = sched.step(pred, t, x).prev_sample
        return F.normalize(x, dim=-1)


def build_prior(config: EmbeddingPriorConfig) -> nn.Module:
    """The prior a config describes. Introduced in lesson 05_dalle."""
    return (DiffusionPrior if config.kind == "diffusion" else RegressionPrior)(config)


@dataclass
class UnCLIPResult:
    """What ``TinyUnCLIP.draw`` returns. Introduced in lesson 05_dalle."""

    images: torch.Tensor  # (N, 3, H, W) in [0, 1]
    image_embeds: torch.Tensor  # the embeddings the decoder drew from
    seconds: float
    scores: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # CLIP score per image

    def pil(self, i: int = 0):
        """Picture ``i`` as a PIL image."""
        from PIL import Image

        arr = self.images[i].mul(255).round().byte().permute(1, 2, 0).numpy()
        return Image.fromarray(arr)


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation between unit vectors (``w`` = 0 gives ``a``, 1 gives ``b``)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    omega = torch.arccos((a * b).sum(-1, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6))
    return (torch.sin((1 - w) * omega) * a + torch.sin(w * omega) * b) / torch.sin(omega)


class TinyUnCLIP(nn.Module):
    """The tiny DALL-E 2: CLIP, priors, decoder (and the VQGAN in latent space). Lesson 05_dalle.

    ``draw(prompt)``: text embedding -> prior -> image embedding -> decoder -> picture.
    ``variations``, ``interpolate`` and ``text_diff`` start from pictures instead.
    """

    def __init__(self, clip, preprocess, tokenizer, decoder: Decoder, priors: dict, vqgan=None):
        super().__init__()
        if decoder.config.space == "latent" and vqgan is None:
            raise ValueError("a latent-space decoder needs the VQGAN whose latents it draws")
        self.clip, self.preprocess, self.tokenizer = clip, preprocess, tokenizer
        self.decoder, self.priors, self.vqgan = decoder, nn.ModuleDict(priors), vqgan

    def text_embeds(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Unit CLIP text embeddings (unknown words are named in a warning by the tokenizer)."""
        return embed_texts(
            self.clip, self.tokenizer, [prompts] if isinstance(prompts, str) else prompts
        )

    def image_embeds(self, images) -> torch.Tensor:
        """Unit CLIP image embeddings of pictures: PIL images, paths, or a (N, 3, H, W) batch in [0, 1]."""
        from lessonlib.embed import clip_input_spec, pixels_to_clip_input

        if isinstance(images, torch.Tensor):
            size, mean, std = clip_input_spec(self.clip, self.preprocess)
            images = pixels_to_clip_input(images.float(), size, mean, std)
        elif not isinstance(images, (list, tuple)):
            images = [images]
        if isinstance(images, (list, tuple)):
            from lessonlib.images import load_image

            images = [load_image(im) if isinstance(im, (str, Path)) else im for im in images]
        return embed_images(self.clip, images, self.preprocess)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's output as pictures in [0, 1]; latents are snapped to codes and decoded."""
        if self.decoder.config.space == "pixel":
            return x.add(1).div(2).clamp(0, 1)
        z = x * self.decoder.config.latent_scale
        codes = self.vqgan.nearest_codes(z)
        with torch.no_grad():
            return self.vqgan.decode(self.vqgan.codes_to_latents(codes)).add(1).div(2).clamp(0, 1)

    def decode(
        self,
        image_embeds: torch.Tensor,
        steps: int = 25,
        guidance: float = 3.0,
        seed: int = 0,
        noise_shared: bool = False,
        callback=None,
    ) -> torch.Tensor:
        """Pictures (N, 3, 32, 32) in [0, 1] drawn from CLIP image embeddings."""
        x = self.decoder.sample(image_embeds, steps, guidance, seed, callback, noise_shared)
        return self.to_pixels(x)

    def draw(
        self, prompt: str, n: int = 1, seed: int = 0, prior: str = "diffusion", **settings
    ) -> UnCLIPResult:
        """Caption -> prior -> decoder: ``n`` pictures, their embeddings, CLIP scores and the time.

        ``settings``: ``steps`` and ``guidance`` of the decoder; ``prior_steps`` and ``prior_guidance``
        (default 4, the best measured) of a diffusion prior; ``candidates``: draw that many per picture
        and keep the one the CLIP scores highest (DALL-E's reranking; default 1, no reranking).
        """
        if prior not in self.priors:
            raise ValueError(f"unknown prior {prior!r}: this model has {', '.join(self.priors)}")
        per = settings.pop("candidates", 1)
        for name, value in (("n", n), ("candidates", per)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 256:
                raise ValueError(f"{name} must be an integer from 1 to 256, got {value!r}")
        start = time.perf_counter()
        text = self.text_embeds(prompt).expand(n * per, -1)
        p_set = {
            "steps": settings.pop("prior_steps", 25),
            "guidance": settings.pop("prior_guidance", 4.0),
        }
        embeds = self.priors[prior].sample(text, seed=seed, **p_set)
        images = self.decode(embeds, seed=seed, **settings)
        scores = (self.image_embeds(images) * text).sum(-1)
        best = scores.view(n, per).argmax(1) + torch.arange(n) * per
        return UnCLIPResult(images[best], embeds[best], time.perf_counter() - start, scores[best])

    def variations(self, image, n: int = 4, seed: int = 0, **settings) -> torch.Tensor:
        """``n`` new pictures from one picture's CLIP image embedding (DALL-E 2's variations)."""
        embed = self.image_embeds(image)[:1]
        return self.decode(embed.expand(n, -1), seed=seed, **settings)

    def interpolate(self, image_a, image_b, k: int = 5, seed: int = 0, **settings) -> torch.Tensor:
        """``k`` pictures decoded from points along the arc between two pictures' embeddings.

        One noise seed for all, so that only the embedding changes along the row.
        """
        a, b = self.image_embeds(image_a)[:1], self.image_embeds(image_b)[:1]
        path = torch.cat([slerp(a, b, w) for w in torch.linspace(0, 1, k).tolist()])
        return self.decode(path, seed=seed, noise_shared=True, **settings)

    def text_diff(
        self, image, source: str, target: str, k: int = 5, seed: int = 0, **settings
    ) -> torch.Tensor:
        """Move a picture's embedding along ``target - source`` (DALL-E 2's text diffs), k steps."""
        z = self.image_embeds(image)[:1]
        src, tgt = self.text_embeds([source, target])
        diff = F.normalize(tgt - src, dim=-1)[None]
        path = torch.cat([slerp(z, diff, w) for w in torch.linspace(0, 0.5, k).tolist()])
        return self.decode(path, seed=seed, noise_shared=True, **settings)


class _Parts(nn.Module):
    """Decoder and priors in one module, so that they are saved as one safetensors file."""

    def __init__(self, decoder: Decoder, priors: dict) -> None:
        super().__init__()
        self.decoder, self.priors = decoder, nn.ModuleDict(priors)


def save_unclip(
    model: TinyUnCLIP, path, clip_path, vqgan_path=None, command=None, extra=None
) -> Path:
    """Save decoder and priors (safetensors) with a ``.json`` naming the CLIP and VQGAN by sha256.

    Introduced in lesson 05_dalle.
    """
    config = {
        "decoder": model.decoder.config.to_dict(),
        "priors": {name: p.config.to_dict() for name, p in model.priors.items()},
    }
    if model.decoder.config.space == "latent" and vqgan_path is None:
        raise ValueError(
            "a latent-space decoder is saved with the VQGAN it draws for: give vqgan_path"
        )
    record = {"clip": Path(clip_path).name, "clip_sha256": file_sha256(clip_path)}
    if vqgan_path is not None:
        record |= {"vqgan": Path(vqgan_path).name, "vqgan_sha256": file_sha256(vqgan_path)}
    parts = _Parts(model.decoder, dict(model.priors))
    return save_weights(parts, path, config, command=command, extra=record | (extra or {}))


def _partner(path: Path, info: dict, kind: str, given) -> Path:
    """The CLIP or VQGAN file a saved unCLIP names, checked against the sha256 it recorded."""
    if given is None:
        given = path.parent / info[kind]
        if not given.is_file():
            given = WEIGHTS_DIR / info[kind]
    given = Path(given)
    want = info.get(f"{kind}_sha256")
    if want is not None and file_sha256(given) != want:
        raise CheckpointError(
            f"the unCLIP '{path.name}' was trained on the {kind.upper()} with sha256 {want[:16]}..., but "
            f"'{given.name}' is a different file: its embeddings mean other things, so the decoder would "
            f"draw noise. Use '{info[kind]}' or train a new unCLIP for it with `{REPRODUCE_COMMAND}`"
        )
    return given


def load_unclip(path=None, clip_path=None, vqgan_path=None) -> TinyUnCLIP:
    """Load a saved tiny unCLIP with the CLIP (and VQGAN) it was trained on. Lesson 05_dalle.

    Default: the shipped ``tiny_unclip``. A CLIP or VQGAN other than the recorded ones is refused.

    Example:
        >>> load_unclip().decoder.config.space  # doctest: +SKIP
        'latent'
    """
    from lessonlib.models import load_tiny_clip
    from lessonlib.vqgan import load_vqgan

    path = TINY_UNCLIP_WEIGHTS if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"unCLIP weights not found at '{path}': run `{REPRODUCE_COMMAND}`")
    info = weights_info(path)
    clip, preprocess, tokenizer = load_tiny_clip(_partner(path, info, "clip", clip_path))
    vqgan = None
    if "vqgan" in info:
        vqgan = load_vqgan(_partner(path, info, "vqgan", vqgan_path)).eval().requires_grad_(False)
    decoder = Decoder(DecoderConfig.from_dict(info["config"]["decoder"]))
    priors = {
        name: build_prior(EmbeddingPriorConfig.from_dict(c))
        for name, c in info["config"]["priors"].items()
    }
    parts = _Parts(decoder, priors)
    load_into(parts, read_state_dict(path), source=f"'{path}'", hint="save both with save_unclip")
    parts.eval().requires_grad_(False)
    return TinyUnCLIP(clip.eval(), preprocess, tokenizer, decoder, priors, vqgan)
