"""Lesson 05's comparison: VQGAN+CLIP, DALL-E 1-style and DALL-E 2-style on the same prompts, one run.

Every row of the table comes from this one command, on the same prompts, seeds, judge and threads:

* judged right over the 48 prompts "a {size} {colour} {shape}" (``lessonlib.judge``, no CLIP), and over
  the 12 of them whose colour + shape pair lesson 01 holds out;
* diversity: for the first ``--diversity-prompts`` prompts, ``--samples`` pictures each (seeds 0, 1, ...):
  the mean pixel difference between two pictures of one prompt (mean |a - b| in [0, 1]; 0 = identical)
  and how many of the samples the judge calls right;
* seconds per image (median), parameters used at drawing time, and training time read from each shipped
  model's ``.json``.

Usage:
    python benchmarks/bench_generators.py --threads 1 --out lessonlib/results/generators.json \\
        --figure images/three_recipes.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def recipes(vqgan_steps: int, unclip_prior: str):
    """name -> (draw(prompt, seed) -> PIL image, parameters, training seconds, what it is)."""
    from lessonlib.checkpoints import weights_info
    from lessonlib.critics import load_tiny_guides, load_tiny_rerankers
    from lessonlib.generate import GenerateConfig, generate
    from lessonlib.prior import TINY_PRIOR_WEIGHTS, draw, load_prior
    from lessonlib.unclip import TINY_UNCLIP_WEIGHTS, load_unclip
    from lessonlib.vqgan import load_vqgan

    vqgan = load_vqgan().eval().requires_grad_(False)
    guide, g_pre, g_tok = load_tiny_guides()
    config = GenerateConfig(
        size=vqgan.config.resolution, steps=vqgan_steps, cutn=16, chunk=16, progress=False
    )
    prior, vqgan_f2 = load_prior()
    reranker, r_pre, r_tok = load_tiny_rerankers()
    unclip = load_unclip()

    def train_seconds(path) -> float:
        """Training time recorded in the .json, all stages (a prior continued from another) summed."""
        info, total = weights_info(path), 0.0
        if "results" in info:  # the unCLIP: data, decoder and priors
            return float(info["results"]["train_seconds"])
        stage = info.get("training", {})
        while stage:
            total += float(stage.get("train_seconds", 0)) + float(stage.get("data_seconds", 0))
            stage = stage.get("init", {}).get("training", {})
        return total

    return {
        "VQGAN+CLIP": (
            lambda p, s: generate(p, vqgan, guide, g_tok, g_pre, config=config, seed=s).image,
            count(vqgan.decoder, vqgan.post_quant_conv, guide),
            "no training of its own (uses the tiny VQGAN and five tiny CLIPs)",
            f"tiny VQGAN + 5 tiny CLIPs, {vqgan_steps} steps, 16 cutouts",
        ),
        "DALL-E 1-style": (
            lambda p, s: draw(p, prior, vqgan_f2, reranker, r_tok, r_pre, seed=s).image,
            count(prior, vqgan_f2.decoder, vqgan_f2.post_quant_conv, reranker),
            train_seconds(TINY_PRIOR_WEIGHTS),
            "code prior (GPT over 16x16 VQGAN codes), 16 samples reranked by 3 tiny CLIPs",
        ),
        "DALL-E 2-style": (
            lambda p, s: unclip.draw(p, n=1, seed=s, prior=unclip_prior).pil(0),
            count(unclip.clip, unclip.priors[unclip_prior], unclip.decoder)
            + count(unclip.vqgan.decoder, unclip.vqgan.post_quant_conv),
            train_seconds(TINY_UNCLIP_WEIGHTS),
            f"tiny CLIP text tower -> {unclip_prior} prior -> diffusion decoder (25 DDIM steps)",
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--diversity-prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--vqgan-steps", type=int, default=150)
    parser.add_argument("--unclip-prior", default="diffusion")
    parser.add_argument("--only", default="", help="comma-separated recipe names (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--figure", type=Path, default=None, help="the same prompts by the three")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from lessonlib.data import HELD_OUT_PAIRS
    from lessonlib.judge import judge, object_prompts, parse_object_prompt

    prompts = object_prompts(args.prompts, seed=0)
    held = set(HELD_OUT_PAIRS)
    is_held = [parse_object_prompt(p)[1:] in held for p in prompts]
    table, pictures = {}, {}
    for name, (draw, params, trained, what) in recipes(args.vqgan_steps, args.unclip_prior).items():
        if args.only and name not in args.only.split(","):
            continue
        seconds, verdicts, images = [], [], []
        for i, prompt in enumerate(prompts):
            start = time.perf_counter()
            image = draw(prompt, i)
            seconds.append(time.perf_counter() - start)
            verdicts.append(judge(image, prompt))
            images.append(np.asarray(image, dtype=np.float32) / 255)
            print(f"{name:15s} {prompt:28s} {seconds[-1]:5.1f} s  {verdicts[-1]}", flush=True)
        distances, extra_right = [], 0
        for i, prompt in enumerate(prompts[: args.diversity_prompts]):
            samples = [images[i]] + [
                np.asarray(draw(prompt, 1000 * s + i), dtype=np.float32) / 255
                for s in range(1, args.samples)
            ]
            extra_right += sum(judge((a * 255).astype(np.uint8), prompt).ok for a in samples)
            distances += [
                float(np.abs(a - b).mean()) for a, b in itertools.combinations(samples, 2)
            ]
        table[name] = {
            "what": what,
            "right": sum(v.ok for v in verdicts),
            "n": len(prompts),
            "held_out_right": sum(v.ok for v, h in zip(verdicts, is_held) if h),
            "held_out_n": sum(is_held),
            "diversity_pixel_distance": round(statistics.mean(distances), 4),
            "diversity_samples_right": f"{extra_right}/{args.diversity_prompts * args.samples}",
            "seconds_per_image": round(statistics.median(seconds), 2),
            "parameters": params,
            "training_seconds": trained,
        }
        pictures[name] = images
        print(json.dumps({name: table[name]}), flush=True)
    meta = {
        "command": "python " + " ".join(sys.argv),
        "threads": args.threads,
        "load_average_end": round(os.getloadavg()[0], 2),
        "prompts": prompts,
    }
    print(f"{'recipe':15s} right  held-out  diversity  s/image  parameters")
    for name, row in table.items():
        print(
            f"{name:15s} {row['right']:2d}/{row['n']}  {row['held_out_right']:2d}/{row['held_out_n']}"
            f"     {row['diversity_pixel_distance']:.3f}     {row['seconds_per_image']:5.2f}  "
            f"{row['parameters'] / 1e6:.2f} M"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "table": table}, indent=1) + "\n")
    if args.figure and pictures:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        show = list(range(0, len(prompts), max(1, len(prompts) // 8)))[:8]
        fig, axes = plt.subplots(
            len(pictures), len(show), figsize=(1.5 * len(show), 1.7 * len(pictures))
        )
        for r, (name, images) in enumerate(pictures.items()):
            for c, i in enumerate(show):
                ax = axes[r, c]
                ax.imshow(images[i], interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                if r == 0:
                    ax.set_title(prompts[i].removeprefix("a "), fontsize=7)
                if c == 0:
                    ax.set_ylabel(name, fontsize=8)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=120)


if __name__ == "__main__":
    main()
