"""Train the tiny Shapes World VQGAN that lesson 04 ships: ``python -m lessonlib.train_tiny_vqgan``.

Introduced in lesson 04_vqgan_clip.

Losses: L1 + L2 reconstruction, plus taming's VQ loss (codebook term + 0.25 x commitment term,
``legacy=False``, i.e. the beta on the commitment term as in the VQ-VAE paper). Codes that no image
used for a while are restarted on random encoder outputs, so the whole codebook stays in use.

Not used, and why: a perceptual (LPIPS) loss needs pretrained VGG weights, which cannot be downloaded
offline; an adversarial (PatchGAN) loss is what makes taming's photos sharp, but Shapes World images
are flat colours on black, which L1 + L2 already reconstruct to ~30 dB PSNR at 32x32, and a GAN would
triple the training time on 2 CPU cores. ``python -m lessonlib.train_tiny_vqgan_gan`` fine-tunes this
model with taming's patch discriminator afterwards (``lessonlib.gan``; lesson 04 compares the two).

Other architectures (experiments in BENCHMARKS.md, Lesson 04): ``--ch-mult 1,1`` gives factor 2 (a
16x16 grid of codes at 32x32), ``--ch`` the base width (a multiple of 32), ``--n-embed`` the codebook
size.

Example:
    python -m lessonlib.train_tiny_vqgan --steps 1000 --out lessonlib/weights/tiny_vqgan.safetensors
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lessonlib.vqgan import TINY_VQGAN_WEIGHTS, VQGAN, VQGANConfig, save_vqgan

TINY_CONFIG = dict(
    ch=32,
    ch_mult=(1, 1, 2),
    num_res_blocks=1,
    attn_resolutions=(),
    z_channels=32,
    resolution=32,
    n_embed=256,
    embed_dim=32,
)


def make_images(n: int, seed: int, image_size: int = 32, split: str = "all") -> torch.Tensor:
    """n Shapes World images as a (n, 3, s, s) tensor in [-1, 1]: 70% one object, 30% up to three."""
    from lessonlib.data import ShapesWorld

    n1 = int(n * 0.7)
    parts = [
        ShapesWorld(n1, split=split, seed=seed, image_size=image_size, max_objects=1),
        ShapesWorld(n - n1, split=split, seed=seed + 1, image_size=image_size, max_objects=3),
    ]
    arrays = [ds.array(i) for ds in parts for i in range(len(ds))]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x.div_(127.5).sub_(1.0)


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(x.clamp(-1, 1), y.clamp(-1, 1)).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


@torch.no_grad()
def evaluate(model: VQGAN, images: torch.Tensor, batch: int = 256) -> dict:
    """PSNR, codebook use and judge agreement of reconstructions of ``images``."""
    model.eval()
    recs, codes = [], []
    for i in range(0, len(images), batch):
        rec, _, idx = model(images[i : i + batch])
        recs.append(rec)
        codes.append(idx)
    rec = torch.cat(recs)
    used = torch.cat(codes).unique().numel()
    return {
        "psnr_db": round(psnr(rec, images), 2),
        "codes_used": int(used),
        "n_embed": model.config.n_embed,
    }


def train(
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 2e-3,
    n_train: int = 20000,
    seed: int = 0,
    restart_every: int = 100,
    progress: bool = True,
    config_overrides: dict | None = None,
) -> tuple[VQGAN, dict]:
    """Train a tiny VQGAN on Shapes World; returns the model and a dict of training facts.

    ``config_overrides`` changes entries of ``TINY_CONFIG`` (e.g. ``{"ch_mult": (1, 2)}``).
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    config = VQGANConfig(**{**TINY_CONFIG, **(config_overrides or {})})
    images = make_images(n_train, seed=seed, image_size=config.resolution)
    model = VQGAN(config, legacy_beta=False)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.9))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    usage = torch.zeros(config.n_embed)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    history = []
    bar = tqdm(range(steps), desc="tiny VQGAN", disable=not progress, mininterval=2)
    for step in bar:
        model.train()
        x = images[torch.randint(len(images), (batch_size,), generator=gen)]
        if torch.rand((), generator=gen) < 0.5:  # flips keep every shape a shape
            x = x.flip(3)
        z = model.encode(x)
        z_q, vq_loss, (_, _, idx) = model.quantize(z)
        rec = model.decode(z_q)
        rec_loss = (rec - x).abs().mean() + F.mse_loss(rec, x)
        loss = rec_loss + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        usage.mul_(0.99).index_add_(0, idx.flatten(), torch.ones(idx.numel()))
        if restart_every and (step + 1) % restart_every == 0 and step < steps * 0.8:
            with torch.no_grad():  # dead codes jump onto random encoder outputs of this batch
                dead = (usage < 1e-3).nonzero().flatten()
                if len(dead):
                    flat = z.detach().movedim(1, -1).reshape(-1, z.shape[1])
                    pick = torch.randint(len(flat), (len(dead),), generator=gen)
                    model.quantize.embedding.weight[dead] = flat[pick]
                    usage[dead] = 1.0
        if step % 50 == 0:
            history.append((step, rec_loss.item(), vq_loss.item()))
            bar.set_postfix(rec=f"{rec_loss.item():.4f}", vq=f"{vq_loss.item():.4f}")
    facts = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "n_train": n_train,
        "seed": seed,
        "train_seconds": round(time.perf_counter() - start, 1),
        "history": history,
    }
    return model.eval().requires_grad_(False), facts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ch-mult",
        default=",".join(str(m) for m in TINY_CONFIG["ch_mult"]),
        help="channel multipliers, one per level; the downsampling factor is 2 ** (levels - 1)",
    )
    parser.add_argument("--ch", type=int, default=TINY_CONFIG["ch"], help="base channel width")
    parser.add_argument("--n-embed", type=int, default=TINY_CONFIG["n_embed"], help="codebook size")
    parser.add_argument("--out", type=Path, default=TINY_VQGAN_WEIGHTS)
    args = parser.parse_args(argv)
    try:
        ch_mult = tuple(int(m) for m in args.ch_mult.split(","))
    except ValueError:
        parser.error(f"--ch-mult {args.ch_mult!r}: give integers separated by commas, e.g. 1,2")
    torch.set_num_threads(args.threads)
    overrides = {"ch": args.ch, "ch_mult": ch_mult, "n_embed": args.n_embed}
    model, facts = train(
        args.steps, args.batch_size, args.lr, seed=args.seed, config_overrides=overrides
    )
    test = make_images(2000, seed=1000 + args.seed, image_size=model.config.resolution)
    quality = evaluate(model, test)
    try:  # the independent judge: do reconstructions keep colour, shape and size?
        from lessonlib.judge import judge_reconstructions

        quality.update(judge_reconstructions(model, n=300, seed=2000 + args.seed))
    except ImportError:  # pragma: no cover
        pass
    command = (
        f"python -m lessonlib.train_tiny_vqgan --steps {args.steps} --batch-size {args.batch_size} "
        f"--lr {args.lr} --seed {args.seed} --threads {args.threads} "
        f"--ch {args.ch} --ch-mult {','.join(str(m) for m in ch_mult)} --n-embed {args.n_embed}"
        + (f" --out {args.out}" if args.out != TINY_VQGAN_WEIGHTS else "")
    )
    facts.pop("history")
    save_vqgan(model, args.out, command=command, extra={"training": facts, "test_quality": quality})
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); test quality: {quality}")


if __name__ == "__main__":
    main()
