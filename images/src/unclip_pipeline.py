"""Draws images/unclip_pipeline.png and .svg (lesson 05, Figure 2): DALL-E 2 (unCLIP), caption -> CLIP
text embedding -> prior -> CLIP image embedding -> diffusion decoder -> picture; variations from a picture.
Run: .venv/bin/python images/src/unclip_pipeline.py [output folder]"""

import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Polygon, Rectangle  # noqa: E402

plt.rcParams["svg.fonttype"] = "path"  # the same letters in every viewer
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
TEXT, IMAGE, MODEL, OTHER, CLIP = "#dff0d8", "#fde3c8", "#dbe9f6", "#eeeeee", "#e8def8"
EDGE, RED = "#444444", "#c0392b"

fig, ax = plt.subplots(figsize=(10, 3.9))
ax.set_xlim(0, 100)
ax.set_ylim(0, 42)
ax.axis("off")


def box(x0, x1, y0, y1, text, colour, size=9.5, bold=False):
    ax.add_patch(
        FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0.3,rounding_size=0.9",
                       facecolor=colour, edgecolor=EDGE, lw=1.2)
    )  # fmt: skip
    ax.text((x0 + x1) / 2, (y0 + y1) / 2, text, ha="center", va="center", fontsize=size,
            weight="bold" if bold else "normal", linespacing=1.3)  # fmt: skip


def encoder(x0, x1, y0, y1, label, colour):  # a trapezoid narrowing to the right: one vector out
    pts = [(x0, y0), (x1, y0 + 1.5), (x1, y1 - 1.5), (x0, y1)]
    ax.add_patch(Polygon(pts, closed=True, facecolor=colour, edgecolor=EDGE, lw=1.2))
    ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, ha="center", va="center", fontsize=9)


def vector(x, y, label, colour, above=False):  # an embedding: a column of cells
    for i in range(6):
        ax.add_patch(
            Rectangle((x, y + i * 1.2), 2.0, 1.2, facecolor=colour, edgecolor=EDGE, lw=0.8)
        )
    ty, va = (y + 8.0, "bottom") if above else (y - 0.8, "top")
    ax.text(x + 1.0, ty, label, ha="center", va=va, fontsize=8.5)


def arrow(a, b, text=None, offset=(0, 0.7), ls="-", colour=EDGE, rad=0.0):
    ax.add_patch(
        FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=13, lw=1.3, color=colour, ls=ls,
                        connectionstyle=f"arc3,rad={rad}", shrinkA=1, shrinkB=1)
    )  # fmt: skip
    if text:
        ax.text((a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1], text, ha="center",
                va="bottom", fontsize=8.5, style="italic", color=colour)  # fmt: skip


yc = 27  # the main row
box(0.5, 13.5, yc - 4, yc + 4, "caption\n'a large\nred circle'", TEXT, bold=True)
encoder(16, 26, yc - 5, yc + 5, "CLIP text\nencoder\n(frozen)", TEXT)
arrow((13.9, yc), (15.8, yc))
vector(28.5, yc - 3.6, "text\nembedding", TEXT)
arrow((26.2, yc), (28.3, yc))
box(33, 46, yc - 5, yc + 5, "prior\ntext embedding →\nimage embedding", MODEL, size=9)
arrow((30.7, yc), (32.6, yc))
vector(49, yc - 3.6, "CLIP image\nembedding", IMAGE, above=True)
arrow((46.4, yc), (48.8, yc))
box(54, 74, yc - 5.5, yc + 5.5, "diffusion decoder\nremoves noise step by step,\n"
    "told the image embedding", MODEL, size=9)  # fmt: skip
arrow((51.2, yc), (53.6, yc))
ax.add_patch(Rectangle((89.5, yc - 5), 10, 10, facecolor="black"))
ax.add_patch(Circle((94.5, yc), 3.0, facecolor=RED))
ax.text(94.5, yc + 5.6, "picture", ha="center", va="bottom", fontsize=9, weight="bold")
arrow((74.4, yc), (89.2, yc), "(tiny: 32x32;\nDALL-E 2: 64x64, then\ntwo upsamplers\nto 1024x1024)",
      offset=(0, -9.6))  # fmt: skip

# noise into the decoder
rng = np.random.default_rng(0)
ax.imshow(
    rng.random((10, 10, 3)), extent=(59.5, 68.5, 2.5, 11.5), interpolation="nearest", aspect="auto"
)
ax.text(64, 1.8, "Gaussian noise", ha="center", va="top", fontsize=8.5)
arrow((64, 11.9), (64, yc - 5.9))

# variations: a picture's own image embedding
ax.add_patch(Rectangle((22, 4), 8, 8, facecolor="black"))
ax.add_patch(Polygon([(23.3, 5.2), (28.7, 5.2), (26, 10.6)], facecolor="#2e86c1"))
ax.text(26, 12.6, "a picture", ha="center", va="bottom", fontsize=8.5)
encoder(33, 43, 3, 13, "CLIP image\nencoder", IMAGE)
arrow((30.4, 8), (32.8, 8))
arrow(
    (43.2, 8), (50, yc - 4.0), "variations:\nskip the prior", offset=(7.0, -3.6), ls="--", rad=0.25
)

ax.set_xlim(0, 100)
ax.set_ylim(0, 38)
ax.set_title("DALL-E 2 (unCLIP): a prior and a decoder around CLIP's embeddings", fontsize=12)
fig.tight_layout(pad=0.2)
for suffix in ("png", "svg"):
    meta = {"Date": None} if suffix == "svg" else None
    fig.savefig(OUT / f"unclip_pipeline.{suffix}", dpi=110, metadata=meta)
    print("wrote", OUT / f"unclip_pipeline.{suffix}")
