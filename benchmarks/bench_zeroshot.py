"""Lesson 02 benchmark: one template vs prompt ensembles on Shapes World, and zero-shot speed.

Run from the repository root (2 threads, like the course's target laptop):

    .venv/bin/python benchmarks/bench_zeroshot.py

Prints two markdown tables for BENCHMARKS.md:

1. top-1 / top-5 zero-shot accuracy of the shipped tiny CLIP on ``--n`` Shapes World test images of
   seen colour/shape pairs and ``--n`` images of held-out pairs, for one template against ensembles;
2. wall time to classify ``--n`` images (render + preprocess + embed + classify) in batches, against
   ``--n-single`` images one at a time, interleaved in the same run (median of ``--repeats``), compared
   per image; and the time ``load_clip("ViT-B-32")`` takes to fall back to the tiny model offline.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time

import torch

from lessonlib import data, embed, metrics
from lessonlib import zeroshot as zs
from lessonlib.registry import load_clip

TEMPLATE_SETS = {
    "one template: 'a {}'": ("a {}",),
    "one template: 'a photo of a {}.'": zs.SINGLE_TEMPLATE,
    "ensemble: 'shapes' (7)": zs.SHAPES_TEMPLATES,
    "ensemble: CLIP's 7 (ImageNet words)": zs.CLIP_TEMPLATES_7,
    "ensemble: CLIP's 80 (ImageNet words)": zs.IMAGENET_TEMPLATES_80,
}


def accuracy_table(model, preprocess, tokenizer, n: int, seed: int) -> list[str]:
    names = data.class_names()
    splits = {
        "seen": data.ShapesWorld(n, split="test", seed=seed, transform=preprocess),
        "held-out": data.ShapesWorld(n, split="held_out", seed=seed, transform=preprocess),
    }
    features = {k: embed.embed_images(model, ds) for k, ds in splits.items()}
    scale = zs.logit_scale(model)
    rows = [
        "| templates | seen top-1 | seen top-5 | held-out top-1 | held-out top-5 |",
        "|---|---|---|---|---|",
    ]
    for label, templates in TEMPLATE_SETS.items():
        weights = zs.zero_shot_classifier(model, tokenizer, names, templates)
        cells = []
        for split, ds in splits.items():
            acc = metrics.topk_accuracy(
                zs.classify(features[split], weights, scale), ds.class_indices()
            )
            cells += [f"{acc[1]:.3f}", f"{acc[5]:.3f}"]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    rows.append(
        f"\nchance: top-1 {1 / len(names):.3f}, top-5 {5 / len(names):.3f} ({len(names)} classes)"
    )
    return rows


def classify_all(model, preprocess, weights, n: int, seed: int, batch_size: int) -> torch.Tensor:
    ds = data.ShapesWorld(n, split="test", seed=seed, transform=preprocess)
    features = embed.embed_images(model, ds, batch_size=batch_size)
    return zs.classify(features, weights, zs.logit_scale(model))


def timing_table(model, preprocess, tokenizer, n: int, seed: int, repeats: int, n_single: int):
    weights = zs.zero_shot_classifier(model, tokenizer, data.class_names(), "a {}")
    runs = {"batched": (n, 256), "single": (n_single, 1)}  # one at a time is slow: fewer images
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for key, (count, batch_size) in runs.items():  # interleaved, so background load hits both
            start = time.perf_counter()
            probs = classify_all(model, preprocess, weights, count, seed, batch_size)
            times[key].append(time.perf_counter() - start)
            assert probs.shape == (count, len(data.class_names()))
    t0 = time.perf_counter()
    ds = data.ShapesWorld(n, split="test", seed=seed, transform=preprocess)
    _ = [ds[i] for i in range(n)]
    render = time.perf_counter() - t0
    batched = statistics.median(times["batched"])
    single = statistics.median(times["single"])
    per_batched, per_single = batched / n * 1000, single / n_single * 1000
    return [
        f"| step (median of {repeats} interleaved runs) | seconds | ms per image |",
        "|---|---|---|",
        f"| render + preprocess only, {n} images | {render:.2f} | {render / n * 1000:.2f} |",
        f"| zero-shot of {n} images, batches of 256 (render + preprocess + embed + classify) "
        f"| {batched:.2f} | {per_batched:.2f} |",
        f"| zero-shot of {n_single} images, one at a time | {single:.2f} | {per_single:.2f} |",
        f"| ratio one-at-a-time / batched (per image) | | {per_single / per_batched:.1f}x |",
        f"| target: {n} images in at most 10 s, batched | {'met' if batched <= 10 else 'MISSED'} | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--n-single", type=int, default=200, help="images for the one-at-a-time run"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.environ["LESSONLIB_MODE"] = "offline"
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as said:
        model, preprocess, tokenizer = load_clip("ViT-B-32", device="cpu")  # offline: falls back
    fallback = time.perf_counter() - start
    print(f"load_clip('ViT-B-32') in offline mode: {fallback:.2f} s -> {said.getvalue().strip()!r}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("\n".join(accuracy_table(model, preprocess, tokenizer, args.n, args.seed)))
    print()
    print(
        "\n".join(
            timing_table(
                model, preprocess, tokenizer, args.n, args.seed, args.repeats, args.n_single
            )
        )
    )


if __name__ == "__main__":
    main()
