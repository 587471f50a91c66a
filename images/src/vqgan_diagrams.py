"""Draw lesson 04's two diagrams (images/vqgan_clip_loop.png, images/vqgan_prior.png)."""
import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, FancyArrowPatch, Rectangle

OUT = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1])
BLUE, ORANGE, GREEN, GREY, RED = "#dbe9f6", "#fde3c8", "#dff0d8", "#eeeeee", "#c0392b"


def box(ax, x, y, w, h, text, colour=GREY, fontsize=10, bold=False, edge="#444444"):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=colour, edgecolor=edge, linewidth=1.2))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, fontweight="bold" if bold else "normal")


def arrow(ax, a, b, colour="#333333", style="-|>", ls="-", lw=1.5, rad=0.0):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=14, color=colour, linestyle=ls,
                                 linewidth=lw, connectionstyle=f"arc3,rad={rad}", shrinkA=0, shrinkB=0))


def loop():
    fig, ax = plt.subplots(figsize=(10, 4.0))
    ax.set_xlim(0, 10), ax.set_ylim(0.2, 4.2), ax.axis("off")
    y1, y2, h = 3.3, 1.75, 0.9
    box(ax, 0.75, y1, 1.2, h, "latents z\n(8x8 grid of\n32-d vectors)", ORANGE)
    box(ax, 2.65, y1, 1.9, h, "1. quantise:\nsnap to nearest code\n(straight-through)", GREY)
    box(ax, 4.6, y1, 1.3, h, "2. VQGAN\ndecoder\n(frozen)", BLUE)
    box(ax, 6.45, y1, 1.7, h, "3. cutouts:\nrandom crops,\nflips, noise", GREY)
    box(ax, 8.7, y1, 1.8, h, "CLIP image\nencoder (frozen)", BLUE)
    for a, b in [(1.35, 1.7), (3.6, 3.95), (5.25, 5.6), (7.3, 7.8)]:
        arrow(ax, (a, y1), (b, y1))
    ax.text(5.42, y1 + 0.55, "image", ha="center", fontsize=9, style="italic")
    ax.text(7.55, y1 + 0.55, "crops", ha="center", fontsize=9, style="italic")
    box(ax, 2.55, y2, 2.3, h, "prompts\n'a large red circle|\na blue square:-0.5'", GREEN)
    box(ax, 5.0, y2, 1.7, h, "CLIP text\nencoder (frozen)", BLUE)
    box(ax, 8.7, y2, 2.2, h, "4. loss: spherical\ndistance x weight,\nmean over crops", "#f6d5d5")
    arrow(ax, (3.7, y2), (4.15, y2))
    arrow(ax, (5.85, y2), (7.6, y2))
    ax.text(6.72, y2 + 0.12, "text embeddings", ha="center", fontsize=9, style="italic")
    arrow(ax, (8.7, y1 - h / 2), (8.7, y2 + h / 2))
    ax.text(8.78, (y1 + y2) / 2, "crop embeddings", ha="left", va="center", fontsize=9, style="italic")
    # 5. the gradient goes back into z only
    ax.plot([8.7, 8.7, 0.75], [y2 - h / 2, 0.45, 0.45], color=RED, ls="--", lw=1.6)
    arrow(ax, (0.75, 0.45), (0.75, y1 - h / 2), colour=RED, ls="--", lw=1.6)
    ax.text(4.6, 0.6, "5. gradient of the loss flows back through CLIP, cutouts, decoder and the snap into z only;"
            "\n    an Adam step changes z (no model weight changes). Repeat for every step.",
            ha="center", va="bottom", fontsize=9, color=RED)
    ax.set_title("One step of VQGAN+CLIP", fontsize=12)
    fig.tight_layout()
    return fig


def prior():
    fig, ax = plt.subplots(figsize=(10, 4.4))
    ax.set_xlim(0, 10), ax.set_ylim(0, 4.4), ax.axis("off")
    tokens = ["a", "large", "red", "circle", "<img>", "c1", "c2", "c3", "...", "c255"]
    colours = [GREEN] * 4 + [GREY] + [ORANGE] * 5
    xs = [0.45 + 0.62 * i for i in range(len(tokens))]
    yb, yt, w = 0.75, 3.45, 0.56
    for x, t, c in zip(xs, tokens, colours):
        box(ax, x, yb, w, 0.5, t, c, fontsize=9)
    ax.text((xs[0] + xs[3]) / 2, 0.2, "caption tokens", ha="center", fontsize=9)
    ax.text((xs[5] + xs[9]) / 2, 0.2, "image codes written so far", ha="center", fontsize=9)
    box(ax, (xs[0] + xs[-1]) / 2, 2.1, xs[-1] - xs[0] + w, 0.9,
        "GPT: a causal transformer (each position sees only the tokens to its left)", BLUE, fontsize=10)
    for x in xs:
        arrow(ax, (x, yb + 0.25), (x, 2.1 - 0.45), lw=1.0)
    preds = ["c1", "c2", "c3", "c4", "...", "c256"]
    for x, t in zip(xs[4:], preds):
        arrow(ax, (x, 2.1 + 0.45), (x, yt - 0.25), lw=1.0)
        box(ax, x, yt, w, 0.5, t, ORANGE, fontsize=9)
    ax.text((xs[4] + xs[9]) / 2, yt + 0.42, "predicts the next code (sampled: top-k, guidance)",
            ha="center", fontsize=9)
    # right: grid -> decoder -> picture -> rerank
    gx, gy, gs = 6.85, 2.75, 1.1
    for i in range(16):
        for j in range(16):
            ax.add_patch(Rectangle((gx + j * gs / 16, gy + i * gs / 16), gs / 16, gs / 16,
                                   facecolor=ORANGE if (4 <= i <= 11 and 4 <= j <= 11) else "#f4f4f4",
                                   edgecolor="#999999", linewidth=0.4))
    ax.text(gx + gs / 2, gy + gs + 0.12, "all 256 codes:\na 16x16 grid", ha="center", va="bottom", fontsize=9)
    arrow(ax, (xs[9] + 0.32, yt), (gx - 0.05, yt - 0.1), lw=1.2)
    box(ax, 8.95, yt - 0.1, 1.4, 0.7, "VQGAN\ndecoder", BLUE, fontsize=9)
    arrow(ax, (gx + gs + 0.05, yt - 0.1), (8.25, yt - 0.1))
    box(ax, 8.95, 1.75, 1.6, 0.9, "32x32 picture;\n16 candidates", GREY, fontsize=9)
    arrow(ax, (8.95, yt - 0.45), (8.95, 2.2))
    box(ax, 8.95, 0.55, 1.7, 0.8, "CLIP reranker\nkeeps the best", GREEN, fontsize=9)
    arrow(ax, (8.95, 1.3), (8.95, 0.95))
    ax.set_title("A prior over codes (DALL-E 1 at Shapes World size)", fontsize=12)
    fig.tight_layout()
    return fig


for name, make in [("vqgan_clip_loop", loop), ("vqgan_prior", prior)]:
    fig = make()
    fig.savefig(f"{OUT}/{name}.png", dpi=110)
    plt.close(fig)
