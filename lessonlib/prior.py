"""A tiny text-to-image *prior* over VQGAN codes: a small GPT that writes a code grid for a caption.

Introduced in lesson 05_dalle (DALL-E 1); lesson 04_vqgan_clip's exercises use ``clip_scores``.

VQGAN+CLIP starts from random codes and lets CLIP push them around; nothing in the loop knows what a
*picture* of Shapes World looks like, so a small CLIP is easily satisfied by blobs (BENCHMARKS.md,
Lesson 04). Taming transformers and DALL-E add the missing piece: a transformer trained to continue
a sequence ``caption tokens, code_0, code_1, ...`` reads a caption and then writes the image's codes
one by one, left to right, top to bottom. Its samples are plausible code grids by construction; CLIP
then only has to pick among them (DALL-E's reranking) or polish one (VQGAN+CLIP with an init).

This module is that idea at Shapes World size:

* ``CodePrior``: caption tokens (``lessonlib.tokenizer.WordTokenizer``), a start-of-image token and
  the codes of a tiny VQGAN's grid, with causal self-attention (a minGPT-style decoder, as in taming's
  ``cond_transformer``). With probability ``p_uncond`` the caption is blanked during training, so one
  model is both conditional and unconditional: sampling can then use classifier-free guidance.
* ``CodePrior.sample``: autoregressive sampling with a key/value cache, temperature, top-k and a
  guidance scale.
* ``python -m lessonlib.train_tiny_prior`` trains one (``lessonlib.train_tiny_prior``).
* ``draw``: prior samples -> (optional) CLIP reranking (``lessonlib.embed``) -> (optional) CLIP
  refinement with ``lessonlib.generate.generate``.
* ``save_prior`` / ``load_prior``: the one way every shipped model is saved and loaded
  (``lessonlib.checkpoints``), plus the hash of the VQGAN whose codes the prior writes.

Example:
    >>> from lessonlib.prior import load_prior, draw
    >>> prior, vqgan = load_prior()  # doctest: +SKIP
    >>> draw("a small red cross", prior, vqgan).image  # doctest: +SKIP
"""

from __future__ import annotations

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
from lessonlib.embed import clip_input_spec, embed_images, embed_texts, pixels_to_clip_input
from lessonlib.generate import GenerateConfig, generate
from lessonlib.tokenizer import PAD_ID, WordTokenizer
from lessonlib.vqgan import load_vqgan

TINY_PRIOR_WEIGHTS = WEIGHTS_DIR / "tiny_prior.safetensors"
TINY_PRIOR_VQGAN = WEIGHTS_DIR / "tiny_vqgan_f2.safetensors"
REPRODUCE_COMMAND = "python -m lessonlib.train_tiny_prior"


@dataclass
class PriorConfig:
    """Sizes of a ``CodePrior``. ``grid`` is (height, width) of the VQGAN's code grid.

    Introduced in lesson 05_dalle.

    Example:
        >>> PriorConfig(grid=(16, 16)).n_image
        256
    """

    n_codes: int = 256
    grid: tuple[int, int] = (16, 16)
    text_len: int = 24
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    p_uncond: float = 0.1
    tokenizer: dict = field(default_factory=lambda: WordTokenizer(context_length=24).config())

    def __post_init__(self) -> None:
        self.grid = tuple(int(g) for g in self.grid)  # type: ignore[assignment]
        for name in ("n_codes", "text_len", "d_model", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PriorConfig.{name} must be a positive integer, got {value!r}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"PriorConfig.grid must be (height, width) >= 1, got {self.grid!r}")
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model={self.d_model} must be a multiple of n_head={self.n_head}, e.g. 128 and 4"
            )
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond!r}")
        if self.tokenizer.get("context_length") != self.text_len:
            self.tokenizer = {**self.tokenizer, "context_length": self.text_len}

    @property
    def n_image(self) -> int:
        """Codes per image (grid height x width)."""
        return self.grid[0] * self.grid[1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PriorConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class _Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and an MLP, with an optional k/v cache."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, past: tuple | None = None):
        b, n, d = x.shape
        q, k, v = (
            self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        )
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        # With a cache, one new token at a time may see everything before it: no mask needed.
        a = F.scaled_dot_product_attention(q, k, v, is_causal=past is None)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        x = x + self.mlp(self.ln2(x))
        return x, (k, v)


class CodePrior(nn.Module):
    """A GPT over ``[caption tokens] [start] code_0 ... code_{N-1}`` (see the module docstring).

    Introduced in lesson 05_dalle.

    Example:
        >>> prior = CodePrior(PriorConfig(grid=(2, 2), d_model=16, n_layer=1, n_head=2))
        >>> text = prior.tokenizer(["a red circle"])
        >>> prior(text, torch.zeros(1, 4, dtype=torch.long)).shape
        torch.Size([1, 4, 256])
    """

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = WordTokenizer(**config.tokenizer)
        d = config.d_model
        self.text_emb = nn.Embedding(self.tokenizer.vocab_size, d)
        self.code_emb = nn.Embedding(config.n_codes + 1, d)  # the last id is <start of image>
        self.pos_emb = nn.Parameter(torch.zeros(config.text_len + config.n_image, d))
        self.blocks = nn.ModuleList(_Block(d, config.n_head) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.n_codes)
        self.apply(self._init)
        nn.init.normal_(self.pos_emb, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    @property
    def start_id(self) -> int:
        return self.config.n_codes

    def encode_text(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Token ids (batch, text_len) for prompts; unknown words are refused (they carry no meaning)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"a prompt must be a non-empty string, got {p!r}")
        unknown = self.tokenizer.unknown_words(prompts)
        if unknown:
            raise ValueError(
                f"the prior does not know the words {unknown}: it was trained on Shapes World captions "
                f"(e.g. 'a small red circle', 'a blue square at the top'); rephrase with known words"
            )
        return self.tokenizer(prompts)

    def _embed(self, text: torch.Tensor, codes_in: torch.Tensor) -> torch.Tensor:
        t = self.config.text_len
        x = torch.cat([self.text_emb(text), self.code_emb(codes_in)], dim=1)
        return x + self.pos_emb[: t + codes_in.shape[1]]

    def forward(self, text: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Logits (batch, N, n_codes) for each code given the caption and the codes before it."""
        b, n = codes.shape
        if text.shape != (b, self.config.text_len):
            raise ValueError(
                f"text must be ({b}, {self.config.text_len}) token ids, got {tuple(text.shape)}"
            )
        start = torch.full((b, 1), self.start_id, dtype=torch.long, device=codes.device)
        x = self._embed(text, torch.cat([start, codes[:, :-1]], dim=1))
        for block in self.blocks:
            x, _ = block(x)
        x = self.ln_f(x[:, self.config.text_len :])
        return self.head(x)

    def loss(self, text: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats per code) of ``codes`` given ``text``."""
        logits = self(text, codes)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), codes.reshape(-1))

    @torch.no_grad()
    def sample(
        self,
        prompts: str | Sequence[str],
        n: int = 1,
        temperature: float = 1.0,
        top_k: int | None = None,
        guidance: float = 1.0,
        seed: int = 0,
        callback=None,
    ) -> torch.Tensor:
        """Sample ``n`` code grids per prompt: (len(prompts) * n, grid_h, grid_w), prompt-major.

        ``guidance`` > 1 uses classifier-free guidance (logits of the blank caption + ``guidance``
        times the difference to the caption's); 1 samples the plain conditional model.
        ``callback(written, grids)``, if given, runs after every code: the number of codes written
        so far and a copy of the grids, with -1 where no code is written yet.
        """
        for name, value, low in (("n", n, 1), ("seed", seed, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(
                f"temperature must be a positive number, e.g. 1.0, got {temperature!r}"
            )
        if top_k is not None and (
            not isinstance(top_k, int) or not 1 <= top_k <= self.config.n_codes
        ):
            raise ValueError(
                f"top_k must be None or an integer from 1 to {self.config.n_codes}, got {top_k!r}"
            )
        if not (isinstance(guidance, (int, float)) and guidance >= 0):
            raise ValueError(f"guidance must be a number >= 0 (1 = no guidance), got {guidance!r}")
        self.eval()
        device = self.pos_emb.device
        text = self.encode_text(prompts).to(device).repeat_interleave(n, dim=0)
        b = text.shape[0]
        use_cfg = guidance != 1.0
        if use_cfg:
            text = torch.cat([text, torch.full_like(text, PAD_ID)])
        generator = torch.Generator(device="cpu").manual_seed(seed)
        rows = text.shape[0]
        token = torch.full((rows, 1), self.start_id, dtype=torch.long, device=device)
        x = self._embed(text, token)
        past: list = [None] * len(self.blocks)
        out = torch.full((b, self.config.n_image), -1, dtype=torch.long)  # -1: not written yet
        pos = self.config.text_len
        for i in range(self.config.n_image):
            for j, block in enumerate(self.blocks):
                x, past[j] = block(x, past[j])
            logits = self.head(self.ln_f(x[:, -1])).float()
            if use_cfg:
                cond, blank = logits[:b], logits[b:]
                logits = blank + guidance * (cond - blank)
            logits = logits / temperature
            if top_k is not None:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = logits.softmax(-1).cpu()
            nxt = torch.multinomial(probs, 1, generator=generator)
            out[:, i] = nxt[:, 0]
            if callback is not None:
                callback(i + 1, out.view(b, *self.config.grid).clone())
            if i + 1 < self.config.n_image:
                nxt = nxt.to(device)
                if use_cfg:
                    nxt = torch.cat([nxt, nxt])
                x = self.code_emb(nxt) + self.pos_emb[pos + i + 1]
        return out.view(b, *self.config.grid)

    @torch.no_grad()
    def log_likelihood(self, prompts: str | Sequence[str], codes: torch.Tensor) -> torch.Tensor:
        """Sum of log p(code) over each grid in ``codes`` (batch, h, w), one prompt per grid."""
        text = self.encode_text(prompts).to(self.pos_emb.device)
        flat = codes.reshape(codes.shape[0], -1).to(self.pos_emb.device)
        logits = self(text, flat).float()
        return -F.cross_entropy(logits.transpose(1, 2), flat, reduction="none").sum(1)


def save_prior(
    prior: CodePrior, path: str | Path, extra: dict | None = None, command: str | None = None
) -> Path:
    """Save weights as safetensors and the config (plus ``command`` and ``extra``) beside them as ``.json``.

    Introduced in lesson 05_dalle. ``lessonlib.checkpoints.save_weights`` with the prior's config;
    put the VQGAN's file name and sha256 into ``extra`` (``"vqgan"``, ``"vqgan_sha256"``) so that
    ``load_prior`` finds it and refuses any other.

    Example:
        >>> save_prior(prior, "/tmp/my_prior.safetensors", extra={"vqgan": "my_vqgan.safetensors"})  # doctest: +SKIP
    """
    return save_weights(prior, path, prior.config.to_dict(), command=command, extra=extra)


def load_prior(path: str | Path | None = None, vqgan_path: str | Path | None = None):
    """Load a prior saved by ``save_prior`` and the VQGAN whose codes it writes: ``(prior, vqgan)``.

    Default: the shipped tiny prior and the f2 tiny VQGAN it was trained on. The VQGAN's sha256 is
    recorded in the prior's ``.json``; a different VQGAN (other codes) is refused.

    Introduced in lesson 05_dalle.

    Example:
        >>> prior, vqgan = load_prior()
        >>> prior.config.grid == (vqgan.config.resolution // vqgan.factor,) * 2
        True
    """
    path = TINY_PRIOR_WEIGHTS if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prior weights not found at '{path}': run `{REPRODUCE_COMMAND}`")
    if not path.with_suffix(".json").is_file():
        raise FileNotFoundError(
            f"prior config not found at '{path.with_suffix('.json')}' (it sits beside the weights, "
            "same name, .json): save priors with lessonlib.prior.save_prior"
        )
    # lessonlib.checkpoints.load_weights, spelled out for a message that names the prior's saver.
    info = weights_info(path)
    prior = CodePrior(PriorConfig.from_dict(info["config"]))
    load_into(
        prior,
        read_state_dict(path),
        source=f"'{path}'",
        hint="The file does not match the config beside it: save both with save_prior",
    )
    prior.eval().requires_grad_(False)
    if vqgan_path is None:  # the VQGAN it names, beside the prior or among the shipped weights
        name = info.get("vqgan", TINY_PRIOR_VQGAN.name)
        vqgan_path = path.parent / name
        if not vqgan_path.is_file() and (WEIGHTS_DIR / name).is_file():
            vqgan_path = WEIGHTS_DIR / name
    vqgan_path = Path(vqgan_path)
    vqgan = load_vqgan(vqgan_path)
    want = info.get("vqgan_sha256")
    if want is not None and file_sha256(vqgan_path) != want:
        raise CheckpointError(
            f"the prior '{path}' was trained on the codes of a VQGAN with sha256 {want[:16]}..., but "
            f"'{vqgan_path}' is a different file: its codes mean other pictures. Load the VQGAN it "
            f"names ('{info.get('vqgan')}') or train a prior for this one with `{REPRODUCE_COMMAND}`"
        )
    check_compatible(prior, vqgan)
    return prior, vqgan


def check_compatible(prior: CodePrior, vqgan) -> None:
    """Raise ``ValueError`` if the prior's code grid or codebook size does not fit ``vqgan``.

    Introduced in lesson 05_dalle.

    Example:
        >>> check_compatible(*load_prior())  # the shipped pair fits: no error
    """
    cfg = vqgan.config
    grid = (cfg.resolution // vqgan.factor, cfg.resolution // vqgan.factor)
    if cfg.n_embed != prior.config.n_codes or grid != tuple(prior.config.grid):
        raise ValueError(
            f"this prior writes {prior.config.grid} grids of {prior.config.n_codes} codes, but the "
            f"VQGAN has {cfg.n_embed} codes on a {grid} grid at its {cfg.resolution} px resolution: "
            "use the VQGAN the prior was trained with"
        )


@dataclass
class DrawResult:
    """What ``draw`` made: the final picture and the way there."""

    image: object
    prompt: str
    candidates: list = field(default_factory=list)  # PIL images of the prior's samples
    codes: torch.Tensor | None = None  # their code grids, (candidates, h, w)
    scores: list[float] = field(default_factory=list)  # CLIP cosine per candidate (if reranked)
    chosen: int = 0
    refined: object = None  # lessonlib.generate.GenerationResult if refine_steps > 0
    seconds: float = 0.0


def codes_to_images(vqgan, codes: torch.Tensor) -> torch.Tensor:
    """Decode code grids (batch, h, w) to images (batch, 3, H, W) in [0, 1].

    Introduced in lesson 05_dalle.

    Example:
        >>> prior, vqgan = load_prior()
        >>> codes_to_images(vqgan, prior.sample("a large red circle")).shape
        torch.Size([1, 3, 32, 32])
    """
    with torch.no_grad():
        return vqgan.decode_codes(codes).float().add(1).div(2).clamp(0, 1)


def clip_scores(
    images: torch.Tensor, prompt: str, clip_model, tokenizer, preprocess=None
) -> torch.Tensor:
    """Cosine between each image (batch, 3, H, W in [0, 1]) and ``prompt`` under a CLIP.

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> from lessonlib.models import load_tiny_clip
        >>> clip_model, preprocess, tokenizer = load_tiny_clip()
        >>> clip_scores(torch.zeros(2, 3, 32, 32), "a red circle", clip_model, tokenizer).shape
        torch.Size([2])
    """
    size, mean, std = clip_input_spec(clip_model, preprocess)
    img = embed_images(clip_model, pixels_to_clip_input(images, size, mean, std))
    txt = embed_texts(clip_model, tokenizer, [prompt])
    return (img @ txt.T)[:, 0]


@dataclass
class DrawConfig:
    """How ``draw`` samples and picks. The defaults are what BENCHMARKS.md measured best with
    ``load_tiny_rerankers()`` as the CLIP.

    Introduced in lesson 05_dalle.

    Example:
        >>> DrawConfig(candidates=8).top_k
        16
    """

    candidates: int = 16  # samples drawn; a CLIP keeps the best (DALL-E reranked 512)
    temperature: float = 1.0
    top_k: int | None = 16
    guidance: float = 2.0  # classifier-free guidance scale
    refine_steps: int = 0  # VQGAN+CLIP steps that polish the pick (0: none)
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if (
            not isinstance(self.candidates, int)
            or isinstance(self.candidates, bool)
            or self.candidates < 1
        ):
            raise ValueError(f"candidates must be an integer >= 1, got {self.candidates!r}")
        steps = self.refine_steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"refine_steps must be an integer >= 0, got {steps!r}")


def draw(
    prompt: str,
    prior: CodePrior,
    vqgan,
    clip_model=None,
    tokenizer=None,
    preprocess=None,
    config: DrawConfig | None = None,
    **settings,
) -> DrawResult:
    """A tiny DALL-E: the prior samples ``config.candidates`` code grids for ``prompt``; a CLIP (if
    given) picks the one it matches best; ``refine_steps`` > 0 then polishes that one with VQGAN+CLIP
    (``lessonlib.generate.generate`` with the chosen codes as the start).

    ``settings`` by keyword change fields of ``config`` (``candidates=8``); any other keyword is a
    ``GenerateConfig`` setting for the refinement (``lr=0.05``). Without a CLIP, the first sample is
    kept.

    Introduced in lesson 05_dalle.

    Example:
        >>> from lessonlib.critics import load_tiny_rerankers
        >>> prior, vqgan = load_prior()
        >>> reranker, preprocess, tokenizer = load_tiny_rerankers()
        >>> d = draw("a small red cross", prior, vqgan, reranker, tokenizer, preprocess)
        >>> d.image.size
        (32, 32)
    """
    from dataclasses import fields, replace

    own = {f.name for f in fields(DrawConfig)}
    config = replace(config or DrawConfig(), **{k: v for k, v in settings.items() if k in own})
    generate_kwargs = {k: v for k, v in settings.items() if k not in own}
    unknown = sorted(set(generate_kwargs) - {f.name for f in fields(GenerateConfig)})
    if unknown:
        raise TypeError(
            f"unknown draw setting(s) {unknown}: DrawConfig has {', '.join(sorted(own))}; other "
            "keywords must be GenerateConfig settings for the refinement"
        )
    if generate_kwargs and not config.refine_steps:
        raise ValueError(
            f"{sorted(generate_kwargs)} set how VQGAN+CLIP refines the pick, but refine_steps=0: "
            "give refine_steps > 0 or leave them out"
        )
    candidates, refine_steps, seed = config.candidates, config.refine_steps, config.seed
    import time

    from PIL import Image

    if (refine_steps or candidates > 1) and clip_model is not None and tokenizer is None:
        raise ValueError("a clip_model needs its tokenizer too (tokenizer=...)")
    if refine_steps and clip_model is None:
        raise ValueError("refine_steps > 0 needs a clip_model (and its tokenizer) to refine with")
    check_compatible(prior, vqgan)
    start = time.perf_counter()
    codes = prior.sample(
        prompt,
        n=candidates,
        temperature=config.temperature,
        top_k=config.top_k,
        guidance=config.guidance,
        seed=seed,
    )
    images = codes_to_images(vqgan, codes)
    pils = [Image.fromarray(im.mul(255).round().byte().permute(1, 2, 0).numpy()) for im in images]
    result = DrawResult(image=pils[0], prompt=prompt, candidates=pils, codes=codes)
    if clip_model is not None and candidates > 1:
        scores = clip_scores(images, prompt, clip_model, tokenizer, preprocess)
        result.scores = [float(s) for s in scores]
        result.chosen = int(scores.argmax())
        result.image = pils[result.chosen]
    if refine_steps:
        size = vqgan.config.resolution
        refined = generate(
            prompt,
            vqgan,
            clip_model,
            tokenizer,
            preprocess,
            size=size,
            steps=refine_steps,
            seed=seed,
            init_codes=codes[result.chosen : result.chosen + 1],
            progress=config.progress,
            **generate_kwargs,
        )
        result.refined = refined
        result.image = refined.image
    result.seconds = time.perf_counter() - start
    return result
