"""How fast Shapes World renders, on one core, side by side with a plain PIL.ImageDraw renderer.

    .venv/bin/python benchmarks/bench_shapes_world.py [--n 4000] [--repeats 3]

Prints images per second (best of ``--repeats``) for:
  * ``render`` (mask pasting, this library) -> PIL image,
  * ``ShapesWorld[i]`` -> float tensor (what ``train_clip`` consumes),
  * ``ShapesWorld[i]`` with the tiny CLIP's ``preprocess`` (what evaluation uses),
  * a straightforward ``PIL.ImageDraw`` renderer of the same scenes at 4x supersampling (the baseline
    one would write first; anti-aliasing by drawing large and downscaling),
and the ratios to the baseline. The issue's target: at least 2,000 images per second on one core.

    .venv/bin/python benchmarks/bench_shapes_world.py --live-run [--threads 2]

instead times the notebook's live training run (the recipe of lesson 01, section 5: 400 steps of 64
images) and prints its wall time, CPU time and zero-shot accuracy on 1,000 fresh images per split.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from PIL import Image, ImageDraw

from lessonlib.data import COLOUR_RGB, POSITIONS, ShapesWorld, render
from lessonlib.models import TinyCLIPConfig, make_preprocess

SIZE_FRACTION = {"small": 0.19, "large": 0.31}


def render_with_imagedraw(objects, image_size: int = 32, supersample: int = 4) -> Image.Image:
    """Baseline: draw each shape with ImageDraw on a large canvas, then downscale (anti-aliasing)."""
    big = image_size * supersample
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    cell = big / 3
    for obj in objects:
        side = SIZE_FRACTION[obj.size] * big
        row, col = divmod(POSITIONS.index(obj.position), 3)
        cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
        x0, y0, x1, y1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
        colour = tuple(int(min(255, c * obj.shade)) for c in COLOUR_RGB[obj.colour])
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif obj.shape == "triangle":
            draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
        else:
            w = side * 0.15
            draw.rectangle((cx - w, y0, cx + w, y1), fill=colour)
            draw.rectangle((x0, cy - w, x1, cy + w), fill=colour)
    return image.resize((image_size, image_size), Image.Resampling.BOX)


def rate(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, time.perf_counter() - start)
    return n / best


def live_run(threads: int) -> None:
    """The live run of notebooks/01_clip_concepts.ipynb, section 5, timed."""
    from lessonlib import augment, data, models, train

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = models.TinyCLIPConfig()
    model, tokenizer = models.build_tiny_clip(cfg), models.make_tokenizer(cfg)

    def fresh_images(epoch):
        world = data.ShapesWorld(6400, split="train", seed=1000 + epoch, detail="random")
        return augment.RecolourWhenColourUnsaid(world, seed=epoch)

    history = train.train_clip(
        model, tokenizer, fresh_images, steps=400, batch_size=64, lr=3e-3, warmup=30,
        mean=cfg.mean, std=cfg.std, progress=False, seed=0,
    )  # fmt: skip
    preprocess = models.make_preprocess(cfg)
    seen = train.zero_shot_accuracy(model, tokenizer, preprocess, "test", n=1000, seed=5)
    held = train.zero_shot_accuracy(model, tokenizer, preprocess, "held_out", n=1000, seed=5)
    print(f"live run (400 steps x 64 images, {threads} thread(s)): wall {history.seconds:.0f} s, "
          f"CPU {history.cpu_seconds:.0f} s, load average {os.getloadavg()[0]:.1f}; "
          f"zero-shot seen pairs {seen:.1%}, held-out pairs {held:.1%}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-objects", type=int, default=1)
    parser.add_argument(
        "--live-run", action="store_true", help="time the notebook's live training run"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads for --live-run")
    args = parser.parse_args()
    if args.live_run:
        live_run(args.threads)
        return
    torch.set_num_threads(1)

    ds = ShapesWorld(args.n, seed=0, max_objects=args.max_objects)
    scenes = [ds.objects(i) for i in range(args.n)]
    preprocessed = ShapesWorld(
        args.n, seed=0, max_objects=args.max_objects, transform=make_preprocess(TinyCLIPConfig())
    )
    start = time.perf_counter()
    ShapesWorld(args.n, seed=1, max_objects=args.max_objects)
    build_rate = args.n / (time.perf_counter() - start)

    results = {
        "baseline PIL.ImageDraw (4x supersampled) -> PIL": rate(
            lambda i: render_with_imagedraw(scenes[i]), args.n, args.repeats
        ),
        "render (mask pasting) -> PIL": rate(lambda i: render(scenes[i]), args.n, args.repeats),
        "ShapesWorld[i] -> tensor": rate(lambda i: ds[i], args.n, args.repeats),
        "ShapesWorld[i] with preprocess -> tensor": rate(
            lambda i: preprocessed[i], args.n, args.repeats
        ),
    }
    base = results["baseline PIL.ImageDraw (4x supersampled) -> PIL"]
    print(
        f"Shapes World, 32x32, max_objects={args.max_objects}, one thread, best of {args.repeats} x {args.n} images"
    )
    print(f"{'what':48s} {'images/s':>10s} {'vs baseline':>12s}")
    for name, value in results.items():
        print(f"{name:48s} {value:10,.0f} {value / base:11.2f}x")
    print(f"{'scene + caption generation (ShapesWorld(n))':48s} {build_rate:10,.0f}")
    target = results["render (mask pasting) -> PIL"]
    print(
        f"target >= 2,000 images/s on one core: {'met' if target >= 2000 else 'MISSED'} ({target:,.0f})"
    )


if __name__ == "__main__":
    main()
