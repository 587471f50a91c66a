"""Regenerate notebooks/01_clip_concepts.ipynb: python scripts/make_notebook_01.py"""

from nbbuild import build, code, md

INTRO = """
CLIP learns one space for pictures and sentences: an image and the caption that describes it land close
together, an image and an unrelated caption land far apart. Nobody labels classes; the training signal
is only *which caption belongs to which image in a batch*.

In this lesson you will

* compute **embeddings** and their **cosine similarity** by hand;
* read the **symmetric contrastive (InfoNCE) loss** in six lines and see what its **temperature** does;
* look at a batch's **similarity matrix** before training (noise) and after (a bright diagonal);
* **train a tiny CLIP from scratch**, live, on a CPU, on *Shapes World*, a data set the course draws itself;
* load the course's fully trained tiny CLIP and test it on colour + shape pairs it **never saw**;
* look at the joint image-text space in 2-D, and (with internet) do the same for a real CLIP.

Everything here runs offline on a laptop CPU in a few minutes.
"""

SETUP = """
import lessonlib

cfg = lessonlib.setup()
"""

CELLS = [
    md("""
## 1. Shapes World

Real CLIPs learn from hundreds of millions of captioned web images. We need something a CPU can learn in
a minute, where we know the truth about every picture: **Shapes World**. Each image holds a shape
(circle, square, triangle, cross) in one of six colours, small or large, somewhere on a 3x3 grid.
Captions vary in detail: "a circle", "a red shape", "a red circle", "a small red circle at the top".

Six colour + shape pairs (`HELD_OUT_PAIRS`) never appear in the training split. Every colour and every
shape does appear, with other partners, so a model that learned *colour* and *shape* as separate ideas
can still name them. Look at the captions: which ones say only the colour, or only the shape?
"""),
    code("""
import inspect
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from lessonlib import data, models, train
from lessonlib.loss import clip_loss, diagonal_accuracy, similarity_matrix

print("shapes: ", data.SHAPES)
print("colours:", data.COLOURS)
print("held out of training:", [f"{c} {s}" for c, s in data.HELD_OUT_PAIRS])

world = data.ShapesWorld(12, split="train", seed=1, image_size=64, max_objects=2)
fig, axes = plt.subplots(2, 6, figsize=(13, 5))
for i, ax in enumerate(axes.flat):
    ax.imshow(world.pil(i))
    ax.set_title(world.captions[i].replace(" and ", "\\nand "), fontsize=8)
    ax.axis("off")
fig.suptitle("Shapes World training images and their captions (64x64, up to 2 objects)")
plt.show()
"""),
    md("""
## 2. Embeddings and cosine similarity, by hand

An encoder turns an image or a sentence into a vector, its **embedding**. CLIP compares two embeddings
with the **cosine similarity**: the dot product of the vectors divided by their lengths,
$\\cos(a, b) = \\frac{a \\cdot b}{\\lVert a\\rVert\\,\\lVert b\\rVert}$, which is 1 for the same direction,
0 for unrelated (orthogonal) and -1 for opposite. Below, four made-up 3-D embeddings: two images and two
captions. Compute the similarity yourself, then check it against PyTorch.
"""),
    code("""
# Made-up embeddings: axis 0 ~ "red", axis 1 ~ "round", axis 2 ~ "blue"
image_red_circle = np.array([0.9, 0.8, 0.1])
image_blue_square = np.array([0.1, 0.0, 1.0])
text_red_circle = np.array([1.0, 0.6, 0.0])
text_blue_square = np.array([0.0, 0.1, 0.8])


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


table = np.array(
    [
        [cosine(image_red_circle, text_red_circle), cosine(image_red_circle, text_blue_square)],
        [cosine(image_blue_square, text_red_circle), cosine(image_blue_square, text_blue_square)],
    ]
)
print("rows: images (red circle, blue square); columns: texts (red circle, blue square)")
print(table.round(3))
"""),
    md("""
Self-check: our hand-written `cosine` agrees with PyTorch, matching pairs score higher than mismatched
ones, and after scaling every vector to length 1 (as CLIP does with `normalize=True`) the cosine is a
plain dot product.
"""),
    code("""
torch_cos = F.cosine_similarity(torch.tensor(image_red_circle), torch.tensor(text_red_circle), dim=0)
assert abs(table[0, 0] - float(torch_cos)) < 1e-9
assert table[0, 0] > table[0, 1] and table[1, 1] > table[1, 0]
unit_image = image_red_circle / np.linalg.norm(image_red_circle)
unit_text = text_red_circle / np.linalg.norm(text_red_circle)
assert abs(unit_image @ unit_text - table[0, 0]) < 1e-12
print("cosine by hand == torch; matching pairs win; on unit vectors cosine is the dot product")
"""),
    md("""
## 3. The contrastive loss

Take a batch of $n$ images and their $n$ captions. Embed both, normalise, and fill the $n \\times n$
matrix of cosine similarities: row $i$ compares image $i$ with every caption, and the right caption sits
on the **diagonal**. The loss asks each row to pick its diagonal entry (a classification over the $n$
captions) and each column to pick its diagonal entry (over the $n$ images), then averages the two.
That is **InfoNCE**, made symmetric. Before the softmax the similarities are multiplied by
$e^{t}$, where $t$ is a learned number (`model.logit_scale`; the **temperature** is $1/e^{t}$).

Here is the whole loss, as `lessonlib` defines it; compare it with the pseudo-code of the CLIP paper
(Figure 3 there). `tests/test_loss.py` checks it against `open_clip.loss.ClipLoss` to 1e-5.
"""),
    code("""
print(inspect.getsource(clip_loss).split('\"\"\"')[-1])
"""),
    md("""
What values does it take? With perfectly matching embeddings it goes to 0; with random ones it is about
$\\ln n$, the loss of guessing among $n$ captions. The temperature decides how sharply the softmax picks:
the plot shows the loss of a *correct* but imperfect batch as the logit scale grows. Look for where the
curve flattens, and note that a too-high temperature (small scale) cannot reach a low loss even when
every row is right.
"""),
    code("""
n, dim = 16, 32
gen = torch.Generator().manual_seed(0)
truth = F.normalize(torch.randn(n, dim, generator=gen), dim=-1)
noisy = F.normalize(truth + 0.6 * torch.randn(n, dim, generator=gen), dim=-1)  # right, but not exact
random_texts = F.normalize(torch.randn(n, dim, generator=gen), dim=-1)

scales = torch.linspace(0, np.log(100), 40)
losses = [float(clip_loss(truth, noisy, s)) for s in scales]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(torch.exp(scales), losses, marker=".")
ax.axhline(np.log(n), color="grey", ls="--", label=f"ln n = {np.log(n):.2f} (guessing)")
ax.set_xscale("log")
ax.set_xlabel("logit scale exp(t) = 1 / temperature")
ax.set_ylabel("contrastive loss")
ax.set_title(f"Loss of a noisy but correct batch (n={n}) against the logit scale")
ax.legend()
plt.show()
print(f"diagonal hits of the noisy batch: {diagonal_accuracy(similarity_matrix(truth, noisy)):.0%}")
"""),
    md("""
Self-check: identical pairs give almost no loss at CLIP's largest scale (100), random pairs give about
$\\ln n$ at scale 1, a correct batch has lower loss than a shuffled one, and a batch of one pair is
refused: with nothing to contrast against, the loss means nothing.
"""),
    code("""
scale = torch.tensor(np.log(100.0))
assert float(clip_loss(truth, truth, scale)) < 1e-3
assert abs(float(clip_loss(truth, random_texts, torch.tensor(0.0))) - np.log(n)) < 0.1
assert float(clip_loss(truth, noisy, scale)) < float(clip_loss(truth, noisy.roll(1, 0), scale))
try:
    clip_loss(truth[:1], noisy[:1], scale)
except ValueError as err:
    print("batch of one:", err)
else:
    raise AssertionError("a batch of one pair must be refused")
"""),
    md("""
## 4. A tiny CLIP, before training

The tiny CLIP is open_clip's own `CLIP` class, the same class as the real ViT-B-32, only small: a
ResNet image tower (OpenAI's `ModifiedResNet`, 8 stem channels) and a 2-layer text transformer over a
word-level vocabulary of a few dozen words. Both towers end in a 64-dimensional space. Its config:
"""),
    code("""
tiny_cfg = models.TinyCLIPConfig()
model = models.build_tiny_clip(tiny_cfg)
tokenizer = models.make_tokenizer(tiny_cfg)
print({k: v for k, v in tiny_cfg.to_dict().items() if k != "words"})
print(f"{type(model).__module__}.{type(model).__name__}: {models.count_parameters(model):,} parameters")
print("tokens of 'an orange circle':", tokenizer(["an orange circle"])[0, :6].tolist())
"""),
    md("""
A probe batch: one large image of each of the 18 colour + shape pairs of the training split, with its
plain caption. Before training the similarity matrix is noise: no row has a clear winner, and the
diagonal is not special.
"""),
    code("""
probe_pairs = data.seen_pairs()
probe_objects = [data.ShapeObject(s, c, "large", "in the middle") for c, s in probe_pairs]
probe_images = torch.stack(
    [torch.from_numpy(data.render_array([o])).permute(2, 0, 1).float() / 255 for o in probe_objects]
)
probe_texts = [data.caption([o], "simple") for o in probe_objects]


def probe_similarity(model):
    image_f, text_f = train.embed_batch(model, tokenizer, probe_images, probe_texts, tiny_cfg.mean, tiny_cfg.std)
    return similarity_matrix(image_f, text_f, normalize=False)


def show_matrix(sim, title):
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(sim.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(probe_texts)), probe_texts, rotation=90)
    ax.set_yticks(range(len(probe_texts)), [f"image of {t.split(' ', 1)[1]}" for t in probe_texts])
    ax.set_xlabel("caption")
    ax.set_ylabel("image")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="cosine similarity")
    plt.show()


sim_before = probe_similarity(model)
show_matrix(sim_before, f"Before training: diagonal hits {diagonal_accuracy(sim_before):.0%}")
"""),
    md("""
## 5. Train it, live

`train.train_clip` is the loop from the paper: embed a batch of images and captions, compute
`clip_loss`, step the optimiser. Each epoch draws fresh Shapes World images (never a held-out pair).
One twist, which matters later: when a caption names no colour ("a triangle"), the picture is redrawn
in grey or cyan, colours no caption ever names (`train.RecolourWhenColourUnsaid`), so the model sees
every shape in more colours than the six it has words for.

The progress bar counts steps; the figure below it redraws every 40 steps: the loss curve on the left,
the probe batch's similarity matrix on the right. Watch the diagonal appear. (This takes a minute or
two on a laptop CPU.)
"""),
    code("""
LIVE_STEPS = 400
# A model this small trains fastest on one thread: with two, thread hand-offs cost more than they save
# (BENCHMARKS.md, lesson 01: 39 s on one thread against 509 s on two, on a busy 2-core machine).
torch.set_num_threads(1)
torch.manual_seed(cfg.seed)
model = models.build_tiny_clip(tiny_cfg)
live = train.LivePlot(model, tokenizer, probe_images, probe_texts, mean=tiny_cfg.mean, std=tiny_cfg.std)


def fresh_images(epoch):
    world = data.ShapesWorld(6400, split="train", seed=1000 + epoch, detail="random")
    return train.RecolourWhenColourUnsaid(world, seed=epoch)


start = time.perf_counter()
history = train.train_clip(
    model, tokenizer, fresh_images, steps=LIVE_STEPS, batch_size=64, lr=3e-3, warmup=30,
    mean=tiny_cfg.mean, std=tiny_cfg.std, callback=live, callback_every=40, seed=cfg.seed,
)
print(f"{history.steps} steps, {history.images_seen:,} images in {time.perf_counter() - start:.0f} s; "
      f"temperature {history.temperature[0]:.3f} -> {history.temperature[-1]:.3f}")
"""),
    md("""
## 6. After training

The same probe batch through the trained model: the diagonal lights up, each image now prefers its own
caption. Then a real test: zero-shot classification of 500 *fresh* images of the training pairs, with the
prompt "a {colour} {shape}" for each of the 24 colour x shape classes.
"""),
    code("""
sim_after = probe_similarity(model)
show_matrix(sim_after, f"After {history.steps} steps: diagonal hits {diagonal_accuracy(sim_after):.0%}")
preprocess = models.make_preprocess(tiny_cfg)
live_seen = train.zero_shot_accuracy(model, tokenizer, preprocess, split="test", n=500, seed=5)
live_held = train.zero_shot_accuracy(model, tokenizer, preprocess, split="held_out", n=500, seed=5)
print(f"live model, zero-shot top-1: seen pairs {live_seen:.1%}, held-out pairs {live_held:.1%} (chance 4.2%)")
"""),
    md("""
Self-check: the loss fell well below its starting value ($\\approx \\ln 64 = 4.16$), the similarity
matrix became diagonal (most images pick their own caption, far more than before), and the short run
already classifies fresh images of the training pairs.
"""),
    code("""
first, last = np.mean(history.loss[:20]), np.mean(history.loss[-20:])
print(f"loss {first:.2f} -> {last:.2f}; diagonal hits {diagonal_accuracy(sim_before):.0%} -> "
      f"{diagonal_accuracy(sim_after):.0%}; mean diagonal similarity {sim_after.diag().mean():.2f} "
      f"vs off-diagonal {(sim_after.sum() - sim_after.diag().sum()) / (sim_after.numel() - len(sim_after)):.2f}")
assert last < 0.7 * first
assert diagonal_accuracy(sim_after) >= 0.75 and diagonal_accuracy(sim_after) > diagonal_accuracy(sim_before)
assert sim_after.diag().mean() > sim_after.mean() + 0.2
assert live_seen >= 0.8
"""),
    md("""
## 7. The course's tiny CLIP

The short run above is a demo. The course ships a tiny CLIP trained for longer (the command that
reproduces it is saved beside the weights, with its measured accuracy). `load_tiny_clip` returns the same
three things as open_clip's loaders: `(model, preprocess, tokenizer)`. The weights are a safetensors
file, stored in half precision (under 1 MB). The most interesting number is the accuracy on the held-out
pairs: images of colour + shape combinations that the model never saw, named with prompts it never read.

Getting that number up was the design work behind the model (the experiments are in `BENCHMARKS.md`):
with captions of varying detail alone it scored about 54% on held-out pairs. The image tower had tied
shapes to the colours it saw them in: on a red triangle it often answered "a red cross". Redrawing
colour-less captions' pictures in grey or cyan, colours no caption names, raised it to about 80%. A
wider image tower did worse (41%): more capacity, more memorising of the 18 training pairs.
"""),
    code("""
tiny, tiny_preprocess, tiny_tokenizer = models.load_tiny_clip()
info = models.load_tiny_clip_config()
print(f"reproduce with: {models.REPRODUCE_COMMAND} ({info['train_seconds']:.0f} s of training when it was made)")
print("measured when trained:", info["accuracy"])
shipped_seen = train.zero_shot_accuracy(tiny, tiny_tokenizer, tiny_preprocess, "test", n=1000, seed=11)
shipped_held = train.zero_shot_accuracy(tiny, tiny_tokenizer, tiny_preprocess, "held_out", n=1000, seed=11)
print(f"now, on 1,000 fresh images each: seen pairs {shipped_seen:.1%}, held-out pairs {shipped_held:.1%}")
"""),
    md("""
Which classes does it confuse? The confusion matrix counts, for fresh images of every colour + shape
pair (held-out ones included), which class the prompt "a {colour} {shape}" picked. Rows marked with *
are the held-out pairs.
"""),
    code("""
everything = data.ShapesWorld(2400, split="all", seed=21, transform=tiny_preprocess, detail="simple")
with torch.no_grad():
    class_f = tiny.encode_text(tiny_tokenizer(data.class_names(data.SIMPLE_TEMPLATE)), normalize=True)
    image_f = tiny.encode_image(torch.stack([everything[i][0] for i in range(len(everything))]), normalize=True)
predicted = (image_f @ class_f.T).argmax(1).numpy()
truth_idx = everything.class_indices()
n_classes = len(data.class_names())
confusion = np.zeros((n_classes, n_classes), dtype=int)
np.add.at(confusion, (truth_idx, predicted), 1)
held = {data.class_index(c, s) for c, s in data.HELD_OUT_PAIRS}
labels = [name + (" *" if i in held else "") for i, name in enumerate(data.class_names())]
fig, ax = plt.subplots(figsize=(8, 7))
ax.imshow(confusion / confusion.sum(1, keepdims=True), cmap="Blues")
ax.set_xticks(range(n_classes), data.class_names(), rotation=90, fontsize=7)
ax.set_yticks(range(n_classes), labels, fontsize=7)
ax.set_xlabel("predicted class (prompt)")
ax.set_ylabel("true class (* = never seen in training)")
ax.set_title("Shipped tiny CLIP: zero-shot confusion matrix, row-normalised")
plt.show()
"""),
    md("""
Self-check: the shipped model meets the course's targets on fresh images (at least 95% on the pairs
seen in training and at least 80% on held-out pairs, with 4.2% for chance), allowing a little for the
sampling noise of 1,000 images.
"""),
    code("""
assert shipped_seen >= 0.93, shipped_seen
assert shipped_held >= 0.75, shipped_held
"""),
    md("""
## 8. The joint space in 2-D

Images and captions live in one 64-dimensional space. A PCA projects it onto the two directions of
largest variance. Circles are image embeddings, coloured by their object's colour, one marker per shape;
the big outlined markers are the 24 prompt embeddings "a {colour} {shape}". Look for: images of one class
clustering around their prompt, and held-out prompts (labelled) landing among their images anyway.
"""),
    code("""
from sklearn.decomposition import PCA

subset = slice(0, 600)
points = torch.cat([image_f[subset], class_f]).numpy()
xy = PCA(n_components=2, random_state=0).fit_transform(points)
img_xy, txt_xy = xy[:600], xy[600:]
markers = dict(zip(data.SHAPES, ["o", "s", "^", "P"]))
rgb = {c: np.array(v) / 255 for c, v in data.COLOUR_RGB.items()}
fig, ax = plt.subplots(figsize=(8, 7))
for (c, s), (x, y) in zip([everything.label(i) for i in range(600)], img_xy):
    ax.scatter(x, y, color=rgb[c], marker=markers[s], s=12, alpha=0.4)
for (c, s), (x, y) in zip(data.all_pairs(), txt_xy):
    ax.scatter(x, y, color=rgb[c], marker=markers[s], s=220, edgecolors="black", linewidths=1.5)
    if (c, s) in data.HELD_OUT_PAIRS:
        ax.annotate(f"'{c} {s}' (held out)", (x, y), fontsize=8, xytext=(5, 5), textcoords="offset points")
ax.set_xlabel("principal component 1")
ax.set_ylabel("principal component 2")
ax.set_title("Tiny CLIP joint space (PCA): small = images, large outlined = prompts")
plt.show()
"""),
    md("""
Self-check: each prompt is, on average, closer (by cosine similarity) to images of its own class than to
images of any other class, held-out classes included.
"""),
    code("""
mean_sim = np.stack([(image_f[truth_idx == k] @ class_f.T).mean(0).numpy() for k in range(n_classes)])
own_class_wins = (mean_sim.argmax(0) == np.arange(n_classes)).mean()
print(f"prompts whose own class is the closest on average: {own_class_wins:.0%}")
assert own_class_wins >= 0.9
"""),
    md("""
## 9. A real CLIP (pretrained mode)

With internet the same views for a real CLIP: open_clip's ViT-B-32 trained on LAION-2B, loaded through
the course's loader. It was never trained on Shapes World, yet it reads the prompts. The cell is skipped
offline (it needs the 600 MB download); run it on Colab or Binder.
"""),
    code("""
if cfg.mode == "pretrained":
    from lessonlib import registry

    real, real_preprocess, real_tokenizer = registry.load_clip("ViT-B-32", device=cfg.device)
    big = data.ShapesWorld(480, split="all", seed=3, image_size=224, detail="simple")
    with torch.no_grad():
        real_class_f = real.encode_text(real_tokenizer(data.class_names(data.SIMPLE_TEMPLATE)).to(cfg.device), normalize=True)
        real_image_f = torch.cat([
            real.encode_image(torch.stack([real_preprocess(big.pil(i)) for i in range(lo, lo + 60)]).to(cfg.device), normalize=True)
            for lo in range(0, len(big), 60)
        ])
    real_sim = (real_image_f @ real_class_f.T).cpu()
    real_truth = big.class_indices()
    real_acc = float((real_sim.argmax(1).numpy() == real_truth).mean())
    print(f"ViT-B-32, zero-shot on Shapes World (224 px), all 24 classes: {real_acc:.1%}")
    real_probe = torch.stack([real_preprocess(data.render([o], image_size=224)) for o in probe_objects]).to(cfg.device)
    with torch.no_grad():
        probe_sim = similarity_matrix(real.encode_image(real_probe), real.encode_text(real_tokenizer(probe_texts).to(cfg.device))).cpu()
    show_matrix(probe_sim, f"ViT-B-32 on the probe batch: diagonal hits {diagonal_accuracy(probe_sim):.0%}")
    pts = PCA(n_components=2, random_state=0).fit_transform(torch.cat([real_image_f.cpu(), real_class_f.cpu()]).numpy())
    fig, ax = plt.subplots(figsize=(8, 7))
    for (c, s), (x, y) in zip([big.label(i) for i in range(len(big))], pts[: len(big)]):
        ax.scatter(x, y, color=rgb[c], marker=markers[s], s=12, alpha=0.4)
    for (c, s), (x, y) in zip(data.all_pairs(), pts[len(big):]):
        ax.scatter(x, y, color=rgb[c], marker=markers[s], s=220, edgecolors="black", linewidths=1.5)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title("ViT-B-32 joint space (PCA): small = images, large outlined = prompts")
    plt.show()
    # never trained on Shapes World, yet it picks the right caption more often than chance
    chance = 1 / len(probe_texts)
    assert diagonal_accuracy(probe_sim) > chance
else:
    print(f"mode={cfg.mode}: skipping the real CLIP (needs the pretrained weights).")
"""),
    md("""
In the real CLIP's PCA the images often form one cloud and the prompts another: the famous *modality
gap*. Classification still works because it only compares an image with the prompts, and the ordering of
those similarities is what matters.

## Summary

* An encoder maps an image or a sentence to an **embedding**; CLIP compares embeddings by **cosine
  similarity** (a dot product of unit vectors).
* The **symmetric contrastive loss** treats a batch of $n$ pairs as two $n$-way classifications: each
  image must pick its caption, each caption its image. A learned **temperature** sets how sharp the
  softmax is.
* Training turns the batch's **similarity matrix** from noise into a bright diagonal.
* A tiny CLIP (`open_clip.model.CLIP`, under 0.5 M parameters) learns Shapes World on a CPU in minutes,
  and names colour + shape pairs it **never saw**: captions that mention only the colour or only the
  shape, and pictures of shapes in colours no caption names, teach it the two ideas separately.
* Tiny and real CLIPs share one API: `encode_image`, `encode_text`, `logit_scale`.

## Exercises

1. Train the live model with captions of one form only (`detail="simple"` in `fresh_images`), then
   without `RecolourWhenColourUnsaid`. How does the held-out accuracy change? Why?
2. Freeze the temperature (`model.logit_scale.requires_grad_(False)`) at scale 1, then at 100. What
   happens to the loss and to the similarity matrix?
3. Train with `batch_size=8` and with `batch_size=256` for the same number of images. Which learns faster
   per image? What does the batch size change in the loss?
4. Use `max_objects=3` training scenes. Does the model still classify single-object test images?
5. Replace the ResNet image tower by a ViT (`TinyCLIPConfig(vision_layers=2, vision_width=64)`) and
   compare held-out accuracy after the same training.

## References

* A. Radford et al., *Learning Transferable Visual Models From Natural Language Supervision* (CLIP),
  ICML 2021, [arXiv:2103.00020](https://arxiv.org/abs/2103.00020): Figure 3 holds the loss pseudo-code.
* A. van den Oord, Y. Li, O. Vinyals, *Representation Learning with Contrastive Predictive Coding*
  (InfoNCE), 2018, [arXiv:1807.03748](https://arxiv.org/abs/1807.03748).
* [open_clip](https://github.com/mlfoundations/open_clip): the `CLIP` class, `ClipLoss` and the
  pretrained models used here; G. Ilharco et al., *OpenCLIP*, 2021, doi:10.5281/zenodo.5143773.
* W. Liang et al., *Mind the Gap: Understanding the Modality Gap in Multi-modal Contrastive
  Representation Learning*, NeurIPS 2022, [arXiv:2203.02053](https://arxiv.org/abs/2203.02053).
* Shapes World follows the synthetic-scene tradition of J. Johnson et al., *CLEVR*, CVPR 2017,
  [arXiv:1612.06890](https://arxiv.org/abs/1612.06890).
"""),
]

if __name__ == "__main__":
    out = build("01_clip_concepts.ipynb", "01 · CLIP concepts", INTRO, CELLS, setup_code=SETUP)
    print(f"wrote {out}")
