"""One training step of lesson 05's decoder and diffusion prior, on 1 and 2 threads, side by side.

The shipped unCLIP's time budget is a step count (``--decoder-steps``), so its training time is steps x
the time of one step. This measures that time for the shipped architecture (and the live cell's small
one) with the trainer's own ``fit`` (AdamW, clipping, EMA), so the ratio 1 thread : 2 threads and the
minutes for the shipped step counts come from one run.

Usage:
    python benchmarks/bench_unclip_steps.py --steps 40
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    from lessonlib.train_tiny_unclip import fit
    from lessonlib.unclip import Decoder, DecoderConfig, EmbeddingPriorConfig, build_prior

    b = args.batch_size
    models = {
        "shipped decoder (f2 latents 16x16x32)": (
            lambda: Decoder(DecoderConfig()),
            (torch.randn(b, 32, 16, 16), F.normalize(torch.randn(b, 64), dim=-1)),
            7000,
        ),
        "live decoder (f4 latents 8x8x32)": (
            lambda: Decoder(DecoderConfig(channels=(32, 64), sample_size=8)),
            (torch.randn(b, 32, 8, 8), F.normalize(torch.randn(b, 64), dim=-1)),
            None,
        ),
        "diffusion prior": (
            lambda: build_prior(EmbeddingPriorConfig()),
            (F.normalize(torch.randn(b, 64), dim=-1),) * 2,
            4000,
        ),
    }
    print(f"{'':40s}{'1 thread':>12s}{'2 threads':>12s}{'ratio':>8s}   shipped steps on 2 threads")
    for name, (build, batch, shipped) in models.items():
        per_step = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            model = build()
            fit(model, lambda step, batch=batch: batch, 1e9, 1e-3, 0.995, 0, None, 5)  # warm-up
            facts = fit(
                model, lambda step, batch=batch: batch, 1e9, 1e-3, 0.995, 0, None, args.steps
            )
            per_step[threads] = facts["seconds"] / facts["steps"]
        eta = f"{shipped * per_step[2] / 60:.1f} min" if shipped else ""
        print(
            f"{name:40s}{per_step[1] * 1000:>9.0f} ms{per_step[2] * 1000:>9.0f} ms"
            f"{per_step[1] / per_step[2]:>8.2f}   {eta}"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
