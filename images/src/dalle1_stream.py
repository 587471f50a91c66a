"""Draws images/dalle1_stream.png and .svg (lesson 05, Figure 1): DALL-E 1's recipe, one stream of
caption tokens and image codes into a GPT, codes sampled one by one, decoded, reranked by CLIP.
Run: .venv/bin/python images/src/dalle1_stream.py [output folder]"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

plt.rcParams["svg.fonttype"] = "path"  # the same letters in every viewer
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
TEXT, CODE, MODEL, OTHER, CLIP = "#dff0d8", "#fde3c8", "#dbe9f6", "#eeeeee", "#e8def8"
EDGE, RED = "#444444", "#c0392b"

fig, ax = plt.subplots(figsize=(10, 5.0))
ax.set_xlim(0, 100)
ax.set_ylim(0, 50)
ax.axis("off")


def box(x0, x1, y0, y1, text, colour, size=9.5, bold=False, ls="-"):
    ax.add_patch(
        FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0.3,rounding_size=0.9",
                       facecolor=colour, edgecolor=EDGE, lw=1.2, ls=ls)
    )  # fmt: skip
    ax.text((x0 + x1) / 2, (y0 + y1) / 2, text, ha="center", va="center", fontsize=size,
            weight="bold" if bold else "normal", linespacing=1.3)  # fmt: skip


def arrow(a, b, text=None, offset=(0, 0.8), rad=0.0, ls="-", colour=EDGE, ha="center"):
    ax.add_patch(
        FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=13, lw=1.3, color=colour, ls=ls,
                        connectionstyle=f"arc3,rad={rad}", shrinkA=1, shrinkB=1)
    )  # fmt: skip
    if text:
        ax.text((a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1], text, ha=ha,
                va="bottom", fontsize=8.5, style="italic", color=colour)  # fmt: skip


def picture(x, y, side, colour=RED):
    ax.add_patch(Rectangle((x, y), side, side, facecolor="black"))
    ax.add_patch(Circle((x + side / 2, y + side / 2), side * 0.3, facecolor=colour))


# left: where the stream comes from
box(1, 19, 37, 45, "caption\n'a large red circle'", TEXT, bold=True)
picture(4.5, 3, 7)
ax.text(8, 11.2, "a training\npicture", ha="center", va="bottom", fontsize=8.5)
box(13.5, 24.5, 3, 10, "VQGAN\nencoder\n(DALL-E: dVAE)", MODEL, size=8.5)
arrow((11.5, 6.5), (13.3, 6.5))

# the stream: caption tokens, <start>, image codes, one sequence
tokens = ["a", "large", "red", "circle", "pad", "start", "c0", "c1", "…", "c255"]
kinds = [TEXT] * 5 + [OTHER] + [CODE] * 4
w, gap, x0, ys = 3.9, 0.45, 23.5, (15.5, 20.0)
xs = [x0 + i * (w + gap) for i in range(len(tokens))]
for x, t, colour in zip(xs, tokens, kinds):
    box(x, x + w, ys[0], ys[1], t, colour, size=8)
    arrow((x + w / 2, ys[1] + 0.4), (x + w / 2, 26.6))
right = xs[-1] + w
for a, b, label in [(xs[0], xs[4] + w, "caption: 24 tokens\n(DALL-E: 256)"),
                    (xs[6], right, "picture: 256 codes, row by row\n(DALL-E: 1,024)")]:  # fmt: skip
    ax.plot([a, a, b, b], [14.2, 13.4, 13.4, 14.2], color=EDGE, lw=1)
    ax.text((a + b) / 2, 12.6, label, ha="center", va="top", fontsize=8.5)
arrow((10, 36.6), (x0 - 0.5, 17.75), "tokenizer", offset=(-4.5, -1.0), rad=0.3)
arrow((24.7, 5.5), (xs[7] + w / 2, ys[0] - 0.4), ls="--", rad=0.25)
ax.text(44, 3.2, "training: the picture's own codes", ha="center", fontsize=8.5, style="italic")

# the GPT over the stream
box(x0, right, 27, 34, "GPT: a causal transformer;\neach position sees only\nthe tokens to its left",
    MODEL, size=9)  # fmt: skip

# right: generating a picture
box(73, 98, 39, 46, "sample the next code\n(temperature, top-k)", OTHER)
arrow((right + 0.4, 32), (72.6, 42), "probabilities\nof 256 codes", offset=(-3.0, 1.4), rad=-0.25)
arrow((76, 38.6), (right + 0.5, ys[0] + 2.2), rad=-0.45, colour=RED)
ax.text(78.6, 37.9, "append it;\nrepeat 256 times", ha="left", va="top", fontsize=8.5,
        style="italic", color=RED)  # fmt: skip
box(78, 98, 27, 33, "VQGAN decoder:\n16x16 codes → 32x32", MODEL, size=9)
arrow((90, 38.6), (90, 33.4), "all written", offset=(0.6, -0.6), ha="left")
for i in range(4):
    picture(77.5 + i * 5.4, 16, 4.4, colour=[RED, "#e67e22", RED, "#8e44ad"][i])
ax.text(88, 21.3, "N candidates\n(here 16; DALL-E 512)", ha="center", va="bottom", fontsize=8.5)
arrow((88, 26.6), (88, 24.5))
box(77, 99, 3, 10, "CLIP reranker:\nkeeps the best match", CLIP)
arrow((88, 15.6), (88, 10.4))

ax.set_title("DALL-E 1: caption and picture as one stream of tokens", fontsize=12)
fig.tight_layout(pad=0.2)
for suffix in ("png", "svg"):
    fig.savefig(
        OUT / f"dalle1_stream.{suffix}",
        dpi=110,
        metadata={"Date": None} if suffix == "svg" else None,
    )
    print("wrote", OUT / f"dalle1_stream.{suffix}")
