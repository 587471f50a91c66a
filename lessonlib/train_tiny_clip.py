"""Reproduce the shipped tiny CLIP: ``python -m lessonlib.train_tiny_clip``.

Introduced in lesson 01_clip_concepts.

Trains ``TinyCLIPConfig()`` from scratch on fresh Shapes World training images (held-out pairs never
shown), measures zero-shot top-1 accuracy with the prompt ``"a {colour} {shape}"`` over all colour x shape
classes on fresh test images of seen pairs and of held-out pairs, and writes
``lessonlib/weights/tiny_clip.safetensors`` (fp16) and ``tiny_clip.json`` (config, command, numbers).

The recipe (``DEFAULTS``): 1,600 steps of 128 images, captions of mixed detail, and every image whose
caption names no colour redrawn in grey or cyan (``RecolourWhenColourUnsaid``), which is what lifts the
held-out accuracy from about 54% to over 80% (experiments in BENCHMARKS.md). One torch thread: for a
model this small, two threads were many times slower on the course's 2-core machine.

    python -m lessonlib.train_tiny_clip                      # the shipped model
    python -m lessonlib.train_tiny_clip --steps 300 --out /tmp/quick.safetensors

Lesson 04's critic (``lessonlib.critics.load_tiny_guides``) adds four more, each ``.json`` holding its
command: two from other seeds (``--seed 1``, ``--seed 2``) and two fine-tuned from the shipped model
adversarially (``--init shipped --adversarial-eps 1.0 --augment --steps 1500 --lr 5e-4 --warmup 0
--seed 7``, and ``--adversarial-eps 0.5 ... --seed 8``).

Options for critics (lesson 04; measured in BENCHMARKS.md): ``--split all`` trains on every colour +
shape pair (lesson 01's models never see the held-out pairs, so they guide poorly towards them),
``--blur SIGMA`` blurs half of every batch (sigma up to SIGMA pixels) so that shapes are read from
their outline, not from a few edge pixels, and ``--copies P`` draws the main object two or three
times in a fraction P of the scenes, captioned as such (``augment.RepeatTheObject``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

from lessonlib.augment import RecolourWhenColourUnsaid, RepeatTheObject, ReshapeWhenShapeUnsaid
from lessonlib.data import ShapesWorld, class_names
from lessonlib.environment import seed_everything
from lessonlib.models import (
    TINY_CLIP_WEIGHTS,
    TinyCLIPConfig,
    add_words,
    build_tiny_clip,
    count_parameters,
    freeze_image_tower,
    load_tiny_clip,
    load_tiny_clip_config,
    make_tokenizer,
    save_tiny_clip,
    train_new_words_only,
)
from lessonlib.tokenizer import DEFAULT_WORDS
from lessonlib.train import train_clip, zero_shot_accuracy
from lessonlib.urdu import WORDS_UR, Bilingual, class_prompts_ur

# The recipe of the shipped model (every value is also a command-line option).
DEFAULTS = {
    "steps": 1600,
    "batch_size": 128,
    "lr": 2e-3,
    "weight_decay": 0.05,
    "warmup": 50,
    "images_per_epoch": 12800,
    "max_objects": 1,
    "seed": 0,
    "eval_images": 2000,
    "recolour": 1.0,
    "reshape": 0.0,
    "adversarial_eps": 0.0,
    "adversarial_steps": 3,
    "split": "train",
    "copies": 0.0,
    "blur": 0.0,
    "urdu": 0.0,
}


def training_data(
    images_per_epoch: int,
    seed: int,
    image_size: int,
    split: str = "train",
    max_objects: int = 1,
    detail_weights: dict[str, float] | None = None,
    augment: dict[str, float] | None = None,
    urdu: float = 0.0,
):
    """``epoch -> ShapesWorld``: fresh training images every epoch.

    ``urdu`` is the share of captions told in Urdu (``lessonlib.urdu.Bilingual``): the bilingual tiny
    CLIP of lesson 02 reads both languages.

    ``split="train"`` (lesson 01's models) never shows a held-out pair; ``"all"`` shows every pair
    (lesson 04's critics, which must know every prompt they are asked to draw). ``augment`` gives the
    share of scenes each caption-aware augmentation touches: ``{"copies": p, "reshape": p,
    "recolour": p}`` (see ``lessonlib.augment``); a missing name means 0.

    Example:
        >>> training_data(400, 0, 32, augment={"recolour": 1.0})(0)[0][1]  # doctest: +SKIP
        'a small grey circle at the top'
    """
    augment = dict(augment or {})
    unknown = sorted(set(augment) - {"copies", "reshape", "recolour"})
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}: use copies, reshape or recolour")
    copies, reshape, recolour = (augment.get(k, 0.0) for k in ("copies", "reshape", "recolour"))
    if split not in ("train", "all"):
        raise ValueError(f"split {split!r}: train on 'train' (held-out pairs never shown) or 'all'")

    def make(epoch: int):
        world = ShapesWorld(
            images_per_epoch,
            split=split,
            seed=seed * 100_000 + epoch,
            image_size=image_size,
            max_objects=max_objects,
            detail="random",
            detail_weights=detail_weights,
        )
        if urdu > 0:
            world = Bilingual(
                world, share=urdu, seed=seed * 100_000 + epoch, weights=detail_weights
            )
        if copies > 0:
            world = RepeatTheObject(world, p=copies, seed=seed * 100_000 + epoch)
        if reshape > 0:
            world = ReshapeWhenShapeUnsaid(world, p=reshape, seed=seed * 100_000 + epoch)
        if recolour > 0:
            world = RecolourWhenColourUnsaid(world, p=recolour, seed=seed * 100_000 + epoch)
        return world

    return make


def _cutout_augment(image_size: int):
    """``(images, generator) -> images``: one random cutout per image, as generation takes them."""
    from lessonlib.generate_parts import Cutouts

    cut = Cutouts(image_size, scale=(0.8, 1.0), rotate_degrees=15, noise=0.1)

    def augment(images, generator):
        return torch.cat([cut(images[i : i + 1], 1, generator) for i in range(len(images))]).clamp(
            0, 1
        )

    return augment


def _blur_augment(max_sigma: float, p: float = 0.5):
    """``(images, generator) -> images``: a fraction ``p`` of the images blurred, sigma in [0, max_sigma].

    A VQGAN's pictures are softer than Shapes World's crisp renders. Critics trained only on crisp
    renders read shapes from a few edge pixels (lesson 04 measured the shipped tiny CLIP's shape accuracy
    fall from 97% to 56% at sigma 0.7), and guiding with such fragile cues draws blobs. Trained on
    blurred copies too, a critic has to read a shape from its outline.
    """
    if not max_sigma > 0:
        raise ValueError(f"blur must be a positive sigma in pixels, got {max_sigma!r}")
    radius = max(1, math.ceil(2 * max_sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)

    def augment(images, generator):
        n, c = images.shape[:2]
        sigma = torch.rand(n, generator=generator) * max_sigma
        keep = torch.rand(n, generator=generator) >= p
        kernel = torch.exp(-0.5 * (offsets[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
        kernel = kernel / kernel.sum(1, keepdim=True)
        kernel[keep] = (offsets == 0).float()  # these images stay crisp
        k = kernel.to(images).repeat_interleave(c, 0)  # one 1-D kernel per image and channel
        x = images.reshape(1, n * c, *images.shape[2:])
        x = F.conv2d(
            F.pad(x, (radius, radius, 0, 0), mode="replicate"), k[:, None, None, :], groups=n * c
        )
        x = F.conv2d(
            F.pad(x, (0, 0, radius, radius), mode="replicate"), k[:, None, :, None], groups=n * c
        )
        return x.reshape(images.shape)

    return augment


def _compose(*augments):
    """Apply the given augmentations in order (``None`` entries skipped); ``None`` if there are none."""
    steps = [a for a in augments if a is not None]
    if not steps:
        return None

    def augment(images, generator):
        for step in steps:
            images = step(images, generator)
        return images

    return augment


def _load_average() -> list[float] | None:
    """1/5/15-minute load averages (other programs competing for the cores), where the OS reports them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name, value in DEFAULTS.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 is fastest for this tiny model (BENCHMARKS.md, lesson 01)",
    )
    p.add_argument("--out", default=str(TINY_CLIP_WEIGHTS), help="where to write the .safetensors")
    p.add_argument(
        "--config", default=None, help="JSON dict of TinyCLIPConfig overrides (experiments)"
    )
    p.add_argument("--detail-weights", default=None, help="JSON dict of caption-form weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs)")
    p.add_argument(
        "--init",
        default=None,
        help="start from these weights (a tiny CLIP .safetensors; 'shipped' for the shipped one) "
        "instead of from scratch: fine-tuning, e.g. adversarially (lesson 04's robust guides)",
    )
    p.add_argument(
        "--augment",
        action="store_true",
        help="train on random cutouts (scale 0.8-1, 15 degrees, flips, noise up to 0.1), as "
        "VQGAN+CLIP sees its pictures",
    )
    p.add_argument(
        "--freeze-image",
        action="store_true",
        help="train the text tower only (with --init shipped --urdu 0.5: the bilingual tiny CLIP)",
    )
    p.add_argument(
        "--new-words-only",
        action="store_true",
        help="with --init and --urdu: train only the new words' vectors (English answers unchanged)",
    )
    args = p.parse_args(argv)
    if args.new_words_only and not (args.init and args.urdu > 0):
        p.error("--new-words-only needs --init (a trained model) and --urdu > 0 (the new words)")
    if args.split not in ("train", "all"):
        p.error(f"--split {args.split!r}: choose 'train' (held-out pairs never shown) or 'all'")
    if not args.blur >= 0:
        p.error(f"--blur {args.blur!r}: give a sigma in pixels >= 0 (0 = no blur)")
    if not 0 <= args.copies <= 1:
        p.error(f"--copies {args.copies!r}: give a probability in [0, 1]")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    if args.init:
        init_path = None if args.init == "shipped" else args.init
        model, _, tokenizer = load_tiny_clip(init_path)
        cfg = TinyCLIPConfig.from_dict(load_tiny_clip_config(init_path)["config"])
        if args.urdu > 0:  # new rows of the token embedding for the Urdu words
            known = model.token_embedding.num_embeddings
            model, cfg = add_words(model, cfg, WORDS_UR, seed=args.seed)
            tokenizer = make_tokenizer(cfg)
            if args.new_words_only:
                train_new_words_only(model, known)
        model.train()
    else:
        overrides = json.loads(args.config) if args.config else {}
        if args.urdu > 0 and "words" not in overrides:  # the bilingual vocabulary
            overrides["words"] = list(DEFAULT_WORDS) + [
                w for w in WORDS_UR if w not in DEFAULT_WORDS
            ]
        cfg = TinyCLIPConfig(**overrides)
        model, tokenizer = build_tiny_clip(cfg), make_tokenizer(cfg)
    if args.freeze_image:
        freeze_image_tower(model)
    print(
        f"tiny CLIP: {count_parameters(model):,} parameters, {cfg.vision_tower} vision tower"
        + (" (frozen)" if not any(p.requires_grad for p in model.visual.parameters()) else ""),
        flush=True,
    )

    detail_weights = json.loads(args.detail_weights) if args.detail_weights else None
    data = training_data(
        args.images_per_epoch,
        args.seed,
        cfg.image_size,
        split=args.split,
        max_objects=args.max_objects,
        detail_weights=detail_weights,
        augment={"copies": args.copies, "reshape": args.reshape, "recolour": args.recolour},
        urdu=args.urdu,
    )
    history = train_clip(
        model,
        tokenizer,
        data,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        mean=cfg.mean,
        std=cfg.std,
        progress=not args.no_progress,
        seed=args.seed,
        adversarial_eps=args.adversarial_eps,
        adversarial_steps=args.adversarial_steps,
        augment=_compose(
            _blur_augment(args.blur) if args.blur > 0 else None,
            _cutout_augment(cfg.image_size) if args.augment else None,
        ),
    )
    print(
        f"trained {history.steps} steps in {history.seconds:.0f} s (CPU {history.cpu_seconds:.0f} s); final loss {history.smoothed_loss()[-1]:.3f}"
    )

    command = "python -m lessonlib.train_tiny_clip " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    metadata = {
        "command": command.strip(),
        "recipe": {k: getattr(args, k) for k in DEFAULTS}
        | {"freeze_image": args.freeze_image, "new_words_only": args.new_words_only},
        "detail_weights": detail_weights,
        "train_seconds": round(history.seconds, 1),
        "train_cpu_seconds": round(history.cpu_seconds, 1),
        "load_average_during_training": _load_average(),
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "final_loss": round(float(history.smoothed_loss()[-1]), 4),
        "parameters": count_parameters(model),
    }
    path = save_tiny_clip(model, cfg, args.out, half=True, metadata=metadata)

    # Score the model as users get it: reloaded from the fp16 file, images through its preprocess.
    loaded, preprocess, tokenizer = load_tiny_clip(path)
    start = time.perf_counter()
    results = {
        split: zero_shot_accuracy(
            loaded, tokenizer, preprocess, split=split, n=args.eval_images, seed=777
        )
        for split in ("test", "held_out")
    }
    metadata["accuracy"] = {
        "seen_pairs": results["test"],
        "held_out_pairs": results["held_out"],
        "images_per_split": args.eval_images,
        "prompt": "a {colour} {shape}",
        "eval_seed": 777,
    }
    if args.urdu > 0:  # the same images, Urdu prompts ("ایک نیلی تکون", adjectives agreeing)
        metadata["accuracy_urdu"] = {
            split: zero_shot_accuracy(
                loaded, tokenizer, preprocess, split, args.eval_images, 777, class_prompts_ur()
            )
            for split in ("test", "held_out")
        }
        metadata["accuracy_urdu"]["prompt"] = "ایک {colour} {shape}"
    save_tiny_clip(model, cfg, path, half=True, metadata=metadata)
    print(
        f"zero-shot top-1 over all {len(class_names())} colour x shape classes, {args.eval_images} images each: "
        f"seen pairs {results['test']:.1%}, held-out pairs {results['held_out']:.1%} "
        f"(eval {time.perf_counter() - start:.0f} s); wrote {path} ({path.stat().st_size / 1e6:.2f} MB)"
    )
    if args.urdu > 0:
        urdu = metadata["accuracy_urdu"]
        print(f"Urdu prompts: seen pairs {urdu['test']:.1%}, held-out pairs {urdu['held_out']:.1%}")
    return metadata


if __name__ == "__main__":
    main()
