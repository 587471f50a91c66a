"""Regenerate notebooks/02_zero_shot_classification.ipynb: python scripts/make_notebook_02.py"""

from nbbuild import build, code, md

INTRO = """
CLIP was never trained to sort images into classes. Yet it classifies: write every class as a sentence
("a photo of a **cat**."), embed the sentences with the text tower, and give each image the class whose
sentence lies closest to it. Change the sentences and you have a different classifier, with no training.

In this lesson you will

* load real and tiny CLIP models through **one loader** (`lessonlib.registry.load_clip`);
* turn class names and **prompt templates** into a classifier, and see why the wording matters;
* average many templates (**prompt ensembling**) and measure whether it helps;
* evaluate with **top-1 / top-5 accuracy**, a **confusion matrix** and per-image probability bars;
* classify Shapes World images whose colour + shape pair the tiny model **never saw** in training;
* type your own labels into a box and watch the probabilities change.

With internet (Colab, Binder, a laptop online) the photo cells use OpenAI-style CLIP ViT-B-32 trained on
LAION-2B, and a multilingual CLIP reads prompts written in Urdu. Offline, the same story runs on Shapes
World with the course's tiny CLIP.
"""

CELLS = [
    md("""
## 1. One loader for every CLIP

`load_clip(name)` returns `(model, preprocess, tokenizer)`, whatever the model is:

* `"ViT-B-32"`: the course's default real CLIP (open_clip tag `laion2b_s34b_b79k`), downloaded once into
  the course cache;
* `"xlm-roberta-base-ViT-B-32"`: a CLIP whose text tower reads about 100 languages;
* `"tiny"`: the CLIP this course trained on Shapes World (it ships with `lessonlib`);
* an architecture plus a local file: `load_clip("ViT-B-32", pretrained="my_clip.safetensors")`.

Weights are read with safetensors (or `torch.load(weights_only=True)`), never by running pickled code.
The table below lists what the loader knows; *cached* says whether using a model needs a download.
"""),
    code("""
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from lessonlib import data, plotting, registry, widgets
from lessonlib import zeroshot as zs

print(registry.format_models())
"""),
    md("""
Now ask for the default real CLIP. In `pretrained` mode this downloads it (once). In `offline` mode
`load_clip` does not even try the network: it prints **one line** saying so and hands you the tiny model,
so every later cell still runs. Read the line it prints, if any.
"""),
    code("""
model, preprocess, tokenizer = registry.load_clip("ViT-B-32")
n_params = sum(p.numel() for p in model.parameters())
print(f"{type(model).__name__} with {n_params / 1e6:.2f} M parameters, context of {tokenizer.context_length} tokens")
"""),
    md("""
## 2. Real photos: captions, labels and wording (pretrained mode)

The eight photos that ship with scikit-image (the set of OpenAI's *Interacting with CLIP* notebook) and
matplotlib's portrait of Grace Hopper. First, the **similarity heat-map**: each row is a caption, each
column a photo, each cell the cosine similarity of their CLIP embeddings. Look for the brightest cell in
each column: if CLIP understands the photos, it sits on the diagonal, where a photo meets its own
description. (Offline, this cell only shows the photos.)
"""),
    code("""
photos, photo_names = zs.example_photos()
captions = [zs.PHOTO_DESCRIPTIONS[name] for name in photo_names]

if cfg.mode == "pretrained":
    photo_features = zs.embed_images(model, photos, preprocess)
    caption_features = zs.encode_text(model, tokenizer, captions)
    similarity = caption_features @ photo_features.T
    plotting.plot_similarity(similarity, photos, captions)
    plt.show()
    matched = (similarity.argmax(dim=0) == torch.arange(len(photos))).float().mean().item()
    print(f"{matched:.0%} of the photos are closest to their own description")
    assert matched >= 7 / 9, "CLIP should match most photos to their own description"
else:
    plotting.show_gallery(photos, photo_names, ncols=5, suptitle="This lesson's photos (classified in pretrained mode)")
    plt.show()
"""),
    md("""
Now a **zero-shot classifier**: nine labels, each written into CLIP's 7 recommended templates
("itap of a {}.", "a bad photo of the {}.", ...), averaged per label. The bars show each photo's five most
probable labels. Look at the camera photo: is the answer "person" or "camera"? Both are in it.
"""),
    code("""
photo_labels = ["cat", "dog", "person", "rocket", "motorcycle", "horse", "cup of coffee", "page of text", "camera"]

if cfg.mode == "pretrained":
    photo_clf = zs.ZeroShotClassifier(model, tokenizer, photo_labels, templates="clip7")
    photo_probs = photo_clf.predict_proba(photos, preprocess)
    plotting.plot_topk_bars(photos, photo_probs, photo_labels, k=5, ncols=3)
    plt.show()
    best = {name: photo_labels[i] for name, i in zip(photo_names, photo_probs.argmax(dim=-1))}
    print(best)
    assert best["chelsea"] == "cat" and best["grace_hopper"] == "person" and best["rocket"] == "rocket"
else:
    print("offline mode: the photo classifier runs in pretrained mode; section 3 tells the same story offline")
"""),
    md("""
**Wording changes the answer.** The same photos, three ways of naming the classes and three ways of
writing the prompt. A classifier made of words is only as good as the words: a bare label is ambiguous
("coffee" the drink or the bean?), a template says *what kind of picture* to expect, and an ensemble of
templates averages away the quirks of any one sentence.
"""),
    code("""
label_sets = {
    "cat / dog / person": ["cat", "dog", "person"],
    "kitten / puppy / human": ["kitten", "puppy", "human"],
    "animal / woman / man": ["animal", "woman", "man"],
}
template_choices = {"bare label '{}'": "{}", "'a photo of a {}.'": "single", "CLIP's 7 templates": "clip7"}
wording_photos = ["chelsea", "grace_hopper", "astronaut", "camera"]

if cfg.mode == "pretrained":
    pick = [photo_names.index(n) for n in wording_photos]
    features = zs.embed_images(model, [photos[i] for i in pick], preprocess)
    print(f"{'labels':24} {'templates':22} " + " ".join(f"{n:>18}" for n in wording_photos))
    for set_name, labels in label_sets.items():
        for t_name, templates in template_choices.items():
            W = zs.zero_shot_classifier(model, tokenizer, labels, templates)
            probs = zs.classify(features, W, zs.logit_scale(model))
            answers = [f"{labels[j]} {p:.2f}" for j, p in zip(probs.argmax(-1), probs.max(-1).values)]
            print(f"{set_name:24} {t_name:22} " + " ".join(f"{a:>18}" for a in answers))
else:
    print("offline mode: section 3 measures wording on Shapes World")
"""),
    md("""
**Prompts that are not English.** The multilingual CLIP (`xlm-roberta-base-ViT-B-32`) pairs the same
kind of image tower with XLM-RoBERTa, a text encoder trained on about 100 languages. Here the labels and
the template are written in Urdu ("{} کی تصویر" means "a picture of {}"). The bars use the English
translations because matplotlib cannot shape Urdu script; the printed table shows the prompts as written.
This model needs the `transformers` package; without it, the cell says so.
"""),
    code("""
urdu_labels = {"بلی": "cat", "کتا": "dog", "انسان": "person", "راکٹ": "rocket", "گھوڑا": "horse", "کافی کا کپ": "cup of coffee"}
urdu_template = "{} کی تصویر"

if cfg.mode == "pretrained":
    try:
        ml_model, ml_preprocess, ml_tokenizer = registry.load_clip("xlm-roberta-base-ViT-B-32", strict=True)
    except ImportError as err:
        print(err)
    else:
        ml_clf = zs.ZeroShotClassifier(ml_model, ml_tokenizer, list(urdu_labels), templates=urdu_template)
        ml_probs = ml_clf.predict_proba(photos, ml_preprocess)
        plotting.plot_topk_bars(photos, ml_probs, list(urdu_labels.values()), k=3, ncols=3, title="Urdu prompts, English labels")
        plt.show()
        for name, row in zip(photo_names, ml_probs):
            urdu = ml_clf.class_names[int(row.argmax())]
            print(f"{name:18} {urdu_template.format(urdu):>22}  ({urdu_labels[urdu]}, p={row.max():.2f})")
        best_ml = {n: urdu_labels[ml_clf.class_names[int(r.argmax())]] for n, r in zip(photo_names, ml_probs)}
        assert best_ml["chelsea"] == "cat" and best_ml["rocket"] == "rocket"
else:
    print("offline mode: the multilingual CLIP runs in pretrained mode")
"""),
    md("""
## 3. Shapes World: the same story offline

The tiny CLIP was trained (lesson 01) on Shapes World captions. Its classes are the 24 colour + shape
pairs, "red circle" to "orange cross". Six pairs were **held out**: no training image ever showed, say, a
red triangle, although red things and triangles both appeared with other partners. Classifying those is
a real zero-shot test: the model must combine two words it learned separately.
"""),
    code("""
tiny, tiny_preprocess, tiny_tokenizer = registry.load_clip("tiny")
names = data.class_names()
print(f"{len(names)} classes; held-out pairs:", ", ".join(f"{c} {s}" for c, s in data.HELD_OUT_PAIRS))

seen = data.ShapesWorld(1000, split="test", seed=0, transform=tiny_preprocess)
held = data.ShapesWorld(1000, split="held_out", seed=0, transform=tiny_preprocess)
plotting.show_gallery([held.pil(i) for i in range(8)], [held.captions[i] for i in range(8)], ncols=8,
                      suptitle="Held-out pairs: combinations the tiny CLIP never saw in training")
plt.show()
"""),
    md("""
**Images × captions.** One image of each held-out pair and two of seen pairs, against the caption
"a {colour} {shape}" of each. As with the photos, look for the brightest cell of each column on the
diagonal.
"""),
    code("""
chosen, seen_labels = [], set()
for ds in (held, seen):
    for i in range(len(ds)):
        if ds.label(i) not in seen_labels and len(chosen) < (6 if ds is held else 8):
            seen_labels.add(ds.label(i))
            chosen.append((ds, i))
pair_images = [ds.pil(i) for ds, i in chosen]
pair_captions = [data.SIMPLE_TEMPLATE.format(colour=c, shape=s) for c, s in (ds.label(i) for ds, i in chosen)]
pair_features = zs.embed_images(tiny, torch.stack([ds[i][0] for ds, i in chosen]))
pair_similarity = zs.encode_text(tiny, tiny_tokenizer, pair_captions) @ pair_features.T
plotting.plot_similarity(pair_similarity, pair_images, pair_captions, title="Tiny CLIP: Shapes World images vs captions")
plt.show()
diagonal_hits = (pair_similarity.argmax(dim=0) == torch.arange(len(chosen))).float().mean().item()
print(f"{diagonal_hits:.0%} of the images are closest to their own caption")
assert diagonal_hits >= 0.75
"""),
    md("""
**The classifier, written out.** This is all of `zs.zero_shot_classifier`: every class name in every
template, embedded; the unit-length embeddings averaged per class; the average normalised again. The
columns of `W` are the class vectors. The assert checks the hand-written version against the library
(whose own tests check it against open_clip's `build_zero_shot_classifier`).
"""),
    code("""
templates = zs.SHAPES_TEMPLATES  # "a {}", "a small {}", "a large {}", "a {} at the top", ...
prompts = [t.format(name) for name in names for t in templates]
with torch.no_grad():
    prompt_vectors = tiny.encode_text(tiny_tokenizer(prompts), normalize=True)  # [24 * 7, D]
class_vectors = prompt_vectors.reshape(len(names), len(templates), -1).mean(dim=1)  # the ensemble
class_vectors = class_vectors / class_vectors.norm(dim=-1, keepdim=True)
W = class_vectors.T  # [D, 24]: one column per class

assert torch.allclose(W, zs.zero_shot_classifier(tiny, tiny_tokenizer, names, templates), atol=1e-5)
print(f"{len(prompts)} prompts -> class weights of shape {tuple(W.shape)}")
"""),
    md("""
Classify 1,000 test images of seen pairs and 1,000 of held-out pairs. Images are embedded once; every
classifier below reuses the embeddings, which is what makes trying many prompts cheap. (The lesson's
target is 1,000 images in under 10 s on two cores; see `BENCHMARKS.md`.)
"""),
    code("""
start = time.perf_counter()
seen_features = zs.embed_images(tiny, seen)
held_features = zs.embed_images(tiny, held)
print(f"rendered and embedded {len(seen) + len(held)} images in {time.perf_counter() - start:.1f} s")
seen_y, held_y = seen.class_indices(), held.class_indices()
scale = zs.logit_scale(tiny)
"""),
    md("""
**One template against ensembles.** Five classifiers for the same 24 classes: two single templates, the
Shapes World ensemble, and CLIP's own 7 and 80 ImageNet templates. The tiny model knows only the few
dozen words of Shapes World captions; the list printed first shows the template words it has never seen
(they all become one `<unk>` token). Compare the bars of seen and held-out pairs, and the dashed line of
chance.
"""),
    code("""
template_sets = {
    "'a {}'": ["a {}"],
    "'a photo of a {}.'": zs.SINGLE_TEMPLATE,
    "Shapes World 7": zs.SHAPES_TEMPLATES,
    "CLIP's 7": zs.CLIP_TEMPLATES_7,
    "ImageNet 80": zs.IMAGENET_TEMPLATES_80,
}
print("words the tiny model never saw:", ", ".join(tiny_tokenizer.unknown_words(zs.IMAGENET_TEMPLATES_80 + zs.CLIP_TEMPLATES_7)))

results = {}
for label, tset in template_sets.items():
    W_t = zs.zero_shot_classifier(tiny, tiny_tokenizer, names, tset)
    results[label] = {
        "seen": zs.topk_accuracy(zs.classify(seen_features, W_t, scale), seen_y),
        "held-out": zs.topk_accuracy(zs.classify(held_features, W_t, scale), held_y),
    }
print(f"\\n{'templates':20} {'seen top-1':>10} {'seen top-5':>10} {'held top-1':>10} {'held top-5':>10}")
for label, r in results.items():
    print(f"{label:20} {r['seen'][1]:10.3f} {r['seen'][5]:10.3f} {r['held-out'][1]:10.3f} {r['held-out'][5]:10.3f}")

fig, ax = plt.subplots(figsize=(9, 3.8))
x = np.arange(len(results))
for k, split in enumerate(["seen", "held-out"]):
    ax.bar(x + (k - 0.5) * 0.38, [r[split][1] for r in results.values()], width=0.38, label=f"{split} pairs")
ax.axhline(1 / len(names), color="grey", linestyle="--", label="chance (1/24)")
ax.set_xticks(x, list(results))
ax.set_ylim(0, 1)
ax.set_xlabel("prompt templates")
ax.set_ylabel("top-1 accuracy")
ax.set_title("Zero-shot top-1 accuracy of the tiny CLIP: one template vs ensembles")
ax.legend()
plt.show()
"""),
    md("""
What to read from the numbers (the cell below prints them as sentences and checks them):

* held-out pairs are classified far above chance: the model composes "red" and "triangle" although it
  never saw them together; they are still much harder than seen pairs, which are almost solved;
* the wording matters even for a tiny model: "a photo of a {}." uses a word its training captions never
  contained, and templates full of words it never read (CLIP's) add noise rather than information;
* an ensemble helps only when its templates describe the captions the model learned from. Whether the
  Shapes World ensemble beats the plain "a {}" at all, and by how much, is measured here, not assumed:
  averaging prompts is a bet that each template's errors are different, and a model that only ever read
  "a {colour} {shape}" may simply be best at that one sentence.
"""),
    code("""
chance = 1 / len(names)
single = results["'a {}'"]
ensemble = results["Shapes World 7"]
photo = results["'a photo of a {}.'"]
best_template = max(results, key=lambda k: results[k]["held-out"][1])
print(f"'a {{}}': held-out top-1 {single['held-out'][1]:.3f} ({single['held-out'][1] / chance:.0f}x chance), seen {single['seen'][1]:.3f}")
for label, other in [("Shapes World ensemble", ensemble), ("'a photo of a {}.'", photo)]:
    d1 = 100 * (other["held-out"][1] - single["held-out"][1])
    d5 = 100 * (other["held-out"][5] - single["held-out"][5])
    print(f"{label} vs 'a {{}}' on held-out pairs: top-1 {d1:+.1f} points, top-5 {d5:+.1f} points")
print(f"best template set on held-out pairs (top-1): {best_template}")
assert single["held-out"][1] > 4 * chance, "held-out pairs should be far above chance"
assert single["seen"][1] > single["held-out"][1] + 0.1, "seen pairs should be clearly easier"
# wording changes answers: the same held-out images, two templates, different predicted classes
W_a = zs.zero_shot_classifier(tiny, tiny_tokenizer, names, "a {}")
W_photo = zs.zero_shot_classifier(tiny, tiny_tokenizer, names, "single")
changed = (zs.classify(held_features, W_a, scale).argmax(-1) != zs.classify(held_features, W_photo, scale).argmax(-1))
print(f"{changed.float().mean():.1%} of held-out images change class when 'a {{}}' becomes 'a photo of a {{}}.'")
assert changed.float().mean() > 0.02
"""),
    md("""
## 4. Where the mistakes are

The **confusion matrix** of the held-out images (rows: true class; columns: predicted class; each row
sums to 1). Only the six held-out classes have rows with images. An off-diagonal cell in the same
colour block means the shape was wrong; in the same shape column of another block, the colour.
"""),
    code("""
W_best = zs.zero_shot_classifier(tiny, tiny_tokenizer, names, template_sets[best_template])
held_probs = zs.classify(held_features, W_best, scale)
held_pred = held_probs.argmax(dim=-1).numpy()
cm = zs.confusion_matrix(held_y, held_pred, len(names))
plotting.plot_confusion(cm, names, title=f"Held-out pairs, templates {best_template}")
plt.show()

colour_right = np.mean([names[p].split()[0] == names[t].split()[0] for p, t in zip(held_pred, held_y)])
shape_right = np.mean([names[p].split()[1] == names[t].split()[1] for p, t in zip(held_pred, held_y)])
print(f"held-out images: colour right {colour_right:.1%}, shape right {shape_right:.1%}")
# the diagonal of the confusion matrix is the top-1 accuracy measured above
assert np.isclose(np.trace(cm) / cm.sum(), results[best_template]["held-out"][1])
"""),
    md("""
**Per-image top-5 probabilities** for six held-out images. A green bar is the true class. When the
model is wrong, is the true class at least in its top 5?
"""),
    code("""
show = list(range(6))
plotting.plot_topk_bars([held.pil(i) for i in show], held_probs[show], names, k=5,
                        true_labels=[names[held_y[i]] for i in show], ncols=3)
plt.show()
"""),
    md("""
**Wording, offline.** One held-out image, the same 24 classes, different templates. The probabilities
move although the image does not.
"""),
    code("""
image_index = 0
for wording in ["{}", "a {}", "a picture of a {}", "a large {}", "a {} on the right"]:
    p = zs.classify(held_features[[image_index]], zs.zero_shot_classifier(tiny, tiny_tokenizer, names, wording), scale)[0]
    top = zs.top_k(p[None], names, k=2)[0]
    print(f"{wording!r:22} -> {top[0][0]:16} {top[0][1]:.2f}   (then {top[1][0]} {top[1][1]:.2f})")
print("true class:", names[held_y[image_index]])
"""),
    md("""
## 5. Your labels

Type comma-separated labels and press Enter (or *classify*). In pretrained mode the box classifies four
photos with the real CLIP and CLIP's 7 templates; offline, four held-out Shapes World images with the
tiny CLIP and the template "a {}". Bad input (an empty list, a label typed twice) is reported in the box.
"""),
    code("""
if cfg.mode == "pretrained":
    box_images = photos[1:5]
    box_inputs = torch.stack([preprocess(im) for im in box_images])
    box_model, box_tokenizer, box_templates, initial = model, tokenizer, "clip7", "cat, dog, person, rocket"
else:
    box_images = [held.pil(i) for i in range(4)]
    box_inputs = torch.stack([held[i][0] for i in range(4)])
    box_model, box_tokenizer, box_templates = tiny, tiny_tokenizer, "a {}"
    initial = "red triangle, green cross, blue circle, yellow square"


def classify_labels(labels):
    return zs.ZeroShotClassifier(box_model, box_tokenizer, labels, box_templates).predict_proba(box_inputs)


box = widgets.LabelBox(box_images, classify_labels, initial=initial)
box
"""),
    md("""
Self-check of the box (what typing does): probabilities for every image sum to 1, and a duplicated label
is refused with a message that names it.
"""),
    code("""
probs = box.update("red circle, blue square, orange cross", draw=False)
assert probs.shape == (4, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
assert box.update("red circle, Red circle", draw=False) is None and "duplicate" in box.error
print("box error message:", box.error)
"""),
    md("""
## Summary

* A zero-shot classifier is made of words: class names written into templates, embedded by the text
  tower, averaged per class (`zs.zero_shot_classifier`, three lines of tensor code).
* Classifying is cosine similarity times the model's temperature, then a softmax (`zs.classify`).
* The wording is part of the model: labels, templates and ensembles change the answer. An ensemble can
  only help when its templates describe the kind of images (and use the words) the model learned from;
  whether it helps is a measurement: on Shapes World it barely matters or hurts, on ImageNet photos
  CLIP's authors measured a gain of a few points.
* Top-1/top-5 accuracy and a confusion matrix show *how* a classifier fails; here, held-out colour +
  shape pairs are recognised far above chance, though less often than seen pairs.
* `registry.load_clip` loads a real CLIP, a multilingual CLIP, a local file or the tiny model through one
  safe path, and never touches the network in offline mode.

## Exercises

1. Write your own Shapes World templates (only words in `tiny_tokenizer.words`). Can an ensemble of
   yours beat `'a {}'` on held-out pairs? Report both numbers.
2. From the confusion matrix: for which held-out pair is the *colour* most often wrong, and for which the
   *shape*? Look at training captions in lesson 01 to guess why.
3. Multiply the logit scale by 0.1 and by 10 in `zs.classify`. Which numbers change: top-1 accuracy, or
   the probabilities? Why?
4. (pretrained) Add "computer scientist", "admiral" and "actress" to the labels of Grace Hopper's photo.
   What does CLIP answer, and what does that tell you about what it learned from the web?
5. (pretrained) Translate the Urdu labels into another language you know and compare the multilingual
   model's answers with the English ViT-B-32's.
6. Save the tiny model's `state_dict()` with `safetensors.torch.save_file`, then reload it with
   `registry.load_clip`: which architecture name does it need, and what error do you get with the wrong
   one?

## References

* A. Radford et al., *Learning Transferable Visual Models From Natural Language Supervision*, ICML 2021
  ([arXiv:2103.00020](https://arxiv.org/abs/2103.00020)): zero-shot classification, prompt engineering
  and the 80 ImageNet templates (section 3.1.4).
* OpenAI, [*Interacting with CLIP*](https://github.com/openai/CLIP/blob/main/notebooks/Interacting_with_CLIP.ipynb)
  and [*Prompt Engineering for ImageNet*](https://github.com/openai/CLIP/blob/main/notebooks/Prompt_Engineering_for_ImageNet.ipynb)
  notebooks: the photo set, the similarity heat-map, the 7 recommended templates.
* G. Ilharco et al., [OpenCLIP](https://github.com/mlfoundations/open_clip) (2021):
  `build_zero_shot_classifier`, the model registry and the LAION checkpoints.
* M. Cherti et al., *Reproducible scaling laws for contrastive language-image learning*, CVPR 2023
  ([arXiv:2212.07143](https://arxiv.org/abs/2212.07143)): the LAION-2B ViT-B-32.
* C. Schuhmann et al., *LAION-5B: An open large-scale dataset for training next generation image-text
  models*, NeurIPS 2022 ([arXiv:2210.08402](https://arxiv.org/abs/2210.08402)).
* A. Conneau et al., *Unsupervised Cross-lingual Representation Learning at Scale*, ACL 2020
  ([arXiv:1911.02116](https://arxiv.org/abs/1911.02116)): XLM-RoBERTa, the multilingual text tower; model card
  [laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k](https://huggingface.co/laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k).
"""),
]

if __name__ == "__main__":
    out = build("02_zero_shot_classification.ipynb", "02 · Zero-shot classification", INTRO, CELLS)
    print(f"wrote {out}")
