"""Regenerate notebooks/04_vqgan_clip.ipynb: python scripts/make_notebook_04.py"""

from nbbuild import build, code, md

INTRO = """
CLIP can say how well a picture matches a sentence. Can it *draw*? Not by itself, but it can be a
critic: start from some picture, ask CLIP how well it matches "a large red circle", and nudge the picture
so the score improves. Nudging raw pixels gives noise that fools CLIP; nudging the **latent codes of a
VQGAN** gives pictures, because the VQGAN's decoder can only paint what it learned to paint.

In this lesson you will

* see a **codebook** and **vector quantisation** in pictures: an image becomes a grid of code numbers;
* write the three tricks of the VQGAN+CLIP loop: **straight-through** quantisation, random **cutouts**
  with augmentations, and the **spherical-distance** loss, with **weighted and negative prompts**;
* generate Shapes World pictures **offline in seconds** and have them checked by an independent judge;
* add what taming-transformers and DALL-E add: a **prior** that writes code grids for a caption, with
  CLIP picking the best of its samples;
* with internet, run the real thing: taming-transformers' `vqgan_imagenet_f16_16384` with CLIP ViT-B-32;
* type prompts into a box and watch the picture form.
"""

CELLS = [
    md("""
## 1. The models

Offline, the lesson uses two small models the course trained on Shapes World: a **tiny VQGAN** (32x32
images, each turned into an 8x8 grid of codes from a codebook of 256) and the **tiny CLIP** of lesson 01
(in section 4, four more tiny CLIPs join it as a stronger critic; at the end of section 4 a second
tiny VQGAN with finer codes, a prior over its codes and three more tiny CLIPs show DALL-E's recipe).
The VQGAN is built from the same `taming.modules` blocks as the big ImageNet VQGANs, with the same
parameter names, so `lessonlib.vqgan` loads both. The next cell loads them and prints what the VQGAN
is and how well it reconstructs images it never saw.
"""),
    code("""
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from lessonlib import data
from lessonlib.generate import Cutouts, generate, ink_penalty, parse_prompts, spherical_distance
from lessonlib.judge import judge, object_prompts
from lessonlib.models import TINY_GUIDE_WEIGHTS, load_tiny_clip, load_tiny_clip_config, load_tiny_guides
from lessonlib.vqgan import load_vqgan, tiny_vqgan_info

vqgan = load_vqgan()
clip_model, preprocess, tokenizer = load_tiny_clip()
info = tiny_vqgan_info()
print(f"VQGAN: {vqgan.config.resolution}x{vqgan.config.resolution} images, factor f={vqgan.factor} "
      f"-> {vqgan.config.resolution // vqgan.factor}x{vqgan.config.resolution // vqgan.factor} codes, "
      f"codebook {tuple(vqgan.codebook.shape)}")
print("trained with:", info["command"])
print("quality on unseen images:", info["test_quality"])
"""),
    md("""
## 2. Vector quantisation in pictures

The encoder turns an image into a grid of vectors; **quantisation** replaces each vector by the
*nearest* of the codebook's vectors, so the image becomes a grid of code numbers; the decoder paints
from the codes. Below, for a few Shapes World images: the original, its 8x8 grid of code numbers
(each colour is one code), and what the decoder paints back. Look at how the black background is the
same few codes everywhere, and how each shape needs its own codes at its edges.
"""),
    code("""
ds = data.ShapesWorld(5, split="all", seed=7, image_size=vqgan.config.resolution, max_objects=2)
x = torch.stack([ds.tensor(i) for i in range(len(ds))]) * 2 - 1
with torch.no_grad():
    codes = vqgan.encode_to_codes(x)            # (5, 8, 8) integers
    recon = vqgan.decode_codes(codes).add(1).div(2).clamp(0, 1)

fig, axes = plt.subplots(3, len(ds), figsize=(2.2 * len(ds), 6.6))
for i in range(len(ds)):
    axes[0, i].imshow(ds.array(i))
    axes[0, i].set_title(ds.captions[i], fontsize=7)
    axes[1, i].imshow(codes[i], cmap="tab20", interpolation="nearest")
    for (r, c), k in np.ndenumerate(codes[i].numpy()):
        axes[1, i].text(c, r, str(k), ha="center", va="center", fontsize=5)
    axes[2, i].imshow(recon[i].permute(1, 2, 0))
for ax, label in zip(axes[:, 0], ["original", "code numbers", "decoded"]):
    ax.set_ylabel(label)
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
fig.suptitle("An image becomes a grid of code numbers, and back")
plt.tight_layout()
plt.show()
"""),
    md("""
Quantisation itself is three lines: squared distance from every latent vector to every codebook
vector, then the index of the smallest. The next cell writes it out and checks it against the library.
"""),
    code("""
with torch.no_grad():
    z = vqgan.encode(x)                                    # (5, 32, 8, 8) continuous latents
    flat = z.movedim(1, -1).reshape(-1, z.shape[1])        # one row per grid cell
    dist = torch.cdist(flat, vqgan.codebook) ** 2          # (cells, 256) squared distances
    my_codes = dist.argmin(1).view(codes.shape)

assert torch.equal(my_codes, codes), "nearest-code quantisation should match lessonlib"
used = codes.unique().numel()
print(f"{used} different codes used by these {len(ds)} images; "
      f"mean error of the snap: {dist.min(1).values.mean():.4f}")
"""),
    md("""
What does one code paint? Fill the whole 8x8 grid with a single code and decode it. Each tile below is
one codebook entry: most are shades of background, some are pieces of colour, edges and corners. A
generated picture is a mosaic of such pieces, blended by the decoder.
"""),
    code("""
usage = torch.bincount(vqgan.encode_to_codes(
    torch.stack([data.ShapesWorld(200, split="all", seed=1).tensor(i) for i in range(200)]) * 2 - 1
).flatten(), minlength=vqgan.config.n_embed)
popular = usage.argsort(descending=True)[:24]
with torch.no_grad():
    tiles = vqgan.decode_codes(popular.view(-1, 1, 1).expand(-1, 8, 8)).add(1).div(2).clamp(0, 1)

fig, axes = plt.subplots(3, 8, figsize=(12, 4.8))
for ax, tile, k in zip(axes.flat, tiles, popular):
    ax.imshow(tile.permute(1, 2, 0))
    ax.set_title(f"code {int(k)} ({int(usage[k])}x)", fontsize=7)
    ax.axis("off")
fig.suptitle("The 24 most used codebook entries, each decoded as a whole 8x8 grid")
plt.show()
assert info["test_quality"]["psnr_db"] > 24, "the tiny VQGAN should reconstruct unseen images well"
"""),
    md("""
## 3. The VQGAN+CLIP loop

Each step (see `lessonlib/generate.py`, after Katherine Crowson's 2021 notebook):

1. **Straight-through quantisation.** Snap the latents `z` to their nearest codes, `z_q`. The snap has
   no useful gradient, so the backward pass pretends it was the identity: `z + (z_q - z).detach()`.
2. **Decode** `z_q` to an image.
3. **Cutouts.** Take `cutn` random crops (random size and position, a small rotation, flips, a little
   noise and colour jitter), resized to CLIP's input. CLIP must like the picture from many viewpoints,
   which rules out pixel patterns that fool one view.
4. **Spherical-distance loss** between every crop's CLIP embedding and every prompt's:
   `2 * arcsin(|a - b| / 2)^2` on unit vectors, times the prompt's weight (negative: push away).
5. **Backward into `z` only** (all weights frozen) and take an Adam step.

Here are 8 cutouts of one Shapes World image, as CLIP would see them:
"""),
    code("""
image = ds.tensor(0)[None]
cut = Cutouts(cut_size=32)
crops = cut(image, 8, torch.Generator().manual_seed(0)).clamp(0, 1)
fig, axes = plt.subplots(1, 9, figsize=(13, 1.8))
axes[0].imshow(image[0].permute(1, 2, 0))
axes[0].set_title("image")
for i, ax in enumerate(axes[1:]):
    ax.imshow(crops[i].permute(1, 2, 0))
    ax.set_title(f"cutout {i}", fontsize=8)
for ax in axes:
    ax.axis("off")
fig.suptitle("Random cutouts: scale, shift, rotation, flip, noise")
plt.show()
"""),
    md("""
Prompts use the usual VQGAN+CLIP syntax: `|` separates prompts, `:weight` weights one, and a negative
weight steers away from it. Look at how the spherical distance grows with the angle between two
directions and how a negative weight turns a distance into a reward.
"""),
    code("""
print(parse_prompts("a large red circle|a red square:0.5|a blue shape:-1"))

angles = torch.linspace(0, np.pi, 50)
a = torch.stack([torch.ones_like(angles), torch.zeros_like(angles)], 1)
b = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
plt.figure(figsize=(5, 3))
plt.plot(torch.rad2deg(angles), spherical_distance(a, b), label="spherical distance")
plt.plot(torch.rad2deg(angles), 1 - torch.cos(angles), "--", label="1 - cosine")
plt.xlabel("angle between embeddings (degrees)")
plt.ylabel("loss")
plt.title("Spherical distance vs 1 - cosine")
plt.legend()
plt.show()
"""),
    md("""
## 4. Drawing Shapes World prompts, offline

Four prompts "a {size} {colour} {shape}", 150 steps each at 32x32. The tiny models make this take
seconds on a laptop CPU. An **independent judge** (`lessonlib.judge`: pixel colours against Shapes
World's palette, shape masks fitted to the largest blob, the blob's size; no CLIP involved) says what
each picture shows. Look at the titles: what the judge saw, and how long each picture took. Then look
at the pictures: how many blobs, and how sharp are their shapes?
"""),
    code("""
prompts = object_prompts(4, seed=0)
results, verdicts = [], []
for i, prompt in enumerate(prompts):
    result = generate(prompt, vqgan, clip_model, tokenizer, preprocess, size=32, steps=150, cutn=16,
                      chunk=16, seed=i)
    results.append(result)
    verdicts.append(judge(result.image, prompt))

fig, axes = plt.subplots(1, len(prompts), figsize=(3 * len(prompts), 3.4))
for ax, prompt, result, verdict in zip(axes, prompts, results, verdicts):
    ax.imshow(result.image.resize((128, 128), Image.NEAREST))
    ax.set_title(f"{prompt}\\nsaw: {verdict.seen} "
                 f"({'right' if verdict.ok else 'wrong'}), {result.seconds:.0f} s", fontsize=8)
    ax.axis("off")
fig.suptitle("Generated offline, judged without CLIP")
plt.show()
"""),
    md("""
The pictures form over the steps: below, the frames of the first run (kept every 10 steps), and the
loss, which should fall. `result.save_animation(path)` writes the frames as an animated GIF (here into
lessonlib's cache folder, `cfg.cache_dir`).
"""),
    code("""
first = results[0]
fig, axes = plt.subplots(1, len(first.frames), figsize=(1.3 * len(first.frames), 1.8))
for ax, frame, step in zip(axes, first.frames, first.frame_steps):
    ax.imshow(frame)
    ax.set_title(f"step {step}", fontsize=7)
    ax.axis("off")
fig.suptitle(f"'{prompts[0]}' forming")
plt.show()

plt.figure(figsize=(5, 3))
for prompt, result in zip(prompts, results):
    plt.plot(result.losses, label=prompt)
plt.xlabel("step")
plt.ylabel("spherical-distance loss")
plt.title("CLIP loss during generation")
plt.legend(fontsize=7)
plt.show()

cfg.cache_dir.mkdir(parents=True, exist_ok=True)
gif_path = first.save_animation(cfg.cache_dir / "vqgan_clip_offline.gif", fps=8, scale=4)
print("saved", gif_path)
"""),
    md("""
Self-check: the loss falls for every prompt, and the guiding CLIP itself now prefers each picture's
own prompt over the other three (that is what the optimisation was asked to do). The independent
judge is stricter: the colour usually comes out right, the shape and size much less often. A CLIP
this small (its image tower is a ResNet 8 channels wide) is satisfied by blobs of the right colour:
the optimiser found pictures that *fool* the critic rather than pictures of the object. Cutouts
fight that, but not enough here.
"""),
    code("""
with torch.no_grad():
    texts = torch.nn.functional.normalize(clip_model.encode_text(tokenizer(prompts)), dim=-1)
    pics = torch.stack([preprocess(r.image) for r in results])
    sims = torch.nn.functional.normalize(clip_model.encode_image(pics), dim=-1) @ texts.T
print("CLIP similarity, rows: pictures, columns: prompts\\n", sims.numpy().round(2))
print(f"judge: colour right {sum(v.colour_ok for v in verdicts)}/{len(prompts)}, "
      f"shape right {sum(v.shape_ok for v in verdicts)}/{len(prompts)}, "
      f"size right {sum(v.size_ok for v in verdicts)}/{len(prompts)}, "
      f"all three {sum(v.ok for v in verdicts)}/{len(prompts)}")
assert all(np.mean(r.losses[-10:]) < np.mean(r.losses[:10]) for r in results), "loss should fall"
assert (sims.argmax(1) == torch.arange(len(prompts))).float().mean() >= 0.75
"""),
    md("""
### A critic that is harder to fool

Two remedies from the literature, combined:

* **Several critics that must all agree.** A picture that fools one small network rarely fools
  another trained from a different random start. `CLIPEnsemble` joins the members' unit embeddings, so
  the spherical-distance loss becomes the mean of the members' losses. (Big VQGAN+CLIP and
  CLIP-guided diffusion notebooks do the same with ViT-B/32, ViT-B/16 and RN50 together.)
* **Adversarially trained critics.** While fine-tuning, half of every batch is replaced by the worst
  picture within a small distance of the real one (`lessonlib.train.l2_attack`: a few steps of
  gradient *ascent* on the loss, kept inside an L2 ball). The critic learns to ignore changes too
  small to see, and its gradients start to point at changes a person *would* see: edges and shapes
  ("robust models have perceptually aligned gradients", Santurkar et al. 2019). They pay for it in
  accuracy, as the table printed below shows.

`load_tiny_guides()` loads five tiny CLIPs as one critic: the shipped one, two retrained with other
seeds, and two fine-tuned adversarially (radius 1.0 and 0.5). Each file's `.json` has the command that
made it. Same prompts, same seeds as above; only the critic changes. Each picture takes about three
times longer.
"""),
    code("""
guide, _, _ = load_tiny_guides()
for path in TINY_GUIDE_WEIGHTS:
    info_m = load_tiny_clip_config(path)
    print(f"{path.name:32s} zero-shot accuracy on seen pairs {info_m['accuracy']['seen_pairs']:.0%}  "
          f"({info_m['command']})")

guided, guided_verdicts = [], []
for i, prompt in enumerate(prompts):
    result = generate(prompt, vqgan, guide, tokenizer, preprocess, size=32, steps=150, cutn=16,
                      chunk=16, seed=i)
    guided.append(result)
    guided_verdicts.append(judge(result.image, prompt))

fig, axes = plt.subplots(2, len(prompts), figsize=(3 * len(prompts), 6.6))
for row, (name, res, ver) in enumerate([("tiny CLIP", results, verdicts),
                                        ("5-CLIP guide", guided, guided_verdicts)]):
    for ax, prompt, result, verdict in zip(axes[row], prompts, res, ver):
        ax.imshow(result.image.resize((128, 128), Image.NEAREST))
        ax.set_title(f"{name}: {prompt}\\nsaw: {verdict.seen} "
                     f"({'right' if verdict.ok else 'wrong'}), {result.seconds:.0f} s", fontsize=7)
        ax.axis("off")
fig.suptitle("The same prompts and seeds, two critics")
plt.show()
for name, ver in [("tiny CLIP alone", verdicts), ("5-CLIP guide", guided_verdicts)]:
    print(f"{name:16s} judged right {sum(v.ok for v in ver)}/{len(ver)}  (colour "
          f"{sum(v.colour_ok for v in ver)}, shape {sum(v.shape_ok for v in ver)}, "
          f"size {sum(v.size_ok for v in ver)})")
"""),
    md("""
Self-check: the guided pictures should pass at least as many of the judge's colour, shape and size
checks as the tiny CLIP's (counting checks rather than whole pictures is steadier on four prompts). Over
twenty prompts (BENCHMARKS.md, Lesson 04) the guide gets 11 right against 2 for the tiny CLIP
alone, and 23 of all 48 prompts: a large step, still far from perfect. Why it is hard, measured:

* The shapes are only 6 to 10 pixels wide. This tiny VQGAN cannot even *reconstruct* a small cross
  (0 of 48 judged right) and loses more than half of the small circles; a VQGAN with finer codes (a 16x16 grid)
  reconstructs all of them, but then the critics are fooled more easily.
* The tiny CLIPs read shapes from a few edge pixels: blurred slightly (sigma 0.7 pixels), real
  renders are classified by shape only half the time. A VQGAN's pictures are soft.
* A quarter of the prompts are colour + shape pairs that lesson 01 kept out of training.

Critics retrained on every pair and on blurred pictures draw cleaner triangles and squares, but
several copies of them (they never saw a picture with two objects), so they were not better overall.
"""),
    code("""
def points(vs):  # colour, shape and size checks passed, out of 3 per picture
    return sum(v.colour_ok + v.shape_ok + v.size_ok for v in vs)


print(f"checks passed: tiny CLIP {points(verdicts)}/12, guide {points(guided_verdicts)}/12")
assert points(guided_verdicts) >= points(verdicts), "the guide should do at least as well"
assert all(np.mean(r.losses[-10:]) < np.mean(r.losses[:10]) for r in guided), "loss should fall"
"""),
    md("""
### Negative prompts and init images

Start from an existing picture instead of random codes (`init_image=`), and steer with a weighted
negative prompt. Here the start is a large blue square; the prompt asks for red and pushes away from
blue. Look at which of the colour, the shape and the size the optimisation changes.
"""),
    code("""
start = data.render([data.ShapeObject("square", "blue", "large")], image_size=32)
edit = generate("a large red square|a blue square:-0.5", vqgan, guide, tokenizer, preprocess,
                size=32, steps=100, cutn=16, chunk=16, init_image=start, seed=0)
fig, axes = plt.subplots(1, 2, figsize=(5, 2.8))
for ax, img, title in zip(axes, [start, edit.image], ["init image", "after 100 steps"]):
    ax.imshow(img.resize((128, 128), Image.NEAREST))
    ax.set_title(title)
    ax.axis("off")
fig.suptitle("'a large red square|a blue square:-0.5' from a blue square")
plt.show()
print(judge(edit.image, "a large red square"))
"""),
    md("""
### A prior over codes: what taming-transformers and DALL-E add

Every run above starts from *random* codes, and nothing in the loop knows what a Shapes World picture
looks like: only the critic does, and a small critic is easy to please with blobs. Taming-transformers
and DALL-E add the missing piece, a **prior**: a transformer trained to continue the sequence
`caption words, code 1, code 2, ...`. It reads the caption and then *writes* the picture's codes one by
one, left to right and top to bottom, each drawn from a probability table over the codebook. Its
samples are plausible code grids by construction.

`lessonlib.prior` is one at Shapes World size: a 0.9 M-parameter GPT over the codes of a second tiny
VQGAN with finer codes (a 16x16 grid, so that it can draw a small cross). `draw` does what DALL-E does:

1. **sample** 16 candidates, with **classifier-free guidance** (during training the caption was
   blanked 10% of the time, so the model also knows the caption-free odds; sampling exaggerates the
   difference the caption makes, here twice) and **top-k** sampling (only the 16 likeliest codes at
   each step);
2. **rerank**: a CLIP scores each candidate and the best one is kept (DALL-E's CLIP reranking). The
   reranker here is three more tiny CLIPs (`load_tiny_rerankers()`), trained on every colour + shape
   pair and on blurred pictures, so that soft pictures do not confuse them;
3. optionally **refine** the kept candidate with VQGAN+CLIP steps (`refine_steps=`, which calls
   `generate(..., init_codes=...)`).

Same four prompts and seeds as above. Each row: the 16 candidates with the reranker's score (the kept
one framed in green) and the judge's verdict on the kept one.
"""),
    code("""
from lessonlib.models import load_tiny_rerankers
from lessonlib.prior import draw, load_prior, tiny_prior_info

prior, vqgan_f2 = load_prior()
reranker, _, _ = load_tiny_rerankers()
prior_info = tiny_prior_info()
print(f"prior: {sum(p.numel() for p in prior.parameters()) / 1e6:.2f} M parameters, "
      f"{prior.config.grid[0]}x{prior.config.grid[1]} codes from {prior.config.n_codes}")
print("trained with:", prior_info["command"])

drawn = [draw(prompt, prior, vqgan_f2, reranker, tokenizer, preprocess, candidates=16, guidance=2.0,
              top_k=16, seed=i)
         for i, prompt in enumerate(prompts)]
drawn_verdicts = [judge(d.image, prompt) for d, prompt in zip(drawn, prompts)]

k = len(drawn[0].candidates)
fig, axes = plt.subplots(len(prompts), k, figsize=(0.8 * k, 1.05 * len(prompts)))
for row, (prompt, d, verdict) in enumerate(zip(prompts, drawn, drawn_verdicts)):
    for col, cand in enumerate(d.candidates):
        ax = axes[row, col]
        ax.imshow(cand)
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_color("lime" if col == d.chosen else "none")
            side.set_linewidth(3)
        ax.set_title(f"{d.scores[col]:.2f}", fontsize=5)
    axes[row, 0].set_ylabel(f"{prompt}\\n{'right' if verdict.ok else 'wrong'}, {d.seconds:.1f} s",
                            fontsize=5)
fig.suptitle("The prior's candidates, the reranker's scores, the kept one framed", fontsize=8)
plt.show()
for name, ver in [("5-CLIP guide", guided_verdicts), ("prior + reranker", drawn_verdicts)]:
    print(f"{name:16s} judged right {sum(v.ok for v in ver)}/{len(ver)}  (colour "
          f"{sum(v.colour_ok for v in ver)}, shape {sum(v.shape_ok for v in ver)}, "
          f"size {sum(v.size_ok for v in ver)})")
"""),
    md("""
Self-check: the prior's pictures should pass at least as many of the judge's checks as the guide's
from random codes, in a fraction of the time. Over all 48 prompts (BENCHMARKS.md, Lesson 04) the
prior's first sample alone is judged right 29 times, some candidate is right for all 48, and the
reranker keeps a right one 46 times (96%, about 2 s per picture on one core), against 23 for
VQGAN+CLIP from random codes. Two things that did *not* help, measured:

* the five-CLIP guide as the reranker: 36 of 48 with 16 candidates. A critic that is good at steering
  an optimisation is not necessarily good at telling two pictures apart;
* refining the kept picture with 30 VQGAN+CLIP steps (`refine_steps=30, lr=0.05`): 40 of 48. Even
  starting from a clean picture, the optimisation drifts towards what pleases the tiny critics.

The price: a prior must be trained for every VQGAN and every kind of picture (here about 50 minutes
on two CPU cores, on all 48 colour + shape + size combinations), while CLIP guidance works with any
VQGAN and any prompt CLIP understands. That is the trade-off between DALL-E's recipe and VQGAN+CLIP.
"""),
    code("""
print(f"checks passed: guide from random codes {points(guided_verdicts)}/12, "
      f"prior + reranker {points(drawn_verdicts)}/12")
assert points(drawn_verdicts) >= points(guided_verdicts), "the prior should help"
assert all(d.image.size == (32, 32) and d.chosen == int(np.argmax(d.scores)) for d in drawn)
"""),
    md("""
## 5. Pretrained: CLIP ViT-B-32 + taming's `vqgan_imagenet_f16_16384`

With internet (`cfg.mode == "pretrained"`) the same `generate` call drives the real models: OpenCLIP
ViT-B-32 and the ImageNet VQGAN of taming-transformers (f=16, 16,384 codes), loaded from its `.ckpt` and
`.yaml` by `lessonlib.vqgan` without pytorch-lightning and without importing any class the yaml names.
On a GPU (a free Colab T4 has room for it) the cell runs 200 steps at 256x256 with 32 cutouts; on a
CPU it runs a 5-step demo at 128x128 with 8 cutouts, just to show the pieces working (the next cell
picks by device). Every weight is frozen; the decoder and CLIP's image tower run in bfloat16 where
that is faster (on a 2-core CPU with native bfloat16, ViT-B-32's forward and backward pass is 2.3x
faster), and the decoder's high-resolution levels are recomputed in the backward pass instead of
stored. No init image is used, so the VQGAN is loaded without its encoder.

On a machine with 2 GB of memory (Binder), also keep only what the loop needs:
`guide = ImageGuide(big_clip, big_tokenizer, prompt, dtype=torch.bfloat16)` embeds the prompt once and
keeps a bfloat16 copy of the image tower; after `del big_clip` pass `guide` in its place. At 256x256
with 32 cutouts that peaks at 1.8 GB and takes about 4 s a step on 2 cores, against 4.5 GB and 8.8 s
for the widely used public loop (BENCHMARKS.md, Lesson 04).
"""),
    code("""
if cfg.mode == "pretrained":
    from lessonlib.registry import load_clip
    from lessonlib.vqgan import load_pretrained_vqgan

    big_clip, big_preprocess, big_tokenizer = load_clip("ViT-B-32")
    big_vqgan = load_pretrained_vqgan("vqgan_imagenet_f16_16384", with_encoder=False).to(cfg.device)
    on_gpu = cfg.device != "cpu"
    big = generate(
        "a watercolour painting of a lighthouse at dawn|blurry:-0.5",
        big_vqgan, big_clip, big_tokenizer, big_preprocess,
        size=256 if on_gpu else 128,
        steps=200 if on_gpu else 5,
        cutn=32 if on_gpu else 8,
        seed=0,
    )
    plt.imshow(big.image)
    plt.title(f"ViT-B-32 + vqgan_imagenet_f16_16384, {len(big.losses)} steps, {big.seconds:.0f} s")
    plt.axis("off")
    plt.show()
    print("saved", big.save_animation(cfg.cache_dir / "vqgan_clip_pretrained.gif"))
else:
    print("offline mode: the pretrained models are skipped (run lessonlib.setup(mode='pretrained') online)")
"""),
    md("""
## 6. Your turn: a prompt box with a live preview

Type a prompt (weights and negative prompts allowed) and press **Draw**; the picture updates every 10
steps while it forms. In pretrained mode, swap in `big_vqgan, big_clip, big_tokenizer, big_preprocess`.
The cell also draws one prompt directly, so it shows something when run without clicking.
"""),
    code("""
import ipywidgets as widgets
from IPython.display import display


def png_bytes(img, scale=6):
    import io

    buf = io.BytesIO()
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


prompt_box = widgets.Text(value="a small yellow triangle", description="prompt")
draw_button = widgets.Button(description="Draw")
preview = widgets.Image(format="png", width=192, height=192)
status = widgets.Label()


def draw(_=None):
    def show(step, frame, loss):
        preview.value = png_bytes(frame)
        status.value = f"step {step}, loss {loss:.3f}"

    try:
        out = generate(prompt_box.value, vqgan, guide, tokenizer, preprocess, size=32,
                       steps=150, cutn=16, chunk=16, seed=0, progress=False, callback=show)
    except ValueError as err:  # a malformed prompt: show the message instead of a traceback
        status.value = str(err)
        return None
    preview.value = png_bytes(out.image)
    status.value = f"done in {out.seconds:.1f} s"
    return out


draw_button.on_click(draw)
display(widgets.VBox([widgets.HBox([prompt_box, draw_button]), preview, status]))
demo = draw()
print(status.value, "|", judge(demo.image, prompt_box.value))
"""),
    md("""
## Summary

* A **VQGAN** encodes an image into a grid of vectors, snaps each to the nearest **codebook** entry and
  decodes the grid of codes; the codebook is a learned alphabet of image pieces.
* **VQGAN+CLIP** optimises the latent grid so that CLIP finds the decoded picture close to the prompt:
  straight-through quantisation carries gradients through the snap, random **cutouts** stop the
  optimiser from fooling CLIP with one view, and the **spherical distance** is the loss.
* Prompts can be **weighted** and **negative** (`"a|b:0.5|c:-1"`), and an **init image** sets the start.
* Model weights are frozen: only the latents are optimised, which also keeps it fast.
* Offline, a tiny VQGAN and the tiny CLIP draw Shapes World prompts in seconds; a judge that never looks
  through CLIP shows the limits: the right colour usually, the right shape rarely, because a tiny
  critic is easy to fool. A critic of five tiny CLIPs, two of them **adversarially trained**, is much
  harder to fool: about half the pictures are then judged right.
* A **prior over codes** (a small GPT that writes a picture's codes one by one after the caption, as in
  taming-transformers and DALL-E) proposes plausible pictures; CLIP **reranks** them and VQGAN+CLIP
  can refine the best one. With a reranker trained for soft pictures, 46 of 48 prompts are judged
  right, in about 2 seconds each.
* Online, the same code runs ViT-B-32 with taming's ImageNet VQGAN; on a CPU it runs CLIP in
  bfloat16 and can keep only the image tower (`ImageGuide`), twice as fast as the usual public loop
  and within 2 GB.

## Exercises

1. Pass `cutouts=Cutouts(32, scale=(1.0, 1.0), rotate_degrees=0, flip=False, noise=0, jitter=0)`
   and `cutn=1` to `generate`. How do the pictures and the judge's verdicts change? Then try stronger
   augmentations (`scale=(0.6, 1.0)`, `rotate_degrees=30`).
2. Shapes World pictures hold one object on black. Add that prior: `image_loss=ink_penalty(2.0)` (every
   bright pixel costs a little). Does the judge agree more often over `object_prompts(10)`?
3. Replace the spherical distance by `1 - cosine`. Compare the loss curves and the judged results over
   the ten prompts of `object_prompts(10)`.
4. Remove the straight-through trick (decode `z` without quantising). What do the pictures look like?
5. Generate "a large red circle|a circle:-1". What does a negative prompt that contradicts the positive
   one do?
6. Pretrained mode: try `size=(384, 256)`, and an init image of your own with `init_weight=0.5`.
7. Which members of the guide matter? Build `CLIPEnsemble` from subsets of the five models in
   `load_tiny_guides().members` (e.g. only the two robust ones, or the three ordinary ones) and judge
   `object_prompts(10)` with each. Then train your own robust critic:
   `python -m lessonlib.train_tiny_clip --init shipped --adversarial-eps 2.0 --augment --steps 300
   --out my_robust.safetensors` and add it.
8. Train a critic that knows every pair and blurred pictures (about 4 minutes):
   `python -m lessonlib.train_tiny_clip --split all --blur 1.0 --max-objects 3 --seed 13
   --out my_critic.safetensors`. Guide with it (alone, or added to the guide) and count the copies of
   the object in each picture. Which prior would make the critic want exactly one?
9. The prior: draw `object_prompts(10)` with `candidates=1`, then 4, then 16. How much does
   reranking add? Rerank with `guide` instead of `reranker`. Try `guidance=1.0` and `3.0`,
   `temperature=0.7`, and `refine_steps=30, lr=0.05`. Then look at what the prior has learnt on its
   own: `prior.sample("a circle", n=8)` and, with `guidance=0.0`, the caption-free pictures.

## References

* P. Esser, R. Rombach, B. Ommer. *Taming Transformers for High-Resolution Image Synthesis.* CVPR 2021.
  Code and checkpoints: https://github.com/CompVis/taming-transformers
* A. van den Oord, O. Vinyals, K. Kavukcuoglu. *Neural Discrete Representation Learning* (VQ-VAE).
  NeurIPS 2017.
* A. Radford et al. *Learning Transferable Visual Models From Natural Language Supervision* (CLIP).
  ICML 2021.
* K. Crowson et al. *VQGAN-CLIP: Open Domain Image Generation and Editing with Natural Language
  Guidance.* ECCV 2022; the original Colab notebook by Katherine Crowson (2021).
* nerdyrodent/VQGAN-CLIP, the widely used command-line version: https://github.com/nerdyrodent/VQGAN-CLIP
* OpenCLIP: https://github.com/mlfoundations/open_clip
* A. Ramesh et al. *Zero-Shot Text-to-Image Generation* (DALL-E). ICML 2021: a transformer over
  text and image tokens, samples reranked by CLIP.
* J. Ho, T. Salimans. *Classifier-Free Diffusion Guidance.* 2021 (the guidance trick, used for
  autoregressive priors too).
* A. Karpathy, minGPT: https://github.com/karpathy/minGPT (the GPT that taming-transformers' prior is
  built on).
* A. Madry et al. *Towards Deep Learning Models Resistant to Adversarial Attacks.* ICLR 2018
  (adversarial training with projected gradient descent).
* S. Santurkar et al. *Image Synthesis with a Single (Robust) Classifier.* NeurIPS 2019; D. Tsipras et
  al. *Robustness May Be at Odds with Accuracy.* ICLR 2019 (robust models' gradients look like
  images).
"""),
]

if __name__ == "__main__":
    path = build(
        "04_vqgan_clip.ipynb",
        "04 · Image generation with VQGAN+CLIP",
        INTRO,
        CELLS,
    )
    print("wrote", path)
