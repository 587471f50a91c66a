"""VQGAN+CLIP at the pretrained size: lessonlib's loop vs the public reference loop, side by side.

Both loops run taming's f16_16384 VQGAN architecture and open_clip's ViT-B-32 with random weights (a
step costs the same whatever the weights are) at 256x256 with 32 cutouts, each configuration in its
own fresh subprocess (so peak RSS is that configuration's own), interleaved over ``--rounds`` rounds so
that background load hits both alike. Reported: median seconds per step (after ``--warmup`` steps) and
peak resident memory (``ru_maxrss``, model construction included).

    .venv/bin/python benchmarks/bench_vqgan_clip.py --threads 2 --steps 4 --rounds 2
    .venv/bin/python benchmarks/bench_vqgan_clip.py --offline --threads 1   # the offline quality target

The reference loop is ``benchmarks/reference_vqgan_clip_step.py`` (nerdyrodent/VQGAN-CLIP generate.py's
per-step work; needs kornia, in the [dev] extra).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = ("reference", "lessonlib", "lessonlib-fp32")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(
    config: str,
    threads: int,
    steps: int,
    warmup: int,
    size: int,
    cutn: int,
    chunk: int,
    checkpoint_levels: str = "auto",
) -> dict:
    import torch

    torch.set_num_threads(threads)
    import open_clip

    from lessonlib.vqgan import VQGAN, VQGANConfig

    imports_mb = rss_mb()

    torch.manual_seed(0)
    vq_cfg = VQGANConfig.imagenet_f16_16384()
    clip_model = open_clip.create_model("ViT-B-32", pretrained=None)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    if config == "reference":
        sys.path.insert(0, str(HERE))
        from reference_vqgan_clip_step import ReferenceLoop, TamingVQModel

        model = TamingVQModel(vq_cfg.ddconfig(), vq_cfg.n_embed, vq_cfg.embed_dim)
        loaded_mb = rss_mb()
        loop = ReferenceLoop(model, clip_model, tokenizer, size=size, cutn=cutn)
        times = []
        for _ in range(warmup + steps):
            t = time.perf_counter()
            loop.step()
            times.append(time.perf_counter() - t)
    else:
        import gc

        from lessonlib.critics import ImageGuide, as_critic
        from lessonlib.generate import generate
        from lessonlib.speed import critic_dtype

        # What a memory-aware user does (notebook 04): embed the prompt, keep only the image tower
        # (in bfloat16 where that is the faster precision), drop the full model, and build the VQGAN
        # without the encoder (no init image).
        precision = "float32" if config == "lessonlib-fp32" else "auto"
        low = critic_dtype(as_critic(clip_model), precision)
        guide = ImageGuide(
            clip_model, tokenizer, "a painting", dtype=None if low == torch.float32 else low
        )
        del clip_model
        gc.collect()
        model = VQGAN(vq_cfg, with_encoder=False)
        loaded_mb = rss_mb()
        result = generate(
            "a painting",
            model,
            guide,
            tokenizer,
            checkpoint_levels=None if checkpoint_levels == "auto" else int(checkpoint_levels),
            size=size,
            steps=warmup + steps,
            cutn=cutn,
            chunk=chunk,
            precision=precision,
            progress=False,
            frame_every=10**9,
        )
        times = result.step_seconds
    return {
        "config": config,
        "median_s": statistics.median(times[warmup:]),
        "steps_s": [round(t, 2) for t in times],
        "peak_rss_mb": round(rss_mb()),
        "after_models_mb": round(loaded_mb),
        "after_imports_mb": round(imports_mb),
    }


def offline_quality(
    n_prompts: int,
    steps: int,
    cutn: int,
    lr: float,
    seed: int,
    threads: int,
    guide: str = "ensemble",
    vqgan_path: str | None = None,
    ink: float = 0.0,
    prior: str | None = None,
    candidates: int = 16,
    refine_steps: int = 0,
    guidance: float = 2.0,
    temperature: float = 1.0,
    top_k: int | None = 16,
) -> None:
    """The offline target: n prompts "a {size} {colour} {shape}", tiny VQGAN + tiny CLIP, judged by
    lessonlib.judge (pixel statistics and shape templates, no CLIP).

    With ``prior`` ("shipped" or a file saved by ``lessonlib.prior.save_prior``), pictures come from
    ``lessonlib.prior.draw``: the prior samples ``candidates`` code grids, the guide picks one, and
    ``refine_steps`` of VQGAN+CLIP polish it. The report then also judges the prior's first sample
    alone and counts prompts where some candidate was right."""
    import torch

    torch.set_num_threads(threads)
    from lessonlib.critics import load_tiny_guides, load_tiny_rerankers
    from lessonlib.generate import generate, ink_penalty
    from lessonlib.judge import judge, object_prompts
    from lessonlib.models import load_tiny_clip
    from lessonlib.vqgan import load_vqgan

    if prior is not None:
        from lessonlib.prior import draw, load_prior

        prior_model, vqgan = load_prior(None if prior == "shipped" else prior, vqgan_path)
    else:
        vqgan = load_vqgan(vqgan_path)  # None: the shipped tiny VQGAN
    if guide == "ensemble":  # lesson 04's critic: five tiny CLIPs (load_tiny_guides)
        clip_model, preprocess, tokenizer = load_tiny_guides()
    elif guide == "tiny":  # the shipped tiny CLIP alone
        clip_model, preprocess, tokenizer = load_tiny_clip()
    elif (
        guide == "rerank"
    ):  # the three critics that rerank the prior's samples (load_tiny_rerankers)
        clip_model, preprocess, tokenizer = load_tiny_rerankers()
    else:  # comma-separated tiny CLIP files, joined as one CLIPEnsemble (experiments)
        clip_model, preprocess, tokenizer = load_tiny_guides(guide.split(","))
    print(
        f"vqgan: {vqgan_path or 'shipped'} (factor {vqgan.factor}); guide: {guide}; {n_prompts} "
        f"prompts, {steps} steps, {cutn} cutouts, lr {lr}, ink {ink}"
    )
    if prior is not None:
        print(
            f"prior: {prior}; {candidates} candidates, refine steps {refine_steps}, guidance "
            f"{guidance}, temperature {temperature}, top-k {top_k}"
        )
    right, seconds = 0, []
    first_right = any_right = 0
    for i, prompt in enumerate(object_prompts(n_prompts, seed=seed)):
        if prior is not None:
            drawn = draw(
                prompt,
                prior_model,
                vqgan,
                clip_model,
                tokenizer,
                preprocess,
                candidates=candidates,
                temperature=temperature,
                top_k=top_k,
                guidance=guidance,
                refine_steps=refine_steps,
                seed=seed + i,
                **(
                    dict(
                        cutn=cutn,
                        chunk=cutn,
                        lr=lr,
                        image_loss=ink_penalty(ink) if ink else None,
                    )
                    if refine_steps
                    else {}
                ),
            )
            verdict = judge(drawn.image, prompt)
            cands = [judge(c, prompt).ok for c in drawn.candidates]
            first_right += cands[0]
            any_right += any(cands)
            right += verdict.ok
            seconds.append(drawn.seconds)
            print(
                f"{prompt:28s} {drawn.seconds:5.1f} s  {verdict}  candidates right "
                f"{''.join('+' if c else '-' for c in cands)}, chose {drawn.chosen}",
                flush=True,
            )
            continue
        result = generate(
            prompt,
            vqgan,
            clip_model,
            tokenizer,
            preprocess,
            size=vqgan.config.resolution,
            steps=steps,
            cutn=cutn,
            chunk=cutn,
            lr=lr,
            seed=seed + i,
            progress=False,
            image_loss=ink_penalty(ink) if ink else None,
        )
        verdict = judge(result.image, prompt)
        right += verdict.ok
        seconds.append(result.seconds)
        print(f"{prompt:28s} {result.seconds:5.1f} s  {verdict}", flush=True)
    if prior is not None:
        print(
            f"prior's first sample alone: {first_right}/{n_prompts}; some candidate right: "
            f"{any_right}/{n_prompts}"
        )
    print(
        f"judged right: {right}/{n_prompts} ({100 * right / n_prompts:.0f}%); seconds per image: "
        f"median {statistics.median(seconds):.1f}, max {max(seconds):.1f}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument(
        "--checkpoint-levels",
        default="auto",
        help="lessonlib: decoder levels recomputed in backward (generate's checkpoint_levels; "
        "'auto' = generate's default)",
    )
    parser.add_argument("--configs", default="reference,lessonlib")
    parser.add_argument(
        "--offline", action="store_true", help="run the offline quality target instead"
    )
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument(
        "--guide",
        default="ensemble",
        help="offline critic: 'ensemble' (load_tiny_guides), 'tiny' (the tiny CLIP alone), 'rerank' "
        "(load_tiny_rerankers) or "
        "comma-separated tiny CLIP .safetensors files",
    )
    parser.add_argument("--ink", type=float, default=0.0, help="offline: ink_penalty weight")
    parser.add_argument(
        "--vqgan",
        default=None,
        help="offline: a VQGAN saved by save_vqgan (default: the shipped one)",
    )
    parser.add_argument(
        "--prior",
        default=None,
        help="offline: draw with a code prior ('shipped' or a file saved by lessonlib.prior.save_prior)",
    )
    parser.add_argument(
        "--candidates", type=int, default=16, help="offline prior: samples per prompt"
    )
    parser.add_argument(
        "--refine-steps", type=int, default=0, help="offline prior: VQGAN+CLIP steps after the pick"
    )
    parser.add_argument("--guidance", type=float, default=2.0, help="offline prior: CFG scale")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=16)
    parser.add_argument("--offline-steps", type=int, default=150)
    parser.add_argument("--offline-cutn", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.offline:
        offline_quality(
            args.prompts,
            args.offline_steps,
            args.offline_cutn,
            args.lr,
            args.seed,
            args.threads,
            args.guide,
            args.vqgan,
            args.ink,
            args.prior,
            args.candidates,
            args.refine_steps,
            args.guidance,
            args.temperature,
            args.top_k,
        )
        return
    if args.worker:
        out = worker(
            args.worker,
            args.threads,
            args.steps,
            args.warmup,
            args.size,
            args.cutn,
            args.chunk,
            args.checkpoint_levels,
        )
        print("RESULT " + json.dumps(out))
        return
    configs = [c.strip() for c in args.configs.split(",")]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configs {unknown}: choose from {', '.join(CONFIGS)}")
    env = dict(os.environ, LESSONLIB_MODE="offline", HF_HUB_OFFLINE="1")
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    print(
        f"size {args.size}, cutn {args.cutn}, threads {args.threads}, chunk {args.chunk}; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    for r in range(args.rounds):
        for c in configs:
            cmd = [sys.executable, __file__, "--worker", c] + [
                f"--{k.replace('_', '-')}={getattr(args, k)}"
                for k in (
                    "threads",
                    "steps",
                    "warmup",
                    "size",
                    "cutn",
                    "chunk",
                    "checkpoint_levels",
                )
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                raise SystemExit(f"{c} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(line[0][7:])
            runs[c].append(res)
            print(
                f"round {r + 1} {c:15s} median {res['median_s']:.2f} s/step, steps {res['steps_s']}, "
                f"peak RSS {res['peak_rss_mb']} MB (after imports {res['after_imports_mb']} MB, "
                f"after building models {res['after_models_mb']} MB)",
                flush=True,
            )
    print("\nconfig           median s/step (all runs)  peak RSS MB (max)")
    med = {}
    for c in configs:
        all_steps = [t for res in runs[c] for t in res["steps_s"][args.warmup :]]
        med[c] = statistics.median(all_steps)
        print(f"{c:15s}  {med[c]:8.2f}                  {max(r['peak_rss_mb'] for r in runs[c])}")
    if "reference" in med:
        for c in configs:
            if c != "reference":
                print(f"speed-up {c} vs reference: {med['reference'] / med[c]:.2f}x")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
