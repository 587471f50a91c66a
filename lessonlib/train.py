"""Training a CLIP with the contrastive loss: one readable loop, a progress bar, live plots.

Introduced in lesson 01_clip_concepts.

``train_clip`` is the loop of the CLIP paper: embed a batch of images and their captions, compare every
image with every caption (``lessonlib.loss.clip_loss``), step the optimiser. ``LivePlot`` redraws the loss
curve and the similarity matrix of a fixed probe batch while it trains (in Jupyter; headless runs skip
the drawing). ``zero_shot_accuracy`` scores a model on fresh Shapes World images with the prompt
``"a {colour} {shape}"`` over all colour x shape classes.

Example:
    >>> from lessonlib.data import ShapesWorld
    >>> from lessonlib.models import TinyCLIPConfig, build_tiny_clip, make_tokenizer
    >>> cfg = TinyCLIPConfig()
    >>> model, tok = build_tiny_clip(cfg), make_tokenizer(cfg)
    >>> history = train_clip(model, tok, ShapesWorld(64), steps=2, batch_size=32, mean=cfg.mean,
    ...                      std=cfg.std, progress=False)
    >>> len(history.loss)
    2
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from lessonlib.loss import clip_loss, diagonal_accuracy, similarity_matrix

MAX_LOGIT_SCALE = math.log(100.0)  # as open_clip: temperature never below 0.01


@dataclass
class TrainHistory:
    """What ``train_clip`` measured: loss and temperature per step, wall and CPU time in seconds.

    ``cpu_seconds`` is the CPU time of this process (all its threads); on a busy machine it says what the
    run would take on idle cores better than the wall time does.
    """

    loss: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    steps: int = 0
    images_seen: int = 0

    def smoothed_loss(self, window: int = 20) -> np.ndarray:
        """Moving average of the loss (for plots and for "did it fall" checks)."""
        loss = np.asarray(self.loss, dtype=np.float64)
        if len(loss) == 0:
            return loss
        window = max(1, min(window, len(loss)))
        return np.convolve(loss, np.ones(window) / window, mode="valid")


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _normalizer(mean, std) -> Callable[[torch.Tensor], torch.Tensor]:
    if mean is None and std is None:
        return lambda x: x
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return lambda x: (x - m.to(x.device)) / s.to(x.device)


@dataclass
class TrainConfig:
    """The settings of ``train_clip``; every field has a default that trains the tiny CLIP.

    Introduced in lesson 01_clip_concepts.

    Attributes:
        steps: optimiser steps; batches of ``batch_size`` (at least 2: the loss contrasts pairs).
        lr, weight_decay, warmup: AdamW with linear warm-up then cosine decay to 0.
        mean, std: the model's normalisation (``cfg.mean``, ``cfg.std``), applied to each batch; the same
            numbers the model's ``preprocess`` uses, so training and inference see the same inputs.
        callback_every: how often ``train_clip``'s callback is called (in steps).
        seed: seeds the batch order (and the augmentations that draw from the same generator).
        device: where the model trains.
        adversarial_eps, adversarial_steps: if ``adversarial_eps`` > 0, half of every batch is replaced
            by adversarial images: ``adversarial_steps`` steps of projected gradient ascent on the
            contrastive loss within an L2 ball of that radius (a sphere around the image: the total
            pixel change, measured as a Euclidean length, stays below it; pixels in [0, 1]). This is
            Madry et al.'s adversarial training; lesson 04 uses such robust models to guide generation.

    Example:
        >>> TrainConfig(steps=200, batch_size=64).lr
        0.002
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 50
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    callback_every: int = 50
    seed: int = 0
    device: str = "cpu"
    adversarial_eps: float = 0.0
    adversarial_steps: int = 3

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "callback_every", "adversarial_steps"):
            _positive_int(name, getattr(self, name))
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size={self.batch_size}: the contrastive loss needs at least two (image, text) "
                "pairs per batch"
            )
        if (self.mean is None) != (self.std is None):
            raise ValueError(
                "give both mean and std (the model's preprocessing statistics), or neither"
            )
        for name in ("lr", "weight_decay", "adversarial_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.warmup, int) or isinstance(self.warmup, bool) or self.warmup < 0:
            raise ValueError(f"warmup must be a whole number of steps >= 0, got {self.warmup!r}")

    def updated(self, **overrides) -> TrainConfig:
        """A copy with some fields changed; an unknown name is refused with the list of valid ones."""
        known = [f.name for f in fields(self)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise TypeError(
                f"unknown training setting(s) {unknown}: TrainConfig has {', '.join(known)}"
            )
        return replace(self, **overrides)


def train_clip(
    model: torch.nn.Module,
    tokenizer: Callable,
    data,
    config: TrainConfig | None = None,
    callback: Callable[[int, TrainHistory], None] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    progress: bool = True,
    **settings,
) -> TrainHistory:
    """Train ``model`` (an open_clip ``CLIP``) with the symmetric contrastive loss.

    Introduced in lesson 01_clip_concepts.

    Args:
        model: an ``open_clip.model.CLIP`` (tiny or real); trained in place.
        tokenizer: texts -> token ids, e.g. ``lessonlib.models.make_tokenizer(cfg)``.
        data: a Dataset of ``(image tensor in [0, 1], caption)`` such as ``ShapesWorld``, or a function
            ``epoch -> Dataset`` that makes fresh images every epoch.
        config: a ``TrainConfig``; ``settings`` given by keyword (``steps=400``) change its fields.
        callback: called as ``callback(step, history)`` every ``config.callback_every`` steps and at
            the end (``LivePlot`` is one).
        augment: ``(images, generator) -> images`` applied to each batch before anything else (in
            lesson 04: random cutouts like the ones VQGAN+CLIP takes).
        progress: show a tqdm progress bar (``tqdm.auto``: a widget in Jupyter, text elsewhere).

    Returns:
        a ``TrainHistory`` with the loss and temperature of every step.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    config = (config or TrainConfig()).updated(**settings)
    steps, batch_size, lr, warmup = config.steps, config.batch_size, config.lr, config.warmup
    device, adversarial_eps = config.device, config.adversarial_eps
    if not hasattr(model, "encode_image") or not hasattr(model, "logit_scale"):
        raise TypeError(
            f"model must be an open_clip CLIP (encode_image, encode_text, logit_scale), got {type(model).__name__}"
        )
    make_data = (
        data if callable(data) and not hasattr(data, "__getitem__") else (lambda epoch: data)
    )
    first = make_data(0)
    if len(first) < batch_size:
        raise ValueError(
            f"the data set has {len(first)} items, fewer than batch_size={batch_size}: use more images"
        )
    normalize = _normalizer(config.mean, config.std)

    params_decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    params_rest = [
        p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)
    ]
    optimizer = torch.optim.AdamW(
        [
            {"params": params_decay, "weight_decay": config.weight_decay},
            {"params": params_rest, "weight_decay": 0.0},
        ],
        lr=lr,
    )

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    generator = torch.Generator().manual_seed(config.seed)
    history = TrainHistory()
    model.to(device).train()
    start, cpu_start = time.perf_counter(), time.process_time()
    step, epoch = 0, 0
    bar = tqdm(total=steps, desc="training CLIP", disable=not progress, mininterval=1.0)
    while step < steps:
        dataset = first if epoch == 0 else make_data(epoch)
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator
        )
        for images, captions in loader:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            images = images.to(device)
            texts = tokenizer(list(captions)).to(device)
            if augment is not None:
                images = augment(images, generator)
            if adversarial_eps > 0:
                half = len(images) // 2
                attacked = l2_attack(
                    model, images, texts, adversarial_eps, config.adversarial_steps, normalize
                )
                images = torch.cat([images[:half], attacked[half:]])
                model.train()
            images = normalize(images)
            image_features = model.encode_image(images, normalize=True)
            text_features = model.encode_text(texts, normalize=True)
            loss = clip_loss(image_features, text_features, model.logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            history.loss.append(loss.item())
            history.temperature.append(float(1.0 / model.logit_scale.detach().exp()))
            history.lr.append(lr_at(step))
            history.images_seen += len(images)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{history.loss[-1]:.3f}", refresh=False)
            if callback is not None and (step % config.callback_every == 0 or step == steps):
                history.seconds, history.steps = time.perf_counter() - start, step
                callback(step, history)
                model.train()
            if step >= steps:
                break
        epoch += 1
    bar.close()
    history.seconds, history.steps = time.perf_counter() - start, step
    history.cpu_seconds = time.process_time() - cpu_start
    model.eval()
    return history


def l2_attack(
    model,
    images: torch.Tensor,
    texts: torch.Tensor,
    eps: float,
    steps: int = 3,
    normalize: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> torch.Tensor:
    """Images changed within an L2 ball of radius ``eps`` to raise the contrastive loss (PGD).

    Introduced in lesson 04_vqgan_clip. Pixels stay in [0, 1]; each step moves by ``2.5 eps / steps``
    along the normalised gradient and projects back into the ball (Madry et al., 2018). The model is in
    eval mode during the attack; its weights get no gradients.

    Example:
        >>> from lessonlib.models import load_tiny_clip
        >>> model, _, tok = load_tiny_clip()
        >>> x = torch.rand(4, 3, 32, 32)
        >>> adv = l2_attack(model, x, tok(["a red circle"] * 4), eps=0.5)
        >>> bool(((adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-4).all())
        True
    """
    model.eval()
    with torch.no_grad():
        text_features = model.encode_text(texts, normalize=True)
    delta = torch.zeros_like(images)
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        features = model.encode_image(normalize((images + delta).clamp(0, 1)), normalize=True)
        loss = clip_loss(features, text_features, model.logit_scale)
        (grad,) = torch.autograd.grad(loss, delta)
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta.detach() + alpha * grad / norm
        size = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = delta * (eps / size.clamp_min(eps))
        delta = (images + delta).clamp(0, 1) - images
    return (images + delta).detach()


def embed_batch(model, tokenizer, images: torch.Tensor, texts: Sequence[str], mean=None, std=None):
    """Unit-length (image_features, text_features) of a batch in [0, 1], through ``lessonlib.embed``.

    Introduced in lesson 01_clip_concepts.

    Example:
        >>> image_features, text_features = embed_batch(model, tok, images, captions)  # doctest: +SKIP
    """
    from lessonlib.embed import embed_images, embed_texts

    return (
        embed_images(model, _normalizer(mean, std)(images), to_cpu=False),
        embed_texts(model, tokenizer, list(texts), to_cpu=False),
    )


def zero_shot_accuracy(
    model,
    tokenizer,
    preprocess: Callable,
    split: str = "test",
    n: int = 1000,
    seed: int = 12345,
    template: str | Sequence[str] | None = None,
    image_size: int = 32,
) -> float:
    """Top-1 zero-shot accuracy on ``n`` fresh Shapes World images of ``split``.

    Introduced in lesson 01_clip_concepts.

    Each image (passed through ``preprocess``, as a user would) is given the class whose prompt (default
    ``"a {colour} {shape}"``; or a list of one prompt per class, e.g. ``urdu.class_prompts_ur()``) has
    the highest cosine similarity, out of all colour x shape classes
    (held-out pairs included); it is correct if that is the colour and shape of its main object. The
    classifier and the embeddings are lesson 02's (``zeroshot.zero_shot_classifier``,
    ``embed.embed_images``), so both lessons score a model the same way.

    Example:
        >>> from lessonlib.models import load_tiny_clip
        >>> model, preprocess, tok = load_tiny_clip()
        >>> zero_shot_accuracy(model, tok, preprocess, "held_out", n=100) > 0.5
        True
    """
    from lessonlib.data import SIMPLE_TEMPLATE, ShapesWorld, class_names
    from lessonlib.embed import embed_images
    from lessonlib.zeroshot import zero_shot_classifier

    template = SIMPLE_TEMPLATE if template is None else template
    prompts = class_names(template) if isinstance(template, str) else list(template)
    if len(prompts) != len(class_names()):
        raise ValueError(
            f"template: give a format string or one prompt per class ({len(class_names())}, "
            f"colour-major as data.class_names()), got {len(prompts)} prompts"
        )
    n = _positive_int("n", n)
    ds = ShapesWorld(
        n, split=split, seed=seed, image_size=image_size, detail="simple", transform=preprocess
    )
    classes = zero_shot_classifier(model, tokenizer, prompts, templates="{}")
    predicted = (embed_images(model, ds) @ classes.to(torch.float32)).argmax(1)
    return float((predicted == torch.from_numpy(ds.class_indices())).float().mean())


class LivePlot:
    """Callback for ``train_clip`` that redraws the loss curve and a probe batch's similarity matrix.

    Introduced in lesson 01_clip_concepts.

    In Jupyter the figure is redrawn in place (``IPython.display``); elsewhere (tests, scripts) nothing is
    drawn unless ``headless_ok=True``, in which case the figure is still updated (e.g. to save it).

    Example:
        >>> live = LivePlot(model=None, tokenizer=None, images=None, texts=["a red circle"])  # doctest: +SKIP
    """

    def __init__(
        self,
        model,
        tokenizer,
        images: torch.Tensor,
        texts: Sequence[str],
        mean=None,
        std=None,
        headless_ok: bool = False,
    ) -> None:
        if images is not None and len(images) != len(texts):
            raise ValueError(
                f"{len(images)} probe images but {len(texts)} probe texts: give one caption per image"
            )
        self.model, self.tokenizer = model, tokenizer
        self.images, self.texts = images, list(texts)
        self.mean, self.std = mean, std
        self.interactive = _in_notebook()
        self.active = self.interactive or headless_ok
        self.fig = None
        self._image = None  # the heat-map, drawn on the first call
        self._handle = None
        self.diagonal: list[tuple[int, float]] = []

    def similarity(self) -> torch.Tensor:
        """The probe batch's cosine-similarity matrix under the current weights."""
        image_features, text_features = embed_batch(
            self.model, self.tokenizer, self.images, self.texts, self.mean, self.std
        )
        return similarity_matrix(image_features, text_features, normalize=False)

    def __call__(self, step: int, history: TrainHistory) -> None:
        sim = self.similarity()
        self.diagonal.append((step, diagonal_accuracy(sim)))
        if not self.active:
            return
        import matplotlib.pyplot as plt

        if self.fig is None:
            self.fig, self.axes = plt.subplots(1, 2, figsize=(10, 4.5))
            if self.interactive:
                plt.close(self.fig)  # we show it ourselves, once per update
            ax_sim = self.axes[1]
            # Drawn once, then only its data changes: the colourbar keeps one fixed scale (-1 to 1).
            self._image = ax_sim.imshow(sim.numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
            self.fig.colorbar(self._image, ax=ax_sim, label="cosine similarity")
            ax_sim.set_xlabel("caption")
            ax_sim.set_ylabel("image of")
            ax_sim.set_xticks(range(len(self.texts)))
            ax_sim.set_xticklabels(self.texts, rotation=90, fontsize=8)
            ax_sim.set_yticks(range(len(self.texts)))
            ax_sim.set_yticklabels(self.texts, fontsize=8)
        ax_loss, ax_sim = self.axes
        ax_loss.clear()
        ax_loss.plot(history.loss, color="0.75", label="per batch")
        smooth = history.smoothed_loss()
        ax_loss.plot(
            np.arange(len(smooth)) + (len(history.loss) - len(smooth)),
            smooth,
            label="moving average",
        )
        ax_loss.set_title(f"contrastive loss, step {step}")
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel("loss")
        ax_loss.legend(loc="upper right")
        self._image.set_data(sim.numpy())
        ax_sim.set_title(f"probe batch similarity (diagonal hits {self.diagonal[-1][1]:.0%})")
        self.fig.tight_layout()
        if self.interactive:  # redraw in place; the progress bar above it stays
            from IPython.display import display

            if self._handle is None:
                self._handle = display(self.fig, display_id=True)
            else:
                self._handle.update(self.fig)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"
