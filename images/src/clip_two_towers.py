"""Draws images/clip_two_towers.png (lesson 01, Figure 1): CLIP's two towers and the n x n matrix.
Run: .venv/bin/python images/src/clip_two_towers.py
Coordinates are pixels of a 920 x 500 canvas, y growing downwards (as in SVG)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, FancyBboxPatch, Polygon, Rectangle  # noqa: E402

W, H = 920, 490
fig = plt.figure(figsize=((W + 40) / 100, (H - 20) / 100), dpi=100)
ax = fig.add_axes([0, 0, 1, 1])
ax.set_xlim(-14, W + 26)
ax.set_ylim(H, 20)
ax.axis("off")
FS = 10.5  # points; 1 pt = 1.39 px at 100 dpi


def box(x, y, w, h, fc, ec, lw=1.2, round_=True):
    style = "round,pad=0,rounding_size=8" if round_ else "square,pad=0"
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=style, fc=fc, ec=ec, lw=lw))


def text(x, y, s, size=FS, ha="center", **kw):
    ax.text(x, y, s, fontsize=size, ha=ha, va="center", **kw)


def arrow(x0, y0, x1, y1):
    ax.annotate(
        "",
        (x1, y1),
        (x0, y0),
        arrowprops=dict(arrowstyle="-|>", color="#444", lw=1.6, mutation_scale=14),
    )


# captions -> text encoder -> T_j
box(60, 40, 220, 112, "#f4f4f4", "#999")
text(170, 58, "n captions", weight="bold")
for k, cap in enumerate(["a red circle", "a blue square", "a green triangle", "a yellow cross"]):
    text(80, 80 + 18 * k, f"{k + 1}  {cap}", ha="left")
arrow(282, 96, 348, 96)
box(350, 66, 240, 60, "#e6dcf5", "#6b46c1", lw=2)
text(470, 86, "text encoder", weight="bold")
text(470, 107, "(a small transformer)", size=FS - 0.5)
for j in range(4):
    cx = 380 + 60 * j
    arrow(cx, 127, cx, 149)
    box(353 + 60 * j, 150, 54, 32, "#d6c6f0", "#6b46c1")
    text(cx, 166, f"$T_{j + 1}$", size=FS + 1)

# images -> image encoder -> I_i
text(41, 190, "n images", weight="bold")
for i in range(4):
    y = 206 + 60 * i
    ax.add_patch(Rectangle((18, y), 46, 46, fc="black"))
    cy = y + 23
    arrow(66, cy, 98, cy)
    arrow(252, cy, 279, cy)
    box(281, y + 7, 54, 32, "#c6e6c6", "#2f855a")
    text(308, cy, f"$I_{i + 1}$", size=FS + 1)
ax.add_patch(Circle((41, 229), 15, fc="#e03030"))
ax.add_patch(Rectangle((27, 275), 28, 28, fc="#3060e0"))
ax.add_patch(Polygon([(41, 334), (57, 363), (25, 363)], fc="#30b040"))
cross = [
    (36, 393),
    (46, 393),
    (46, 404),
    (57, 404),
    (57, 414),
    (46, 414),
    (46, 425),
    (36, 425),
    (36, 414),
    (25, 414),
    (25, 404),
    (36, 404),
]
ax.add_patch(Polygon(cross, fc="#f0d020"))
box(100, 200, 150, 238, "#dcf0dc", "#2f855a", lw=2)
text(175, 308, "image encoder", weight="bold")
text(175, 329, "(a small ResNet)", size=FS - 0.5)

# the n x n similarity matrix, diagonal marked
for i in range(4):
    for j in range(4):
        x, y = 353 + 60 * j, 202 + 60 * i
        diag = i == j
        ax.add_patch(
            Rectangle(
                (x, y),
                54,
                54,
                fc="#2b6cb0" if diag else "#edf2f7",
                ec="#1a365d" if diag else "#a0aec0",
                lw=2.5 if diag else 1,
            )
        )
        text(
            x + 27,
            y + 27,
            f"$I_{i + 1}\\cdot T_{j + 1}$",
            size=FS,
            color="white" if diag else "#333",
            weight="bold" if diag else "normal",
        )
text(470, 462, "n × n cosine similarities (here n = 4)")

# what the loss does with it
ax.add_patch(Rectangle((612, 210), 22, 22, fc="#2b6cb0", ec="#1a365d", lw=2.5))
text(644, 214, "diagonal: image i with its own", ha="left")
text(644, 232, "caption i; training pushes these up", ha="left")
ax.add_patch(Rectangle((612, 262), 22, 22, fc="#edf2f7", ec="#a0aec0"))
text(644, 266, "off-diagonal: image i with caption", ha="left")
text(644, 284, "j ≠ i; training pushes these down", ha="left")
text(612, 332, "the contrastive loss", ha="left", weight="bold")
text(612, 354, "each row: which caption? (softmax)", ha="left")
text(612, 374, "each column: which image? (softmax)", ha="left")
text(612, 394, "the loss averages the two", ha="left")

out = Path(__file__).resolve().parents[1] / "clip_two_towers.png"
fig.savefig(out, dpi=100, metadata={"Software": None})
print("wrote", out)
