"""Before class: the instructor's two commands, ``cache`` (the pretrained weights) and ``check``.

Introduced in lesson 00_welcome (for instructors: docs/instructors.md).

On a machine with a network, the day before an offline class::

    python -m lessonlib.classroom cache  [--only clip,vqgan] [--skip dalle] [--dry-run]
    python -m lessonlib.classroom check  [--only ...] [--skip ...] [--download] [--device cpu]

``cache`` is ``lessonlib.classroom_cache.run_cache``. ``check`` runs the pretrained path of lessons
02-05 on the cached files only, with the model hub switched off as in a classroom without a network
(or downloads first, with ``--download``). Each step prints PASS or FAIL with what it measured and how
long it took; the exit code is 1 if any step failed. The steps ask what the lessons assert:

* lesson 02: ViT-B-32 labels the 9 photos with the lesson's 9 labels and CLIP's 7 templates (the cat
  photo ``chelsea`` -> "cat", ``grace_hopper`` -> "person", ``rocket`` -> "rocket", ...) and matches
  photos to their own descriptions; the multilingual CLIP reads the lesson's Urdu prompts;
* lesson 03: "a photo of a cat" finds the cat photo first, an image finds itself, a second index over
  the same folder embeds nothing (the cache);
* lesson 04: a short VQGAN+CLIP run with taming's VQGAN raises CLIP's score for its prompt;
* lesson 05 (a CUDA GPU only): min-dalle and Kandinsky 2.2 draw "a photo of a cat", CLIP reads a cat.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lessonlib import embed, environment, registry
from lessonlib import zeroshot as zs
from lessonlib.classroom_cache import (
    CACHE_COMMAND,
    MODULE_COMMAND,
    is_cached,
    plan,
    run_cache,
    select,
)

# Lesson 02, section 2: the labels, the answer expected for each photo (the camera photo shows a
# person too: either counts), and the three answers the lesson itself asserts.
PHOTO_LABELS = ["cat", "dog", "person", "rocket", "motorcycle", "horse", "cup of coffee",
                "page of text", "camera"]  # fmt: skip
EXPECTED = {
    "page": ("page of text",),
    "chelsea": ("cat",),
    "astronaut": ("person",),
    "rocket": ("rocket",),
    "motorcycle_right": ("motorcycle",),
    "camera": ("camera", "person"),
    "horse": ("horse",),
    "coffee": ("cup of coffee",),
    "grace_hopper": ("person",),
}
REQUIRED = ("chelsea", "grace_hopper", "rocket")
MIN_RIGHT = 7  # of 9; lesson 02 also asserts >= 7/9 photos closest to their own description
URDU_TEMPLATE = "{} کی تصویر"
URDU_LABELS = {"بلی": "cat", "کتا": "dog", "انسان": "person", "راکٹ": "rocket",
               "گھوڑا": "horse", "کافی کا کپ": "cup of coffee"}  # fmt: skip
# A picture that does not change still scores ~1e-5 apart (rounding to 8-bit pixels, measured with a
# one-code VQGAN); the tiny models rise by 0.08 in 3 steps.
MIN_RISE = 0.005
VQGAN_PROMPT = "a watercolour painting of a lighthouse at dawn"  # lesson 04, section 5
DRAW_PROMPT = "a photo of a cat"
DRAW_LABELS = ["cat", "dog", "rocket", "cup of coffee", "horse", "motorcycle", "page of text"]


def _best(probs: torch.Tensor, labels: list[str], names: list[str]) -> dict[str, str]:
    return {name: labels[i] for name, i in zip(names, probs.argmax(-1).tolist())}


def check_zero_shot(model, preprocess, tokenizer) -> tuple[bool, str]:
    """Lesson 02 with a real CLIP: the 9 photos labelled, and matched to their own descriptions.

    Introduced in lesson 00_welcome. PASS: the three answers lesson 02 asserts, at least
    ``MIN_RIGHT`` of 9 answers as in ``EXPECTED``, and at least ``MIN_RIGHT`` photos closest to their
    own description.

    Example:
        >>> check_zero_shot(*registry.load_clip("ViT-B-32", mode="pretrained"))  # doctest: +SKIP
        (True, '9/9 photos labelled as expected ...')
    """
    photos, names = zs.example_photos()
    features = embed.embed_images(model, photos, preprocess)
    clf = zs.ZeroShotClassifier(model, tokenizer, PHOTO_LABELS, templates="clip7")
    best = _best(clf.predict_proba(features), PHOTO_LABELS, names)
    right = [n for n in names if best[n] in EXPECTED[n]]
    texts = embed.embed_texts(model, tokenizer, [zs.PHOTO_DESCRIPTIONS[n] for n in names])
    own = int(((texts @ features.T).argmax(dim=0) == torch.arange(len(names))).sum())
    ok = all(n in right for n in REQUIRED) and len(right) >= MIN_RIGHT and own >= MIN_RIGHT
    wrong = [f"{n} -> {best[n]!r}" for n in names if n not in right]
    return ok, (
        f"{len(right)}/{len(names)} photos labelled as expected"
        + (f" (not: {', '.join(wrong)})" if wrong else "")
        + f"; {own}/{len(names)} photos closest to their own description"
    )


def check_multilingual(model, preprocess, tokenizer) -> tuple[bool, str]:
    """Lesson 02's Urdu prompts with the multilingual CLIP: PASS if chelsea -> cat, rocket -> rocket.

    Introduced in lesson 00_welcome.

    Example:
        >>> check_multilingual(*registry.load_clip("xlm-roberta-base-ViT-B-32"))  # doctest: +SKIP
        (True, "chelsea -> 'cat', rocket -> 'rocket' ...")
    """
    photos, names = zs.example_photos()
    clf = zs.ZeroShotClassifier(model, tokenizer, list(URDU_LABELS), templates=URDU_TEMPLATE)
    urdu = _best(clf.predict_proba(photos, preprocess), clf.class_names, names)
    best = {n: URDU_LABELS[u] for n, u in urdu.items()}
    ok = best["chelsea"] == "cat" and best["rocket"] == "rocket"
    return ok, ", ".join(f"{n} -> {best[n]!r}" for n in names)


def check_search(model, preprocess, tokenizer, workdir: str | Path) -> tuple[bool, str]:
    """Lesson 03 over the photos: a text query, an image query, and the embedding cache.

    Introduced in lesson 00_welcome. PASS: "a photo of a cat" ranks the cat photo first, the cat
    photo finds itself first (cosine > 0.999), and a second index over the folder embeds nothing.

    Example:
        >>> check_search(model, preprocess, tokenizer, "/tmp/check")  # doctest: +SKIP
        (True, "'a photo of a cat' -> chelsea ...")
    """
    from lessonlib.images import sample_photo_paths
    from lessonlib.search import ImageIndex

    folder, cache = Path(workdir) / "photos", Path(workdir) / "embeddings.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in sample_photo_paths().items():
        shutil.copy(path, folder / f"{name}{path.suffix}")
    index = ImageIndex(model, preprocess, tokenizer, cache=cache, model_name="classroom check")
    index.add_folder(folder, progress=False)
    cat = Path(index.search(DRAW_PROMPT, k=1)[0].name).stem
    chelsea = next(p for p in folder.iterdir() if p.stem == "chelsea")
    itself = index.search(chelsea, k=1)[0]
    again = ImageIndex(model, preprocess, tokenizer, cache=cache, model_name="classroom check")
    rerun = again.add_folder(folder, progress=False)
    ok = cat == "chelsea" and Path(itself.name).stem == "chelsea" and itself.score > 0.999
    ok = ok and rerun.embedded == 0
    found = f"the cat photo -> {Path(itself.name).stem} (cos {itself.score:.3f})"
    second = f"second index: {rerun.embedded} embedded, {rerun.from_cache} from cache"
    return ok, f"'{DRAW_PROMPT}' -> {cat}; {found}; {second}"


def check_vqgan_clip(vqgan, model, preprocess, tokenizer, size=128, steps=10, cutn=8):
    """Lesson 04's loop, briefly: PASS if CLIP's score for the prompt rises by at least ``MIN_RISE``
    from the first picture to the last. Returns ``(ok, text)``.

    Introduced in lesson 00_welcome.

    Example:
        >>> check_vqgan_clip(vqgan, model, preprocess, tokenizer, size=128, steps=10)  # doctest: +SKIP
        (True, 'CLIP score for the prompt 0.171 -> 0.214 in 10 steps at 128x128 ...')
    """
    from lessonlib.generate import generate

    settings = dict(size=size, steps=steps, cutn=cutn, seed=0, progress=False)
    prompts = f"{VQGAN_PROMPT}|blurry:-0.5"
    result = generate(prompts, vqgan, model, tokenizer, preprocess, **settings)
    text = embed.embed_texts(model, tokenizer, [VQGAN_PROMPT])
    pictures = embed.embed_images(model, [result.frames[0], result.image], preprocess)
    first, last = (pictures @ text.T).squeeze(1).tolist()
    ok = last - first >= MIN_RISE and result.image.size == result.size
    return ok, (
        f"CLIP score for the prompt {first:.3f} -> {last:.3f} ({last - first:+.3f}, at least "
        f"+{MIN_RISE} needed) in {steps} steps at "
        f"{result.size[0]}x{result.size[1]}, {cutn} cutouts ({result.seconds / steps:.2f} s/step)"
    )


def check_drawing(images, model, preprocess, tokenizer) -> tuple[bool, str]:
    """Lesson 05: PASS if CLIP labels every picture drawn for "a photo of a cat" as a cat.

    Introduced in lesson 00_welcome.

    Example:
        >>> check_drawing(kandinsky.generate("a photo of a cat"), model, preprocess, tokenizer)  # doctest: +SKIP
        (True, "CLIP reads 'cat' (p=0.97)")
    """
    probs = zs.ZeroShotClassifier(model, tokenizer, DRAW_LABELS, "clip7").predict_proba(
        list(images), preprocess
    )
    got = [(DRAW_LABELS[int(p.argmax())], float(p.max())) for p in probs]
    ok = all(label == "cat" for label, _ in got)
    return ok, "CLIP reads " + ", ".join(f"{label!r} (p={p:.2f})" for label, p in got)


# --------------------------------------------------------------------------------------- the run


def default_loaders(device: str) -> dict[str, Callable]:
    """Each pretrained model the check needs, loaded the way the lessons load it (mode pretrained).

    Introduced in lesson 00_welcome.

    Example:
        >>> model, preprocess, tokenizer = default_loaders("cpu")["ViT-B-32"]()  # doctest: +SKIP
    """
    from lessonlib.pretrained_dalle import load_dalle
    from lessonlib.vqgan import load_pretrained_vqgan

    loaders: dict[str, Callable] = {}
    for key, item in plan().items():
        if item.kind == "clip":
            loaders[key] = lambda k=key: registry.load_clip(
                k, device=device, strict=True, mode="pretrained"
            )
        elif item.kind == "vqgan":
            loaders[key] = lambda k=key: load_pretrained_vqgan(
                k, with_encoder=False, mode="pretrained"
            ).to(device)
        else:
            loaders[key] = lambda k=key: load_dalle(k, mode="pretrained", device=device)
    return loaders


def _steps(on_gpu: bool) -> list[tuple[str, str, tuple[str, ...], Callable]]:
    """(title, the item that selects it, the models it needs, the step) for every check."""
    clip, ml = registry.DEFAULT_MODEL, registry.MULTILINGUAL_MODEL
    size, steps, cutn = (256, 50, 32) if on_gpu else (128, 20, 8)

    def draw_min_dalle(m, c):
        return check_drawing(m.generate(DRAW_PROMPT, n=1, seed=0), *c)

    def draw_kandinsky(m, c):
        return check_drawing(m.generate(DRAW_PROMPT, n=1, seed=0, steps=25), *c)

    return [
        (f"lesson 02 zero-shot, {clip}", clip, (clip,), lambda c: check_zero_shot(*c)),
        ("lesson 02 Urdu prompts, multilingual CLIP", ml, (ml,), lambda c: check_multilingual(*c)),
        (f"lesson 03 image search, {clip}", clip, (clip,),
         lambda c: check_search(*c, tempfile.mkdtemp(prefix="classroom_check_"))),
        ("lesson 04 VQGAN+CLIP", "vqgan_imagenet_f16_16384", ("vqgan_imagenet_f16_16384", clip),
         lambda v, c: check_vqgan_clip(v, *c, size=size, steps=steps, cutn=cutn)),
        ("lesson 05 min-dalle", "min-dalle", ("min-dalle", clip), draw_min_dalle),
        ("lesson 05 Kandinsky 2.2", "kandinsky-2.2", ("kandinsky-2.2", clip), draw_kandinsky),
    ]  # fmt: skip


def _run_step(step, needs, no_gpu: bool, cached, loaded) -> tuple[str, str]:
    """One check: SKIP, FAIL with what is missing, or the step's own verdict (a crash is a FAIL)."""
    loaders, models = loaded
    gpu_only = plan()[needs[0]].gpu_only
    if no_gpu:
        return "SKIP", "no CUDA GPU here: lesson 05 runs it on a GPU only"
    if missing := [n for n in needs if not cached(n)]:
        command = f"`{MODULE_COMMAND} cache --only {','.join(missing)}`"
        text = f"not in the cache: {', '.join(missing)}: run `{CACHE_COMMAND}` (or {command})"
        return ("SKIP" if gpu_only else "FAIL"), text + " on a machine with internet"
    try:
        for n in needs:
            if n not in models:
                models[n] = loaders[n]()
        ok, text = step(*(models[n] for n in needs))
        status = "PASS" if ok else "FAIL"
    except Exception as err:  # noqa: BLE001 - one line per step, never a traceback
        status, text = "FAIL", " ".join(f"{type(err).__name__}: {err}".split())
    for n in needs:  # free the big models a later step does not need
        if n != registry.DEFAULT_MODEL:
            models.pop(n, None)
    return status, text


def run_check(
    only: str | None = None,
    skip: str | None = None,
    download: bool = False,
    loaders: dict[str, Callable] | None = None,
    device: str | None = None,
    out=print,
) -> int:
    """Run the checks that ``only`` / ``skip`` select; print PASS / FAIL / SKIP lines; return the exit
    code (1 if any FAIL). ``loaders`` (tests) replaces the cache and the real loaders.

    Introduced in lesson 00_welcome.

    Example:
        >>> run_check(only="clip")  # doctest: +SKIP
        0
    """
    cfg = environment.setup(mode="pretrained", device=device, verbose=False)
    on_gpu = cfg.device.startswith("cuda")
    items = {item.key: item for item in select(only, skip, gpu=True)}
    if download and loaders is None:
        wanted = [item for item in items.values() if on_gpu or not item.gpu_only]
        needed = {n for _, key, needs, _ in _steps(on_gpu) if key in items for n in needs}
        wanted += [plan()[n] for n in needed if n not in items]
        if run_cache(wanted, out=out) == 2:
            return 1
    else:
        environment._go_offline()  # a classroom without a network: the cache alone must do
    if loaders is None:
        loaders, cached = default_loaders(cfg.device), lambda key: is_cached(plan()[key])
    else:
        cached = loaders.__contains__
    where = "downloads allowed" if download else "cached files only"
    head = f"lessonlib classroom check: device={cfg.device}, threads={cfg.threads}"
    out(f"{head}, cache {environment.cache_dir()}, {where}")
    models: dict[str, object] = {}
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    try:
        for title, key, needs, step in _steps(on_gpu):
            if key not in items:
                continue
            start = time.perf_counter()
            status, text = _run_step(
                step, needs, plan()[key].gpu_only and not on_gpu, cached, (loaders, models)
            )
            counts[status] += 1
            out(f"{status}  {title}: {text}  ({time.perf_counter() - start:.1f} s)")
    finally:
        environment._go_online()
    out(f"{counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP")
    return 1 if counts["FAIL"] else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m lessonlib.classroom cache|check ...``; returns the exit code.

    Introduced in lesson 00_welcome.

    Example:
        >>> main(["cache", "--dry-run"])  # doctest: +SKIP
        0
    """
    about = "Before class: cache the pretrained weights, then check the pretrained path."
    parser = argparse.ArgumentParser(prog=MODULE_COMMAND, description=about)
    sub = parser.add_subparsers(dest="command", required=True)
    names = "comma-separated: clip, multilingual, vqgan, dalle, kandinsky, min-dalle or a key"
    cache = sub.add_parser("cache", help="download and sha256-check the pretrained weights")
    check = sub.add_parser("check", help="run the pretrained path of lessons 02-05 on the cache")
    for p in (cache, check):
        p.add_argument("--only", help=f"only these ({names})")
        p.add_argument("--skip", help=f"leave these out ({names})")
    cache.add_argument("--dry-run", action="store_true", help="print the plan, download nothing")
    check.add_argument("--download", action="store_true", help="download what is missing first")
    check.add_argument("--device", help="cpu, cuda or mps (default: what setup() picks)")
    args = parser.parse_args(argv)
    try:
        if args.command == "cache":
            return run_cache(select(args.only, args.skip), dry_run=args.dry_run)
        return run_check(args.only, args.skip, download=args.download, device=args.device)
    except ValueError as err:  # a bad --only / --skip / --device: say what works
        print(f"{MODULE_COMMAND} {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
