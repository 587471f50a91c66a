"""Train the tiny code prior of lesson 05: ``python -m lessonlib.train_tiny_prior``.

Introduced in lesson 04_vqgan_clip; taught in lesson 05_dalle.

Data: Shapes World scenes (by default 80% one object, 20% two) with captions of every form
(``lessonlib.data.caption``), each scene turned into its VQGAN code grid by the VQGAN's encoder.
Loss: cross-entropy of each code given the caption and the codes before it (teacher forcing); with
probability ``p_uncond`` the caption is blanked, so the same model also learns the unconditional
distribution that classifier-free guidance needs.

At the end the trainer measures what matters: the prior's samples for all 48 prompts
"a {size} {colour} {shape}", judged by ``lessonlib.judge`` (no CLIP involved), and the held-out loss.

Example:
    python -m lessonlib.train_tiny_prior --steps 2500 --out lessonlib/weights/tiny_prior.safetensors
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lessonlib.prior import (
    TINY_PRIOR_VQGAN,
    TINY_PRIOR_WEIGHTS,
    CodePrior,
    PriorConfig,
    codes_to_images,
    save_prior,
)
from lessonlib.tokenizer import PAD_ID

# Caption forms while training: more of the forms that name size, colour and shape together.
PRIOR_DETAIL_WEIGHTS = {
    "shape": 0.1,
    "colour": 0.1,
    "simple": 0.2,
    "size": 0.3,
    "position": 0.1,
    "full": 0.2,
}


def make_code_data(
    vqgan,
    tokenizer,
    n: int,
    seed: int,
    split: str = "all",
    two_objects: float = 0.2,
    batch: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Shapes World scenes as (caption token ids (n, text_len), codes (n, grid_h * grid_w))."""
    from lessonlib.data import ShapesWorld

    if not 0 <= two_objects <= 1:
        raise ValueError(f"two_objects must be a fraction in [0, 1], got {two_objects!r}")
    size = vqgan.config.resolution
    n2 = int(round(n * two_objects))
    parts = [
        ShapesWorld(
            n - n2,
            split=split,
            seed=seed,
            image_size=size,
            max_objects=1,
            detail_weights=PRIOR_DETAIL_WEIGHTS,
        ),
    ]
    if n2:
        parts.append(
            ShapesWorld(
                n2,
                split=split,
                seed=seed + 1,
                image_size=size,
                max_objects=2,
                detail_weights=PRIOR_DETAIL_WEIGHTS,
            )
        )
    captions = [c for ds in parts for c in ds.captions]
    texts = tokenizer(captions)
    codes = []
    with torch.no_grad():
        for ds in parts:
            for first in range(0, len(ds), batch):
                idx = range(first, min(first + batch, len(ds)))
                x = torch.from_numpy(np.stack([ds.array(i) for i in idx])).permute(0, 3, 1, 2)
                x = x.float().div(127.5).sub(1)
                codes.append(vqgan.encode_to_codes(x).reshape(len(idx), -1))
    return texts, torch.cat(codes)


def judge_samples(
    prior: CodePrior, vqgan, prompts: list[str], seed: int = 0, **sample_kwargs
) -> dict:
    """Sample one picture per prompt and judge it: rates of colour, shape, size and all right."""
    from lessonlib.judge import _rates, judge

    codes = prior.sample(prompts, n=1, seed=seed, **sample_kwargs)
    images = codes_to_images(vqgan, codes)
    verdicts = [
        judge(im.mul(255).round().byte().permute(1, 2, 0).numpy(), p)
        for im, p in zip(images, prompts)
    ]
    return _rates(verdicts)


@dataclass
class PriorTraining:
    """The settings of one ``train`` run of the code prior (its architecture is a ``PriorConfig``).

    Introduced in lesson 04_vqgan_clip.

    Example:
        >>> PriorTraining(steps=100).batch_size
        32
    """

    steps: int = 2500
    batch_size: int = 32
    lr: float = 1e-3
    n_train: int = 60000  # captioned scenes encoded to codes once, then sampled from
    seed: int = 0
    split: str = "all"  # "train" keeps lesson 01's held-out colour + shape pairs out
    two_objects: float = 0.2  # share of scenes with two objects
    bf16: bool = False  # autocast the forward pass to bfloat16 (faster on CPUs with native bf16)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "n_train"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


def train(
    vqgan,
    settings: PriorTraining | None = None,
    config: PriorConfig | None = None,
    init: CodePrior | None = None,
    progress: bool = True,
) -> tuple[CodePrior, dict]:
    """Train a ``CodePrior`` on ``vqgan``'s codes of Shapes World; returns it and training facts.

    ``config`` is the architecture (default: one that fits ``vqgan``); ``init`` continues training this
    prior (its config is kept) instead of starting from scratch.
    """
    settings = settings or PriorTraining()
    steps, batch_size, lr, seed = settings.steps, settings.batch_size, settings.lr, settings.seed
    n_train, split, two_objects, bf16 = (
        settings.n_train,
        settings.split,
        settings.two_objects,
        settings.bf16,
    )
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    f = vqgan.factor
    grid = (vqgan.config.resolution // f, vqgan.config.resolution // f)
    if init is not None:
        config = init.config
        prior = init.train().requires_grad_(True)
    else:
        config = config or PriorConfig(n_codes=vqgan.config.n_embed, grid=grid)
        prior = CodePrior(config)
    t0 = time.perf_counter()
    texts, codes = make_code_data(
        vqgan, prior.tokenizer, n_train, seed=seed, split=split, two_objects=two_objects
    )
    data_seconds = time.perf_counter() - t0
    decay = [p for n, p in prior.named_parameters() if p.dim() >= 2 and "emb" not in n]
    other = [p for n, p in prior.named_parameters() if not (p.dim() >= 2 and "emb" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )
    warmup = min(100, steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    history = []
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="tiny prior", disable=not progress, mininterval=2)
    prior.train()
    for step in bar:
        idx = torch.randint(len(codes), (batch_size,), generator=gen)
        text, target = texts[idx].clone(), codes[idx].long()
        blank = torch.rand(batch_size, generator=gen) < config.p_uncond
        text[blank] = PAD_ID
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = prior.loss(text, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            history.append((step, round(loss.item(), 4)))
            bar.set_postfix(loss=f"{loss.item():.3f}")
    facts = {
        **asdict(settings),
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(time.perf_counter() - start, 1),
        "history": history,
    }
    return prior.eval().requires_grad_(False), facts


@torch.no_grad()
def held_out_loss(prior: CodePrior, vqgan, n: int = 1000, seed: int = 1000) -> float:
    """Mean cross-entropy (nats per code) on ``n`` fresh scenes."""
    texts, codes = make_code_data(vqgan, prior.tokenizer, n, seed=seed)
    total = 0.0
    for first in range(0, n, 200):
        part = slice(first, first + 200)
        total += prior.loss(texts[part], codes[part].long()).item() * len(texts[part])
    return total / n


def main(argv: list[str] | None = None) -> None:
    from lessonlib.checkpoints import file_sha256, weights_info
    from lessonlib.judge import object_prompts
    from lessonlib.vqgan import load_vqgan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--vqgan",
        type=Path,
        default=TINY_PRIOR_VQGAN,
        help="the VQGAN whose codes the prior writes (default: the f2 tiny VQGAN)",
    )
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-train", type=int, default=60000)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--p-uncond", type=float, default=0.1)
    parser.add_argument(
        "--split",
        choices=("all", "train"),
        default="all",
        help="'train' keeps lesson 01's held-out colour + shape pairs out",
    )
    parser.add_argument(
        "--two-objects",
        type=float,
        default=0.2,
        help="fraction of training scenes with two objects",
    )
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="continue training this prior (saved by save_prior; same VQGAN)",
    )
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPUs with bf16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=TINY_PRIOR_WEIGHTS)
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "n_train", "d_model", "layers", "heads", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.p_uncond < 1:
        parser.error(f"--p-uncond must be in [0, 1), got {args.p_uncond}")
    if not 0 <= args.two_objects <= 1:
        parser.error(f"--two-objects must be a fraction in [0, 1], got {args.two_objects}")
    if not args.vqgan.is_file():
        parser.error(
            f"--vqgan {args.vqgan}: no such file (train one with lessonlib.train_tiny_vqgan)"
        )
    torch.set_num_threads(args.threads)
    vqgan = load_vqgan(args.vqgan)
    init = None
    if args.init is not None:
        from lessonlib.prior import load_prior

        init, _ = load_prior(args.init, args.vqgan)  # refuses a prior made for another VQGAN
    f = vqgan.factor
    try:
        config = PriorConfig(
            n_codes=vqgan.config.n_embed,
            grid=(vqgan.config.resolution // f, vqgan.config.resolution // f),
            d_model=args.d_model,
            n_layer=args.layers,
            n_head=args.heads,
            p_uncond=args.p_uncond,
        )
    except ValueError as err:
        parser.error(str(err))
    settings = PriorTraining(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        n_train=args.n_train,
        seed=args.seed,
        split=args.split,
        two_objects=args.two_objects,
        bf16=args.bf16,
    )
    prior, facts = train(vqgan, settings, config=config, init=init)
    quality = {"held_out_nats_per_code": round(held_out_loss(prior, vqgan), 4)}
    prompts = object_prompts(48, seed=0)
    t0 = time.perf_counter()
    quality["judge_48_prompts"] = judge_samples(prior, vqgan, prompts, seed=0)
    quality["sample_seconds_48"] = round(time.perf_counter() - t0, 1)
    command = (
        f"python -m lessonlib.train_tiny_prior --vqgan {args.vqgan.name} --steps {args.steps} "
        f"--batch-size {args.batch_size} --lr {args.lr} --n-train {args.n_train} "
        f"--d-model {args.d_model} --layers {args.layers} --heads {args.heads} "
        f"--p-uncond {args.p_uncond} --split {args.split} --two-objects {args.two_objects} "
        f"--seed {args.seed} --threads {args.threads}"
        + (" --bf16" if args.bf16 else "")
        + f" --out {args.out.name}"
        + (f" --init {args.init.name}" if args.init is not None else "")
    )
    if init is not None:  # how the starting point was made, so the whole recipe stays on record
        before = weights_info(args.init)
        command = f"{before.get('command', args.init.name)} && {command}"
        facts["init"] = {"file": args.init.name, "training": before.get("training")}
    save_prior(
        prior,
        args.out,
        command=command,
        extra={
            "vqgan": args.vqgan.name,
            "vqgan_sha256": file_sha256(args.vqgan),
            "training": facts,
            "quality": quality,
        },
    )
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); quality: {quality}")


if __name__ == "__main__":
    main()
