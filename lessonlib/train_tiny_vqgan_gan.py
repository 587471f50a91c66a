"""Fine-tune the tiny VQGAN against a patch discriminator: ``python -m lessonlib.train_tiny_vqgan_gan``.

Introduced in lesson 04_vqgan_clip.

Starts from the shipped tiny VQGAN (``--init shipped``, trained by ``lessonlib.train_tiny_vqgan`` with
no adversarial loss) or from a saved one (``--init PATH``), fine-tunes it with
``lessonlib.gan.finetune_with_discriminator`` and writes the weights and a ``.json`` beside them with the
command, the training facts and the measured quality: PSNR and the judge on the same test images as
``train_tiny_vqgan``, and the side-by-side comparison of ``gan.compare_reconstructions`` (shipped vs this
model on the same 200 held-out images).

``--disc-weight 0`` is the fair control: the same steps, data and discriminator, no adversarial term.

Example:
    python -m lessonlib.train_tiny_vqgan_gan --init shipped --steps 300 --disc-weight 0.8 \\
        --out /tmp/tiny_vqgan_gan.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lessonlib.gan import GANConfig, compare_reconstructions, finetune_with_discriminator
from lessonlib.train_tiny_vqgan import evaluate, make_images
from lessonlib.vqgan import WEIGHTS_DIR, load_vqgan, save_vqgan

TINY_VQGAN_GAN_WEIGHTS = WEIGHTS_DIR / "tiny_vqgan_gan.safetensors"


def summarise(history: dict, last: int = 5) -> dict:
    """Mean of the last ``last`` logged values of each series (the end of training), and the time."""
    out = {"seconds": history["seconds"]}
    for key, values in history.items():
        if isinstance(values, list) and values and key != "step":
            tail = values[-last:]
            out[f"final_{key}"] = round(sum(tail) / len(tail), 5)
    return out


def main(argv: list[str] | None = None) -> None:
    defaults = GANConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default="shipped", help="'shipped' or a VQGAN .safetensors path")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--disc-lr", type=float, default=defaults.disc_lr)
    parser.add_argument("--disc-weight", type=float, default=defaults.disc_weight)
    parser.add_argument("--disc-start", type=int, default=defaults.disc_start)
    parser.add_argument("--n-train", type=int, default=defaults.n_train, help="fresh images")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--half", action="store_true", help="store the weights as fp16")
    parser.add_argument("--out", type=Path, default=TINY_VQGAN_GAN_WEIGHTS)
    args = parser.parse_args(argv)
    init = None if args.init == "shipped" else Path(args.init)
    if init is not None and not init.is_file():
        parser.error(
            f"--init {args.init!r}: give 'shipped' or the path of a VQGAN .safetensors file"
        )
    try:
        config = GANConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            disc_lr=args.disc_lr,
            disc_weight=args.disc_weight,
            disc_start=args.disc_start,
            n_train=args.n_train,
            seed=args.seed,
        )
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    start = load_vqgan(init)
    model, history = finetune_with_discriminator(start, config)
    test = make_images(2000, seed=1000, image_size=model.config.resolution)
    quality = evaluate(model, test)  # the same test images as train_tiny_vqgan (seed 0)
    from lessonlib.judge import judge_reconstructions

    quality.update(judge_reconstructions(model, n=300, seed=2000))
    heldout = compare_reconstructions({"start": start, "finetuned": model})
    command = (
        f"python -m lessonlib.train_tiny_vqgan_gan --init {args.init} --steps {args.steps} "
        f"--batch-size {args.batch_size} --lr {args.lr} --disc-lr {args.disc_lr} "
        f"--disc-weight {args.disc_weight} --disc-start {args.disc_start} --n-train {args.n_train} "
        f"--seed {args.seed} "
        f"--threads {args.threads}"
        + (" --half" if args.half else "")
        + (f" --out {args.out}" if args.out != TINY_VQGAN_GAN_WEIGHTS else "")
    )
    extra = {
        "training": {**config.to_dict(), **summarise(history)},
        "test_quality": quality,
        "heldout_comparison": heldout,
    }
    save_vqgan(model, args.out, command=command, extra=extra, half=args.half)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    print(f"test quality: {quality}")
    for name, row in heldout.items():
        print(f"{name:>10}: {row}")


if __name__ == "__main__":
    main()
