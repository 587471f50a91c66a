"""Draws images/zeroshot_classifier.svg (lesson 02, Figure 1). Run: .venv/bin/python images/src/zeroshot_classifier.py"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon, Rectangle  # noqa: E402

plt.rcParams["svg.fonttype"] = "path"  # the same letters in every viewer
TEXT, IMAGE, JOIN = "#dbe9f6", "#fde3c8", "#e2f0d9"
EDGE = "#444444"

fig, ax = plt.subplots(figsize=(10, 4.3))
ax.set_xlim(0, 100)
ax.set_ylim(0, 43)
ax.axis("off")


def box(x0, x1, y0, y1, title, body, colour, size=9.5):
    ax.add_patch(
        FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0.4,rounding_size=1.2",
                       facecolor=colour, edgecolor=EDGE, lw=1.2)
    )  # fmt: skip
    ax.text((x0 + x1) / 2, y1 - 1.2, title, ha="center", va="top", fontsize=10, weight="bold")
    ax.text((x0 + x1) / 2, y1 - 4.6, body, ha="center", va="top", fontsize=size, linespacing=1.35)


def encoder(x0, x1, y0, y1, label, colour):
    # a trapezoid narrowing to the right: many numbers in, one vector out
    pts = [(x0, y0), (x1, y0 + 2.5), (x1, y1 - 2.5), (x0, y1)]
    ax.add_patch(Polygon(pts, closed=True, facecolor=colour, edgecolor=EDGE, lw=1.2))
    ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, ha="center", va="center", fontsize=10, weight="bold")


def arrow(a, b, text=None, offset=(0, 1.3), rad=0.0):
    ax.add_patch(
        FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.4, color=EDGE,
                        connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2)
    )  # fmt: skip
    if text:
        ax.text((a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1], text, ha="center",
                va="bottom", fontsize=8.5, style="italic")  # fmt: skip


# text row: class names -> prompts -> text encoder -> class vectors
top0, top1 = 24.5, 40.5
box(1, 15, top0, top1, "class names", "red triangle\nblue circle\n…", TEXT)
box(24, 41, top0, top1, "prompts",
    "a red triangle\na small red triangle\n…\na blue circle\n…", TEXT, size=9)  # fmt: skip
encoder(45, 56, top0, top1, "text\nencoder", TEXT)
box(60, 78, top0, top1, "class vectors",
    "the mean per class,\nunit length: one\ncolumn $w_c$ of the\nclassifier's weights W", JOIN)  # fmt: skip
arrow((15.4, 32.5), (23.6, 32.5), "× templates", offset=(0, 0.8))
arrow((41.4, 32.5), (45, 32.5))
arrow((56, 32.5), (59.6, 32.5))

# image row: picture -> image encoder -> image vector
bot0, bot1 = 2, 17.5
ax.add_patch(Rectangle((5, 3.5), 8, 11, facecolor="black"))
ax.add_patch(Polygon([(6.6, 5.3), (11.4, 5.3), (9, 12.4)], facecolor="#dc1e1e"))
ax.text(9, 16.2, "an image", ha="center", fontsize=10, weight="bold")
arrow((13.5, 9.5), (44.6, 9.5), "resize, normalise", offset=(0, 0.6))
encoder(45, 56, bot0, bot1, "image\nencoder", IMAGE)
box(60, 78, bot0 + 1.5, bot1 - 1.5, "image vector x", "unit length", IMAGE)
arrow((56, 9.5), (59.6, 9.5))

# the join: cosine with every class vector, logit scale, softmax
box(82, 99, 25.5, 39.5, "scores", "cosine of x with\neach $w_c$, times\nthe logit scale", JOIN)
arrow((78.4, 32.5), (81.6, 32.5))
ax.plot([78.4, 80, 80], [10, 10, 28], color=EDGE, lw=1.4)  # around the softmax box
arrow((80, 28), (81.6, 28))
box(82, 99, 1.5, 20.5, "softmax", "", JOIN)
for i, (name, p) in enumerate([("red triangle", 0.86), ("red square", 0.09), ("blue circle", 0.02)]):
    y = 11.8 - 3.9 * i
    ax.add_patch(Rectangle((90.3, y - 1.1), 5.5 * p, 2.2, facecolor="tab:blue"))
    ax.text(89.8, y, name, ha="right", va="center", fontsize=8.5)
    ax.text(90.6 + 5.5 * p, y, f"{p:.2f}", ha="left", va="center", fontsize=8.5)
ax.text(90.5, 16.2, "one probability per class,\nthey sum to 1", ha="center", va="center",
        fontsize=8.5, style="italic")  # fmt: skip
arrow((93, 25.1), (93, 20.9))

fig.tight_layout(pad=0.2)
out = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1] / "zeroshot_classifier.svg")
fig.savefig(out, metadata={"Date": None})
print("wrote", out)
