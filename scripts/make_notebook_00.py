"""Regenerate notebooks/00_welcome.ipynb: python scripts/make_notebook_00.py"""

from nbbuild import build, code, md

from lessonlib._meta import binder_url, colab_url

LESSONS = [
    (
        "01_clip_concepts.ipynb",
        "01 · CLIP concepts",
        "embeddings, cosine similarity, the contrastive (InfoNCE) loss, temperature; train a tiny CLIP live",
    ),
    (
        "02_zero_shot_classification.ipynb",
        "02 · Zero-shot classification",
        "prompts as classifiers, templates and ensembles, evaluation; one loader for tiny and real CLIPs",
    ),
    (
        "03_image_search.ipynb",
        "03 · Image search",
        "text→image and image→image retrieval, embedding caches, recall@k, FAISS at scale",
    ),
    (
        "04_vqgan_clip.ipynb",
        "04 · VQGAN+CLIP",
        "codebooks and vector quantisation, CLIP-guided latent optimisation, cutouts, weighted prompts",
    ),
]

course_map = "\n".join(
    f"| [{title}]({name}) | {what} | [Colab]({colab_url('notebooks/' + name)}) · [Binder]({binder_url('notebooks/' + name)}) |"
    for name, title, what in LESSONS
)

cells = [
    md("""
The call above, `lessonlib.setup()`, is the first code cell of every lesson. It seeds every random number
generator, picks the device (a CUDA GPU, Apple's MPS, or the CPU) and the **mode**, and prints one line
saying what it chose and why. Look at that line now: it tells you whether this session uses real pretrained
models or the course's own tiny ones.
"""),
    md("""
## How to run the course

| where | how | what you get |
|---|---|---|
| your laptop | `git clone` the repository, then `make lab` | everything, offline or online; the first `make lab` builds the environment in `.venv` |
| Binder | the *launch binder* badge on top of each lesson | a CPU machine in the browser, nothing to install |
| Colab | the *Open in Colab* badge | a free GPU (Runtime → Change runtime type); the first code cell installs the course |

`make test` runs every test of the course, including every notebook, exactly as the project's CI does.

## Two modes, one code path

| mode | models | when |
|---|---|---|
| `pretrained` | real open_clip CLIP models (default ViT-B-32, trained on LAION-2B) and taming-transformers' VQGAN, downloaded once into a cache and checked | you have a network, or the weights are cached |
| `offline` | tiny CLIP and VQGAN models that the course trained itself on **Shapes World**, a procedural data set of coloured shapes; they ship inside `lessonlib` | no network, CI, a slow laptop |

`auto` (the default) picks `pretrained` when the default weights are cached or the model hub answers within
3 seconds, else `offline`. Force a mode with `lessonlib.setup(mode="offline")` or the environment variable
`LESSONLIB_MODE=offline` before starting Jupyter. Every lesson tells the same story in both modes: the
offline one with shapes and colours, the pretrained one with photos.
"""),
    md("""
## Environment check

The next cell lists what this session runs on: versions, the device, the mode, where downloaded weights
are cached, and the tiny models shipped with the course. If something in a later lesson fails, this table
is the first thing to paste into a question.
"""),
    code("""
from IPython.display import Markdown, display

from lessonlib.environment import environment_report

rows = environment_report()
display(Markdown("| item | value |\\n|---|---|\\n" + "\\n".join(f"| {k} | {v} |" for k, v in rows)))
"""),
    md("""
### A first look at the data the lessons use

Two kinds of pictures appear in this course. The photos that OpenAI's *Interacting with CLIP* notebook uses
ship with scikit-image (plus Grace Hopper's portrait from matplotlib), so they work without a network;
`lessonlib.load_image` is the one loader every lesson uses for them, whatever their format. Shapes World
images are drawn on the fly from a seed.
"""),
    code("""
import matplotlib.pyplot as plt

from lessonlib.images import SAMPLE_PHOTOS, load_image, sample_photo_paths

photos = {name: load_image(path) for name, path in sample_photo_paths().items()}
fig, axes = plt.subplots(1, len(photos), figsize=(2 * len(photos), 2.4))
for ax, (name, img) in zip(axes, photos.items()):
    ax.imshow(img)
    ax.set_title(name, fontsize=9)
    ax.axis("off")
fig.suptitle("The sample photos (offline, from scikit-image and matplotlib)")
plt.show()
"""),
    md("""
**Self-check.** The cells below assert what this page claims: the mode is one of the two real modes, the
device computes, every sample photo loads as an RGB image, and every lesson listed in the course map
exists.
"""),
    code("""
from pathlib import Path

import torch

assert cfg.mode in ("pretrained", "offline"), cfg.mode
x = torch.ones(2, 2, device=cfg.device)
assert (x @ x).sum().item() == 8.0
assert set(photos) == set(SAMPLE_PHOTOS) and all(img.mode == "RGB" for img in photos.values())
print(f"{len(photos)} photos, mode {cfg.mode!r}, device {cfg.device!r}: all good")
"""),
    md(
        "## Course map\n\n| lesson | what you learn and do | open in |\n|---|---|---|\n"
        + course_map
        + """

Every lesson ends with a **Summary**, **Exercises** and **References**. Lessons build on each other: the
tiny CLIP trained in lesson 01 is the model that classifies in 02, searches in 03 and steers the image
generator in 04.
"""
    ),
    code(
        f"COURSE_MAP = {[name for name, _, _ in LESSONS]!r}\n"
        + """
lesson_files = sorted(p.name for p in Path(".").glob("[0-9][0-9]_*.ipynb"))
print("\\n".join(lesson_files))
for name in COURSE_MAP:
    assert name in lesson_files, f"the course map links {name}, which is missing"
"""
    ),
    md("""
## Summary

- `cfg = lessonlib.setup()` starts every lesson: seeds, device, and the mode (`pretrained` or `offline`),
  explained in one line.
- The same cells run with real pretrained models online and with the course's tiny models offline.
- `lessonlib.load_image` reads any picture safely (EXIF rotation, grayscale, palette, alpha, CMYK, 16-bit),
  and says which file is wrong when one is.

## Exercises

1. Restart the kernel and run `lessonlib.setup(mode="offline")`. What does the printed line say now?
2. Run `lessonlib.setup(mode="online")`. Read the error: which values would work?
3. Load a picture of your own with `load_image("path/to/photo.jpg")` and show it. Try a PNG with
   transparency: what colour do the transparent pixels become, and why is that a sensible choice for CLIP?

## References

- A. Radford et al., *Learning Transferable Visual Models From Natural Language Supervision* (CLIP), 2021.
- G. Ilharco et al., *OpenCLIP*, 2021 — the library every lesson uses for CLIP models.
- P. Esser, R. Rombach, B. Ommer, *Taming Transformers for High-Resolution Image Synthesis* (VQGAN), 2021.
- OpenAI, *Interacting with CLIP* notebook — the photos and the similarity heat-map of lesson 02.
"""),
]

if __name__ == "__main__":
    print(
        build(
            "00_welcome.ipynb",
            "00 · Welcome to Multimodal Networks",
            "How networks join images and language, in hands-on lessons that run on a laptop CPU with no "
            "internet, and use real pretrained models when a network is there. This page shows how to run "
            "the course, what its two modes are, and checks your environment.",
            cells,
        )
    )
