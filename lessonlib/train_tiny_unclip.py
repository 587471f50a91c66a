"""Train the tiny DALL-E 2 of lesson 05_dalle: ``python -m lessonlib.train_tiny_unclip``.

Introduced in lesson 05_dalle.

Data: Shapes World scenes with one object. Every picture is embedded once by the tiny CLIP's image
tower (the decoder's condition and the priors' target) and, for a latent decoder, encoded by the tiny
VQGAN; every caption is embedded by the CLIP's text tower (the priors' input).

* The **decoder** never reads a caption: it learns to draw a picture back from its CLIP image embedding,
  so it may train on every picture (``--decoder-split all``, the default).
* The **priors** learn captions -> image embeddings; with ``--prior-split train`` (the default) they
  never see a caption of lesson 01's held-out colour + shape pairs.

At the end it measures what matters: all 48 prompts "a {size} {colour} {shape}" drawn with each prior
and judged by ``lessonlib.judge``, and the decoder alone on real pictures' embeddings.

Example:
    python -m lessonlib.train_tiny_unclip --minutes 20 --out lessonlib/weights/tiny_unclip.safetensors
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lessonlib.unclip import (
    TINY_UNCLIP_WEIGHTS,
    Decoder,
    DecoderConfig,
    EmbeddingPriorConfig,
    TinyUnCLIP,
    build_prior,
    save_unclip,
)

# Caption forms for the priors: more of the forms that name size, colour and shape together.
UNCLIP_DETAIL_WEIGHTS = {"shape": 0.1, "colour": 0.1, "simple": 0.2, "size": 0.35, "full": 0.25}


@dataclass
class UnCLIPTraining:
    """Settings of one training run (architectures are ``DecoderConfig``/``EmbeddingPriorConfig``).

    Introduced in lesson 05_dalle.
    """

    decoder_seconds: float = 900.0
    prior_seconds: float = 120.0
    decoder_steps: int | None = None  # a step count instead of the time budget (reproducible)
    prior_steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    n_train: int = 20000
    decoder_split: str = "all"
    prior_split: str = "train"
    p_uncond: float = 0.1
    ema: float = 0.995
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_train", "decoder_steps", "prior_steps"):
            value = getattr(self, name)
            if value is None and name.endswith("steps"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("decoder_split", "prior_split"):
            if getattr(self, name) not in ("all", "train"):
                raise ValueError(f"{name} must be 'all' or 'train', got {getattr(self, name)!r}")
        if not (self.decoder_seconds > 0 and self.prior_seconds > 0):
            raise ValueError("decoder_seconds and prior_seconds must be positive (a time budget)")
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond!r}")


def make_data(clip, preprocess, tokenizer, vqgan, n: int, seed: int, batch: int = 500) -> dict:
    """``n`` one-object scenes: pictures (or latents), image and caption embeddings, labels."""
    from lessonlib.data import ShapesWorld
    from lessonlib.embed import clip_input_spec, embed_texts, evaluating, pixels_to_clip_input

    ds = ShapesWorld(n, split="all", seed=seed, detail_weights=UNCLIP_DETAIL_WEIGHTS)
    size, mean, std = clip_input_spec(clip, preprocess)  # the model's own normalisation
    pixels, latents, embeds = [], [], []
    with torch.no_grad(), evaluating(clip):
        for first in range(0, n, batch):
            idx = range(first, min(first + batch, n))
            x = torch.from_numpy(np.stack([ds.array(i) for i in idx])).permute(0, 3, 1, 2)
            x = x.float().div(255)
            pixels.append(x.mul(2).sub(1))
            embeds.append(clip.encode_image(pixels_to_clip_input(x, size, mean, std)))
            if vqgan is not None:
                codes = vqgan.encode_to_codes(x.mul(2).sub(1))
                latents.append(vqgan.codes_to_latents(codes))
    out = {
        "pixels": torch.cat(pixels),
        "image_embeds": torch.nn.functional.normalize(torch.cat(embeds), dim=-1),
        "text_embeds": embed_texts(clip, tokenizer, ds.captions),
        "captions": ds.captions,
        "pairs": [ds.label(i) for i in range(n)],
    }
    if vqgan is not None:
        out["latents"] = torch.cat(latents)
    return out


def _schedule(opt, total: float, warmup: int = 100):
    """Linear warm-up, then cosine decay over the time budget (the step count is unknown)."""
    return lambda frac, step: (
        min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
    )


def fit(
    model, batches, seconds: float, lr: float, ema: float, seed: int, callback=None, steps=None
) -> dict:
    """Train ``model.loss(*batch)`` for ``steps`` steps, or else ``seconds`` of wall time, with AdamW,
    a cosine schedule and an exponential moving average of the weights (returned in place of the raw
    ones)."""
    torch.manual_seed(seed)
    model.train().requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    averaged = copy.deepcopy(model).eval().requires_grad_(False)
    shape = _schedule(opt, seconds)
    start, step, losses = time.perf_counter(), 0, []

    def progress(elapsed: float) -> float:
        return step / steps if steps else elapsed / seconds

    while (elapsed := time.perf_counter() - start) >= 0 and progress(elapsed) < 1:
        for group in opt.param_groups:
            group["lr"] = lr * shape(progress(elapsed), step)
        loss = model.loss(*batches(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for a, p in zip(averaged.parameters(), model.parameters()):
                a.lerp_(p, 1 - decay)
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, elapsed, losses)
        step += 1
    model.load_state_dict(averaged.state_dict())
    model.eval().requires_grad_(False)
    return {"steps": step, "seconds": round(time.perf_counter() - start, 1), "losses": losses}


def train_unclip(
    clip, preprocess, tokenizer, vqgan, settings: UnCLIPTraining, configs: dict, callback=None
) -> tuple[TinyUnCLIP, dict]:
    """Make the data, train the decoder and each prior in ``configs["priors"]``; return the model and facts.

    ``configs``: ``{"decoder": DecoderConfig, "priors": {name: EmbeddingPriorConfig}}``.
    ``callback(part, step, seconds, losses)`` is called after every step (for a live plot).
    """
    from lessonlib.data import HELD_OUT_PAIRS

    t0 = time.perf_counter()
    data = make_data(clip, preprocess, tokenizer, vqgan, settings.n_train, settings.seed)
    facts = {"data_seconds": round(time.perf_counter() - t0, 1)}
    dcfg = copy.deepcopy(configs["decoder"])
    if dcfg.space == "latent":
        x0 = data["latents"]
        dcfg.latent_scale = round(float(x0.std()), 4)
        dcfg.in_channels, dcfg.sample_size = x0.shape[1], x0.shape[-1]
    else:
        x0, dcfg.in_channels, dcfg.sample_size = data["pixels"], 3, data["pixels"].shape[-1]
    x0 = x0 / dcfg.latent_scale if dcfg.space == "latent" else x0
    held = set(HELD_OUT_PAIRS)
    keep_all = torch.ones(len(x0), dtype=torch.bool)
    seen = torch.tensor([pair not in held for pair in data["pairs"]])
    rows = {
        "decoder": torch.nonzero(keep_all if settings.decoder_split == "all" else seen)[:, 0],
        "prior": torch.nonzero(keep_all if settings.prior_split == "all" else seen)[:, 0],
    }
    gen = torch.Generator().manual_seed(settings.seed)

    def pick(part):
        return rows[part][torch.randint(len(rows[part]), (settings.batch_size,), generator=gen)]

    def report(part):
        return None if callback is None else (lambda *a: callback(part, *a))

    torch.manual_seed(settings.seed)
    decoder = Decoder(dcfg)
    img, txt = data["image_embeds"], data["text_embeds"]
    facts["decoder"] = fit(
        decoder,
        lambda step: (lambda i: (x0[i], img[i], settings.p_uncond))(pick("decoder")),
        settings.decoder_seconds,
        settings.lr,
        settings.ema,
        settings.seed,
        report("decoder"),
        settings.decoder_steps,
    )
    priors = {}
    for name, pcfg in configs["priors"].items():
        prior = build_prior(pcfg)
        facts[f"prior_{name}"] = fit(
            prior,
            lambda step: (lambda i: (txt[i], img[i]))(pick("prior")),
            settings.prior_seconds,
            settings.lr,
            settings.ema,
            settings.seed,
            report(name),
            settings.prior_steps,
        )
        priors[name] = prior
    for part in ("decoder", *[f"prior_{n}" for n in priors]):
        facts[part]["final_loss"] = round(float(np.mean(facts[part].pop("losses")[-50:])), 5)
    return TinyUnCLIP(clip, preprocess, tokenizer, decoder, priors, vqgan), facts


def evaluate(unclip: TinyUnCLIP, prompts: list[str], seed: int = 0, **settings) -> dict:
    """Judge one picture per prompt for each prior, and the decoder on real pictures' embeddings."""
    from lessonlib.data import HELD_OUT_PAIRS, ShapeObject, render
    from lessonlib.judge import judge, parse_object_prompt

    held = set(HELD_OUT_PAIRS)
    out = {}
    for name in unclip.priors:
        start = time.perf_counter()
        verdicts = [
            judge(unclip.draw(p, seed=seed + i, prior=name, **settings).pil(), p)
            for i, p in enumerate(prompts)
        ]
        seconds = (time.perf_counter() - start) / len(prompts)
        out[name] = {
            "right": sum(v.ok for v in verdicts),
            "held_out_right": sum(
                v.ok for v, p in zip(verdicts, prompts) if parse_object_prompt(p)[1:] in held
            ),
            "held_out_n": sum(parse_object_prompt(p)[1:] in held for p in prompts),
            "n": len(prompts),
            "seconds_per_image": round(seconds, 2),
        }
    real = [render([ShapeObject(*reversed(parse_object_prompt(p)))]) for p in prompts]
    drawn = unclip.decode(unclip.image_embeds(real), seed=seed, **settings)
    out["decoder_on_real_embeddings"] = sum(judge(im, p).ok for im, p in zip(drawn, prompts))
    return out


def main(argv: list[str] | None = None) -> None:
    import json

    from lessonlib.checkpoints import weights_info
    from lessonlib.judge import object_prompts
    from lessonlib.models import TINY_CLIP_WEIGHTS, load_tiny_clip
    from lessonlib.prior import TINY_PRIOR_VQGAN
    from lessonlib.vqgan import load_vqgan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", choices=("latent", "pixel"), default="latent")
    parser.add_argument("--channels", default="32,64,64", help="UNet widths, one per resolution")
    parser.add_argument(
        "--prediction", choices=("sample", "epsilon", "v_prediction"), default="sample"
    )
    parser.add_argument(
        "--concat", type=int, default=16, help="embedding as N extra input channels"
    )
    parser.add_argument(
        "--no-scale-shift",
        dest="scale_shift",
        action="store_false",
        help="add, not FiLM, the condition",
    )
    parser.add_argument("--decoder-minutes", type=float, default=15.0)
    parser.add_argument("--prior-minutes", type=float, default=2.0, help="per prior")
    parser.add_argument("--decoder-steps", type=int, default=None, help="steps instead of minutes")
    parser.add_argument("--prior-steps", type=int, default=None, help="steps instead of minutes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--decoder-split", choices=("all", "train"), default="all")
    parser.add_argument("--prior-split", choices=("all", "train"), default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=TINY_UNCLIP_WEIGHTS)
    args = parser.parse_args(argv)
    if args.decoder_minutes <= 0 or args.prior_minutes <= 0:
        parser.error("--decoder-minutes and --prior-minutes must be positive")
    torch.set_num_threads(args.threads)
    clip, preprocess, tokenizer = load_tiny_clip(TINY_CLIP_WEIGHTS)
    vqgan = (
        load_vqgan(TINY_PRIOR_VQGAN).eval().requires_grad_(False)
        if args.space == "latent"
        else None
    )
    settings = UnCLIPTraining(
        decoder_seconds=args.decoder_minutes * 60,
        prior_seconds=args.prior_minutes * 60,
        decoder_steps=args.decoder_steps,
        prior_steps=args.prior_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        n_train=args.n_train,
        decoder_split=args.decoder_split,
        prior_split=args.prior_split,
        seed=args.seed,
    )
    configs = {
        "decoder": DecoderConfig(
            space=args.space,
            prediction=args.prediction,
            channels=tuple(int(c) for c in args.channels.split(",")),
            concat_channels=args.concat,
            scale_shift=args.scale_shift,
        ),
        "priors": {
            "regression": EmbeddingPriorConfig(kind="regression"),
            "diffusion": EmbeddingPriorConfig(kind="diffusion"),
        },
    }
    start = time.perf_counter()
    unclip, facts = train_unclip(clip, preprocess, tokenizer, vqgan, settings, configs)
    facts["train_seconds"] = round(time.perf_counter() - start, 1)
    facts["test"] = evaluate(unclip, object_prompts(48, seed=0))
    print(json.dumps(facts, indent=1))
    command = "python -m lessonlib.train_tiny_unclip " + " ".join(
        argv or __import__("sys").argv[1:]
    )
    path = save_unclip(
        unclip,
        args.out,
        TINY_CLIP_WEIGHTS,
        TINY_PRIOR_VQGAN if vqgan is not None else None,
        command=command,
        extra={"training": asdict(settings) | {"threads": args.threads}, "results": facts},
    )
    print("saved", path, weights_info(path)["command"])


if __name__ == "__main__":
    main()
