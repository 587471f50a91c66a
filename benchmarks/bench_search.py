"""Benchmarks of lesson 03 (image search), measured side by side in one run.

1. Indexing throughput on Shapes World PNG files with the tiny CLIP: a loop that embeds one image at a
   time (as the original lesson does) vs a bare batched ``encode_image`` loop vs ``ImageIndex.add``
   (fresh cache: hashing, batching, progress bar and the atomic cache write included), plus a re-run
   that finds everything in the cache. All three read the files with ``load_image`` and run the same
   ``preprocess``; repeats are interleaved and the median is reported.
2. One text query (tokenise + encode text + exact search) over 100,000 cached embeddings.
3. Exact torch search vs FAISS (flat, HNSW, IVF) from 1,000 to 1,000,000 vectors: build time, latency of
   one query, recall@10 against exact search.

Run:
    .venv/bin/python benchmarks/bench_search.py              # everything (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_search.py --quick      # smaller sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lessonlib.data import ShapesWorld
from lessonlib.images import load_image
from lessonlib.search import ImageIndex, build_faiss_index, exact_search


def tiny_clip():
    """The shipped tiny CLIP; before its weights exist, the same architecture with random weights."""
    from lessonlib import models

    try:
        model, preprocess, tokenizer = models.load_tiny_clip()
        return model, preprocess, tokenizer, "tiny CLIP (shipped weights)"
    except FileNotFoundError:
        cfg = models.TinyCLIPConfig()
        model = models.build_tiny_clip(cfg).eval()
        return (
            model,
            models.make_preprocess(cfg),
            models.make_tokenizer(cfg),
            "tiny CLIP architecture (random weights: shipped weights not found; speed is the same)",
        )


# ------------------------------------------------------------------------------------- 1. indexing


def bench_indexing(n: int, repeats: int, batch_size: int) -> None:
    model, preprocess, tokenizer, what = tiny_clip()
    print(f"\n## 1. Indexing {n} Shapes World PNG files (32x32), {what}, batch {batch_size}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_search_"))
    ds = ShapesWorld(n, split="all", seed=0)
    paths = []
    for i in range(n):
        path = tmp / "images" / f"shape_{i:05d}.png"
        path.parent.mkdir(exist_ok=True)
        ds.pil(i).save(path)
        paths.append(path)

    def one_at_a_time():
        out = []
        with torch.inference_mode():
            for p in paths:
                x = preprocess(load_image(p)).unsqueeze(0)
                out.append(F.normalize(model.encode_image(x), dim=-1))
        return torch.cat(out)

    def bare_batched():
        out = []
        with torch.inference_mode():
            for s in range(0, n, batch_size):
                x = torch.stack([preprocess(load_image(p)) for p in paths[s : s + batch_size]])
                out.append(F.normalize(model.encode_image(x), dim=-1))
        return torch.cat(out)

    run = {"k": 0}

    def index_fresh():
        run["k"] += 1
        cache = tmp / f"cache_{run['k']}.safetensors"
        index = ImageIndex(model, preprocess, tokenizer, cache=cache, batch_size=batch_size)
        report = index.add(paths, progress=False)
        assert report.embedded == len(set(index._digests)), report
        return index

    warm_cache = tmp / "warm.safetensors"
    ImageIndex(model, preprocess, tokenizer, cache=warm_cache).add(paths, progress=False)

    def index_rerun():
        index = ImageIndex(model, preprocess, tokenizer, cache=warm_cache, batch_size=batch_size)
        assert index.add(paths, progress=False).embedded == 0

    # Same results first (the index must compute what the bare loop computes).
    ref = bare_batched()
    torch.testing.assert_close(index_fresh().embeddings, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(one_at_a_time(), ref, atol=1e-4, rtol=1e-4)

    methods = {
        "one image at a time": one_at_a_time,
        "bare batched encode_image": bare_batched,
        "ImageIndex.add (fresh cache)": index_fresh,
        "ImageIndex.add (re-run, all cached)": index_rerun,
    }
    wall = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    for r in range(repeats):  # interleaved, rotating the order, so background load hits all alike
        names = list(methods)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            t, c = time.perf_counter(), time.process_time()
            methods[name]()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    print(
        f"| method | wall s (median of {repeats}) | CPU s (median) | images/s (wall) | "
        "speed-up vs one at a time (wall / CPU) | time vs bare batched (wall / CPU) |"
    )
    print("|---|---|---|---|---|---|")
    w = {name: statistics.median(v) for name, v in wall.items()}
    c = {name: statistics.median(v) for name, v in cpu.items()}
    one, bare, idx = (
        "one image at a time",
        "bare batched encode_image",
        "ImageIndex.add (fresh cache)",
    )
    for name in methods:
        print(
            f"| {name} | {w[name]:.3f} | {c[name]:.3f} | {n / w[name]:,.0f} | "
            f"{w[one] / w[name]:.1f}x / {c[one] / c[name]:.1f}x | "
            f"{w[name] / w[bare]:.3f} / {c[name] / c[bare]:.3f} |"
        )
    print(
        f"\nImageIndex.add vs one-at-a-time: {w[one] / w[idx]:.1f}x wall, {c[one] / c[idx]:.1f}x CPU "
        f"(target >= 5x); vs bare batched: {w[idx] / w[bare] - 1:+.1%} wall, "
        f"{c[idx] / c[bare] - 1:+.1%} CPU (target within 10%)"
    )


# -------------------------------------------------------------------------------- 2. 100k query


def time_queries(index: ImageIndex, repeats: int) -> dict[str, list[float]]:
    """Seconds per text query: end to end (``index.search``) and its two parts, in the order a user
    runs them (text tower first, then the search, so the embedding matrix is not kept hot in cache)."""
    queries = [
        "a red circle",
        "a small blue square at the top",
        "a green cross",
        "a large purple shape",
    ]
    for q in queries:  # warm-up
        index.search(q, k=10)
    out = {"text": [], "search": [], "total": [], "total_cpu": []}
    for r in range(repeats):
        q = queries[r % len(queries)]
        t0, c0 = time.perf_counter(), time.process_time()
        index.search(q, k=10)
        t1, c1 = time.perf_counter(), time.process_time()
        v = index.query_embedding(q)
        t2 = time.perf_counter()
        index.search_embeddings(v[None], 10)
        t3 = time.perf_counter()
        out["total"].append(t1 - t0)
        out["total_cpu"].append(c1 - c0)
        out["text"].append(t2 - t1)
        out["search"].append(t3 - t2)
    return out


def bench_query(n: int, repeats: int, vit: bool) -> None:
    import open_clip

    tiny = tiny_clip()
    models_to_time = [(tiny[3], tiny[:3])]
    if vit:  # the pretrained lessons' model; random weights, so no download, and the same speed
        model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
        models_to_time.append(
            (
                "ViT-B-32 architecture (random weights)",
                (model.eval(), preprocess, open_clip.get_tokenizer("ViT-B-32")),
            )
        )
    print(
        f"\n## 2. One text query over {n:,} cached embeddings (median and p90 of {repeats} queries)"
    )
    print(
        "| model | d | encode text ms | exact search ms | `index.search(text, k=10)` ms, wall | "
        "p90 wall | CPU ms |"
    )
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for what, (model, preprocess, tokenizer) in models_to_time:
        index = ImageIndex(model, preprocess, tokenizer, cache=None)
        dim = index.embed_texts(["a red circle"]).shape[1]
        # Search time does not depend on where the vectors came from: random unit vectors of the right size.
        index.add_embeddings(
            torch.randn(n, dim, generator=g), names=[f"image {i}" for i in range(n)]
        )
        t = time_queries(index, repeats)
        ms = {k: 1000 * statistics.median(v) for k, v in t.items()}
        p90 = 1000 * sorted(t["total"])[int(0.9 * len(t["total"]))]
        print(
            f"| {what} | {dim} | {ms['text']:.2f} | {ms['search']:.2f} | {ms['total']:.2f} | {p90:.2f} | "
            f"{ms['total_cpu']:.2f} |"
        )
        del index
    print("\ntarget: <= 20 ms end to end (tiny model)")


# ------------------------------------------------------------------------------------- 3. faiss


def synthetic_embeddings(n: int, d: int, seed: int, latent: int = 16) -> torch.Tensor:
    """Unit vectors with a low intrinsic dimension, like real embeddings: a random linear map of a
    ``latent``-dimensional Gaussian, plus a little isotropic noise. (Isotropic noise alone would make all
    neighbours nearly equally far in 512 dimensions, where no approximate index can tell them apart.)"""
    g = torch.Generator().manual_seed(1234)  # the same map for data and queries
    w = torch.randn(latent, d, generator=g)
    g.manual_seed(seed)
    out = torch.empty(n, d)
    for s in range(0, n, 100_000):  # in chunks, to keep peak memory low
        m = min(100_000, n - s)
        z = torch.randn(m, latent, generator=g)
        out[s : s + m] = z @ w + 0.2 * math.sqrt(latent) * torch.randn(m, d, generator=g)
    return F.normalize(out, dim=1)


def per_query_ms(fn, n_queries: int) -> tuple[float, float]:
    """Median (wall, CPU) milliseconds of ``fn(i)`` over queries i = 0 .. n_queries-1, after a warm-up.

    CPU time is the calling thread's (``time.thread_time``): with one torch and one FAISS thread all the
    work runs there, and on a shared machine it leaves out the time spent waiting for a core."""
    fn(0)
    wall, cpu = [], []
    for i in range(n_queries):
        t, c = time.perf_counter(), time.thread_time()
        fn(i)
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def bench_faiss(sizes, dims, n_queries: int, hnsw_max: int) -> None:
    import faiss

    print(
        f"\n## 3. Exact torch vs FAISS, one query at a time (median of {n_queries} queries), "
        f"{torch.get_num_threads()} torch threads, {faiss.omp_get_max_threads()} faiss threads"
    )
    print(
        "| d | N | method | build s | ms / query, wall | ms / query, CPU | recall@10 vs exact | "
        "speed-up vs torch (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for d in dims:
        for n in sizes:
            x = synthetic_embeddings(n, d, seed=0)
            q = synthetic_embeddings(n_queries, d, seed=1)
            qn = q.numpy()
            _, truth = exact_search(x, q, 10)
            torch_ms, torch_cpu = per_query_ms(
                lambda i, x=x, q=q: exact_search(x, q[i], 10), n_queries
            )
            print(
                f"| {d} | {n:,} | torch exact (matmul + topk) | 0 | {torch_ms:.3f} | {torch_cpu:.3f} | "
                "1.000 | 1.0x |"
            )
            for kind in ["flat", "ivf"] + (["hnsw"] if n <= hnsw_max else []):
                t = time.perf_counter()
                index = build_faiss_index(x, kind)
                build = time.perf_counter() - t
                settings = {"flat": [None], "ivf": [16, 64], "hnsw": [64, 256]}[kind]
                for setting in settings if n >= 100_000 else settings[:1]:
                    if kind == "ivf":
                        index.nprobe = setting
                        label = f"faiss IVF (nlist={index.nlist}, nprobe={setting})"
                    elif kind == "hnsw":
                        index.hnsw.efSearch = setting
                        label = f"faiss HNSW (M=32, efSearch={setting})"
                    else:
                        label = "faiss IndexFlatIP (exact)"
                    ms, ms_cpu = per_query_ms(
                        lambda i, f=index, qn=qn: f.search(qn[i : i + 1], 10), n_queries
                    )
                    _, found = index.search(qn, 10)
                    recall = sum(
                        len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth)
                    ) / (10 * n_queries)
                    print(
                        f"| {d} | {n:,} | {label} | {build:.2f} | {ms:.3f} | {ms_cpu:.3f} | "
                        f"{recall:.3f} | {torch_cpu / ms_cpu:.1f}x |"
                    )
                    sys.stdout.flush()
                del index
            del x


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch and faiss threads (default 2)"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["indexing", "query", "faiss"])
    parser.add_argument("--n-index", type=int, default=1000, help="images to index in part 1")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats in part 1")
    parser.add_argument(
        "--hnsw-max", type=int, default=100_000, help="largest N for HNSW (its build is slow)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    print(
        f"torch {torch.__version__}, {args.threads} threads; timings are medians of interleaved runs"
    )
    if "indexing" not in args.skip:
        n = 200 if args.quick else args.n_index
        bench_indexing(n=n, repeats=3 if args.quick else args.repeats, batch_size=64)
    if "query" not in args.skip:
        bench_query(
            n=10_000 if args.quick else 100_000,
            repeats=20 if args.quick else 200,
            vit=not args.quick,
        )
    if "faiss" not in args.skip:
        if args.quick:
            bench_faiss([1_000, 10_000], [64], n_queries=20, hnsw_max=10_000)
        else:
            bench_faiss(
                [1_000, 10_000, 100_000, 1_000_000],
                [64, 512],
                n_queries=100,
                hnsw_max=args.hnsw_max,
            )


if __name__ == "__main__":
    main()
