"""The tiny CLIP: open_clip's own ``CLIP`` class, made small enough to train on a laptop CPU.

Introduced in lesson 01_clip_concepts.

The tiny model and the pretrained ViT-B-32 are both ``open_clip.model.CLIP`` instances, so every lesson
calls the same ``model.encode_image(x, normalize=True)`` and ``model.encode_text(t, normalize=True)``.
What differs is only the config (``TinyCLIPConfig``) and the tokenizer (a word-level one, see
``lessonlib.tokenizer``).

The shipped weights live in ``lessonlib/weights/tiny_clip.safetensors`` with the config beside them in
``tiny_clip.json``; ``python -m lessonlib.train_tiny_clip`` reproduces them.

Example:
    >>> model, preprocess, tokenizer = load_tiny_clip()
    >>> model.encode_text(tokenizer(["a red circle"]), normalize=True).shape[-1] == model.text_projection.shape[-1]
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from lessonlib.checkpoints import WEIGHTS_DIR, load_weights, save_weights, weights_info
from lessonlib.tokenizer import DEFAULT_WORDS, EOT_ID, PAD_ID, WordTokenizer

TINY_CLIP_WEIGHTS = WEIGHTS_DIR / "tiny_clip.safetensors"
# The same model taught the Urdu words of Shapes World (lesson 02): only the new words' vectors were
# trained, so its answers to English prompts are exactly the English model's.
TINY_CLIP_BILINGUAL = WEIGHTS_DIR / "tiny_clip_bilingual.safetensors"
TINY_CLIP_CONFIG = WEIGHTS_DIR / "tiny_clip.json"
REPRODUCE_COMMAND = "python -m lessonlib.train_tiny_clip"

# Lesson 04's guide: the shipped tiny CLIP, two retrained with other seeds, and two fine-tuned from it
# adversarially (L2 radius 1.0 and 0.5). Each .json beside the weights holds the command that made it.
TINY_GUIDE_WEIGHTS = (
    TINY_CLIP_WEIGHTS,
    WEIGHTS_DIR / "tiny_clip_seed1.safetensors",
    WEIGHTS_DIR / "tiny_clip_seed2.safetensors",
    WEIGHTS_DIR / "tiny_clip_robust1.safetensors",
    WEIGHTS_DIR / "tiny_clip_robust05.safetensors",
)
# Lesson 04's rerankers for the code prior's samples: trained on every colour + shape pair, with blurred
# pictures and up to three objects (the .json beside each has the command). Not used as a guide: their
# gradients draw several copies of the object (BENCHMARKS.md, Lesson 04, session 3).
TINY_RERANK_WEIGHTS = tuple(WEIGHTS_DIR / f"tiny_clip_rerank{i}.safetensors" for i in (1, 2, 3))


@dataclass
class TinyCLIPConfig:
    """Everything that fixes the tiny CLIP's architecture, its tokenizer and its preprocessing.

    Introduced in lesson 01_clip_concepts.

    Vision tower: a tuple ``vision_layers`` builds open_clip's ``ModifiedResNet`` (the CNN of OpenAI's
    RN50, here with ``vision_width`` stem channels and blocks per stage as given); an int builds its
    ``VisionTransformer`` with that many layers and ``vision_patch_size`` patches.
    Text tower: open_clip's causal ``TextTransformer`` over the word-level vocabulary ``words``, pooled
    at the ``<eot>`` token (``pool_type="eos"``).

    Example:
        >>> TinyCLIPConfig(embed_dim=32).embed_dim
        32
    """

    embed_dim: int = 64
    image_size: int = 32
    vision_layers: tuple[int, int, int, int] | int = (1, 1, 1, 1)
    vision_width: int = 8
    vision_head_width: int = 32
    vision_patch_size: int = 4
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    context_length: int = 32
    words: tuple[str, ...] = field(default_factory=lambda: tuple(DEFAULT_WORDS))
    init_temperature: float = 0.07
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def __post_init__(self) -> None:
        if isinstance(self.vision_layers, list):
            self.vision_layers = tuple(self.vision_layers)
        self.words = tuple(self.words)
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        for name in (
            "embed_dim",
            "image_size",
            "vision_width",
            "text_width",
            "text_layers",
            "text_heads",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.vision_layers, tuple):
            if len(self.vision_layers) != 4 or not all(
                isinstance(n, int) and n >= 1 for n in self.vision_layers
            ):
                raise ValueError(
                    f"vision_layers {self.vision_layers!r}: give 4 positive block counts for the ResNet "
                    "(e.g. (1, 1, 1, 1)) or one int for a ViT"
                )
            if (self.vision_width * 32) % self.vision_head_width:
                raise ValueError(
                    f"vision_width*32={self.vision_width * 32} is not divisible by vision_head_width="
                    f"{self.vision_head_width}: pick a head width that divides it"
                )
        elif isinstance(self.vision_layers, int) and self.vision_layers >= 1:
            if self.image_size % self.vision_patch_size:
                raise ValueError(
                    f"image_size={self.image_size} is not divisible by vision_patch_size="
                    f"{self.vision_patch_size}: pick a patch size that divides it"
                )
            if self.vision_width % self.vision_head_width:
                raise ValueError(
                    f"vision_width={self.vision_width} is not divisible by vision_head_width="
                    f"{self.vision_head_width}"
                )
        else:
            raise ValueError(
                f"vision_layers {self.vision_layers!r}: give 4 block counts (ResNet) or one int (ViT layers)"
            )
        if self.text_width % self.text_heads:
            raise ValueError(
                f"text_width={self.text_width} is not divisible by text_heads={self.text_heads}"
            )
        if not 0 < self.init_temperature < 1:
            raise ValueError(f"init_temperature must be in (0, 1), got {self.init_temperature!r}")

    @property
    def vision_tower(self) -> str:
        """``"resnet"`` or ``"vit"``."""
        return "resnet" if isinstance(self.vision_layers, tuple) else "vit"

    def vision_cfg(self):
        """The ``open_clip.model.CLIPVisionCfg`` of this config."""
        from open_clip.model import CLIPVisionCfg

        return CLIPVisionCfg(
            layers=self.vision_layers,
            width=self.vision_width,
            head_width=self.vision_head_width,
            patch_size=self.vision_patch_size,
            image_size=self.image_size,
        )

    def text_cfg(self):
        """The ``open_clip.model.CLIPTextCfg`` of this config (eos pooling for the word tokenizer)."""
        from open_clip.model import CLIPTextCfg

        return CLIPTextCfg(
            context_length=self.context_length,
            vocab_size=4 + len(self.words),
            width=self.text_width,
            heads=self.text_heads,
            layers=self.text_layers,
            pad_id=PAD_ID,
            eos_id=EOT_ID,
            pool_type="eos",
        )

    def to_dict(self) -> dict:
        """JSON-ready dict; ``TinyCLIPConfig.from_dict(d)`` rebuilds it."""
        d = asdict(self)
        d["vision_layers"] = (
            list(self.vision_layers) if self.vision_tower == "resnet" else self.vision_layers
        )
        d["words"], d["mean"], d["std"] = list(self.words), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TinyCLIPConfig:
        """Rebuild a config from ``to_dict()`` output; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown TinyCLIPConfig keys {unknown}: valid keys are {', '.join(sorted(known))}"
            )
        return cls(**d)


def build_tiny_clip(cfg: TinyCLIPConfig | None = None):
    """A randomly initialised tiny CLIP (an ``open_clip.model.CLIP``) for ``cfg``.

    Introduced in lesson 01_clip_concepts.

    Example:
        >>> model = build_tiny_clip(TinyCLIPConfig())
        >>> type(model).__name__
        'CLIP'
    """
    from open_clip.model import CLIP

    cfg = TinyCLIPConfig() if cfg is None else cfg
    if not isinstance(cfg, TinyCLIPConfig):
        raise TypeError(f"cfg must be a TinyCLIPConfig, got {type(cfg).__name__}")
    return CLIP(
        embed_dim=cfg.embed_dim,
        vision_cfg=cfg.vision_cfg(),
        text_cfg=cfg.text_cfg(),
        init_logit_scale=math.log(1.0 / cfg.init_temperature),
    )


def make_tokenizer(cfg: TinyCLIPConfig) -> WordTokenizer:
    """The word-level tokenizer that matches ``cfg`` (same vocabulary and context length)."""
    return WordTokenizer(words=cfg.words, context_length=cfg.context_length)


def make_preprocess(cfg: TinyCLIPConfig) -> Callable:
    """PIL image (any size or mode) -> normalised float tensor (3, image_size, image_size).

    It is open_clip's own inference transform (convert to RGB, resize the short side, centre crop,
    normalise), with the tiny model's size and statistics.
    """
    from open_clip.transform import image_transform

    return image_transform(cfg.image_size, is_train=False, mean=cfg.mean, std=cfg.std)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of a model."""
    return sum(p.numel() for p in model.parameters())


def save_tiny_clip(
    model: torch.nn.Module,
    cfg: TinyCLIPConfig,
    path: str | Path = TINY_CLIP_WEIGHTS,
    half: bool = True,
    metadata: dict | None = None,
) -> Path:
    """Save weights as safetensors (fp16 by default) and the config as JSON beside them (``.json``).

    Introduced in lesson 01_clip_concepts. ``metadata`` (the command that made the file, measured
    accuracy) goes into the ``.json`` too; see ``lessonlib.checkpoints.save_weights``.

    Example:
        >>> import tempfile
        >>> p = save_tiny_clip(build_tiny_clip(), TinyCLIPConfig(), tempfile.mkdtemp() + "/m.safetensors")
        >>> p.with_suffix(".json").exists()
        True
    """
    return save_weights(model, path, cfg.to_dict(), half=half, extra=metadata)


def load_tiny_clip(path: str | Path | None = None, device: str = "cpu"):
    """Load the shipped tiny CLIP (or another saved one): ``(model, preprocess, tokenizer)``.

    Introduced in lesson 01_clip_concepts.

    The model is in eval mode, in float32 (weights stored as fp16 are cast back), on ``device``.
    Same return shape as ``open_clip.create_model_and_transforms`` + ``get_tokenizer``.

    Example:
        >>> model, preprocess, tokenizer = load_tiny_clip()
        >>> tokenizer(["a red circle"]).shape[-1] == tokenizer.context_length
        True
    """
    path = TINY_CLIP_WEIGHTS if path is None else Path(path)
    model, info = load_weights(
        path,
        lambda config: build_tiny_clip(TinyCLIPConfig.from_dict(config)),
        what="tiny CLIP",
        reproduce=REPRODUCE_COMMAND,
    )
    cfg = TinyCLIPConfig.from_dict(info["config"])
    return model.to(device), make_preprocess(cfg), make_tokenizer(cfg)


def load_tiny_clip_config(path: str | Path | None = None) -> dict:
    """The JSON saved beside a tiny CLIP's weights (config, training command, measured accuracy).

    Introduced in lesson 01_clip_concepts.

    Example:
        >>> load_tiny_clip_config()["command"].startswith("python -m lessonlib.train_tiny_clip")
        True
    """
    return weights_info(TINY_CLIP_WEIGHTS if path is None else path)


def add_words(model, cfg: TinyCLIPConfig, words: Sequence[str], seed: int = 0):
    """Teach a trained tiny CLIP's tokenizer new words: ``(model, cfg)`` with one new row of the token
    embedding per new word (random, as open_clip initialises them) and every old row kept.

    Introduced in lesson 02_zero_shot_classification (the bilingual tiny CLIP learns Urdu this way:
    its image tower frozen, its text tower trained on Urdu and English captions, as the multilingual
    CLIPs were made from English ones).

    Example:
        >>> model, cfg = add_words(model, cfg, ["نیلا"])  # doctest: +SKIP
    """
    new = [w for w in dict.fromkeys(words) if w not in cfg.words]
    if not new:
        return model, cfg
    old = model.token_embedding
    grown = torch.nn.Embedding(old.num_embeddings + len(new), old.embedding_dim)
    with torch.no_grad():
        grown.weight[: old.num_embeddings] = old.weight
        generator = torch.Generator().manual_seed(seed)
        grown.weight[old.num_embeddings :] = 0.02 * torch.randn(
            len(new), old.embedding_dim, generator=generator
        )
    model.token_embedding = grown.to(old.weight.device, old.weight.dtype)
    model.vocab_size = grown.num_embeddings
    return model, TinyCLIPConfig.from_dict({**cfg.to_dict(), "words": list(cfg.words) + new})


def freeze_image_tower(model):
    """Freeze the image tower: no gradients, and its BatchNorm layers stay in eval mode (their running
    statistics unchanged) even when training calls ``model.train()``. Returns ``model``."""
    import types

    def stay_in_eval(module, mode: bool = True):
        return torch.nn.Module.train(module, False)

    model.visual.requires_grad_(False)
    for module in model.visual.modules():
        module.train = types.MethodType(stay_in_eval, module)
    model.visual.eval()
    return model


def train_new_words_only(model, old_vocab_size: int):
    """Freeze everything but the token-embedding rows from ``old_vocab_size`` on (the words
    ``add_words`` added): the model's answers to texts in the words it knew stay exactly as they were,
    and training only finds vectors for the new words. The image tower's BatchNorm stays in eval mode
    (``freeze_image_tower``). Returns ``model``."""
    freeze_image_tower(model)
    model.requires_grad_(False)
    weight = model.token_embedding.weight
    weight.requires_grad_(True)
    keep = torch.zeros_like(weight)
    keep[old_vocab_size:] = 1.0
    weight.register_hook(lambda grad: grad * keep)
    return model
