"""Draws images/search_pipeline.png (lesson 03, Figure 1)."""
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, FancyArrowPatch

fig, ax = plt.subplots(figsize=(10, 4.4))
ax.set_xlim(0, 100); ax.set_ylim(0, 46); ax.axis("off")
W, H = 16.5, 10

def box(x, y, text, colour, w=W, h=H, bold=False):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.4,rounding_size=1.5",
                                fc=colour, ec="#333333", lw=1.2))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9.5,
            fontweight="bold" if bold else "normal", linespacing=1.3)
    return (x, y, w, h)

def arrow(a, b, text=None, style="-|>"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=14, lw=1.4, color="#333333",
                                 shrinkA=2, shrinkB=2))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 1.2, text, ha="center", va="bottom", fontsize=8.5)

blue, green, yellow, grey = "#dbe9f6", "#dff0d8", "#fcf3cf", "#eeeeee"
# offline row
ax.text(1, 44.5, "Offline: once per image (section 2)", fontsize=11, fontweight="bold", va="top")
y1 = 27
b1 = box(1, y1, "a folder of images\n(.png, .jpg, ...)", grey)
b2 = box(26, y1, "image encoder\n(CLIP's image tower)", blue)
b3 = box(51, y1, "one unit vector\nper image\n(N x D matrix)", green)
b4 = box(79, y1, "cache file on disk\nkey: model + file's\nsha256", yellow, w=19)
arrow((b1[0] + W + 0.5, y1 + H / 2), (b2[0] - 0.5, y1 + H / 2), "batches\nof 64")
arrow((b2[0] + W + 0.5, y1 + H / 2), (b3[0] - 0.5, y1 + H / 2))
arrow((b3[0] + W + 0.5, y1 + H / 2), (b4[0] - 0.5, y1 + H / 2), "saved")
ax.add_patch(FancyArrowPatch((b4[0] + 5, y1 + H + 0.5), (b3[0] + W - 3, y1 + H + 0.5),
                             connectionstyle="arc3,rad=0.45", arrowstyle="-|>", mutation_scale=12,
                             lw=1.1, color="#777777", linestyle="--"))
ax.text(91, y1 + H + 5.0, "re-run: read back,\nnot recomputed", ha="center", fontsize=8.5, color="#555555")
# online row
ax.text(1, 19.5, "Online: once per query (sections 3-5)", fontsize=11, fontweight="bold", va="top")
y2 = 2
c1 = box(1, y2, "a query: text\n\"a red circle\"\nor an image", grey)
c2 = box(26, y2, "text or image\nencoder\n(the same CLIP)", blue)
c3 = box(51, y2, "nearest neighbours\nscores = matrix @ q\nthen top-k", green)
c4 = box(79, y2, "results: k images,\nbest first", yellow, w=19)
arrow((c1[0] + W + 0.5, y2 + H / 2), (c2[0] - 0.5, y2 + H / 2))
arrow((c2[0] + W + 0.5, y2 + H / 2), (c3[0] - 0.5, y2 + H / 2), "query\nvector q")
arrow((c3[0] + W + 0.5, y2 + H / 2), (c4[0] - 0.5, y2 + H / 2))
arrow((b3[0] + W / 2, y1 - 0.6), (c3[0] + W / 2, y2 + H + 0.6))
ax.text(b3[0] + W / 2 + 1, (y1 + y2 + H) / 2, "the index", fontsize=8.5, va="center")
ax.set_title("Image search with CLIP: embed the collection once, then one matrix product per query",
             fontsize=11)
fig.tight_layout()
fig.savefig(Path(__file__).resolve().parents[1] / "search_pipeline.png", dpi=110)
