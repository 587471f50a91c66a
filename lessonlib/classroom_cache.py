"""Before class: download every pretrained weight file the lessons use, and check it by sha256.

Introduced in lesson 00_welcome (for instructors: docs/instructors.md; the command line is
``python -m lessonlib.classroom cache``, in ``lessonlib.classroom``).

``plan()`` lists the pretrained models the lessons load, read from the loaders' own tables
(``registry.MODELS``, the VQGAN of lesson 04, ``pretrained_dalle.PRETRAINED_DALLE``). ``run_cache``
downloads them with those same loaders (``registry.download_checkpoint``,
``vqgan.download_taming_vqgan``, ``pretrained_dalle.download_min_dalle`` / ``download_kandinsky``) into
``environment.cache_dir()``, checks each file by sha256 (the course's pin, else the hub's own hash of
the file, else the record written at the first download) and ends with a table. Without a network it
stops at once and says which host it could not reach and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lessonlib import environment, registry
from lessonlib.checkpoints import CheckpointError, file_sha256, verify_sha256

CACHE_COMMAND = "make cache-pretrained"
MODULE_COMMAND = "python -m lessonlib.classroom"
LESSON_VQGANS = ("vqgan_imagenet_f16_16384",)  # lesson 04, section 5
# Expected downloads in MB where the loaders' tables give no number (estimates; see the notes).
VQGAN_MB = 1000.0  # "~1 GB each" (lessonlib.vqgan)
TEXT_TOWER_MB = 15.0  # XLM-RoBERTa's tokenizer and config (estimate)
DALLE_MB = {"min-dalle": 5400.0, "kandinsky-2.2": 19000.0}  # PRETRAINED_DALLE; no fp16 files
USED_BY = {registry.DEFAULT_MODEL: "01-04", registry.MULTILINGUAL_MODEL: "02"}
ALIASES = {
    "clip": (registry.DEFAULT_MODEL,),
    "multilingual": (registry.MULTILINGUAL_MODEL,),
    "vqgan": LESSON_VQGANS,
    "dalle": ("min-dalle", "kandinsky-2.2"),
    "kandinsky": ("kandinsky-2.2",),
}


@dataclass(frozen=True)
class Item:
    """One pretrained model a lesson loads: its loader's name, where it comes from and its size.

    Introduced in lesson 00_welcome. ``kind`` is ``"clip"``, ``"vqgan"`` or ``"dalle"``.

    Example:
        >>> plan()["vqgan_imagenet_f16_16384"].lessons
        '04'
    """

    key: str
    kind: str
    what: str
    lessons: str
    host: str
    size_mb: float
    gpu_only: bool = False


@dataclass
class Row:
    """One line of the final table: what, where, bytes on disk, and what its sha256 check said."""

    what: str
    where: str
    size: int
    sha256: str
    ok: bool = True


def _host(url: str) -> str:
    return urlparse(url).hostname or url


def _hub_host() -> str:
    from huggingface_hub import constants

    return _host(constants.ENDPOINT)


def plan() -> dict[str, Item]:
    """Every pretrained model the lessons load, read from the loaders' own tables (no network).

    Introduced in lesson 00_welcome.

    Example:
        >>> sorted(plan())[:2]
        ['ViT-B-32', 'kandinsky-2.2']
    """
    from lessonlib import pretrained_dalle as P
    from lessonlib.vqgan import TAMING_VQGANS

    items = {}
    for arch, spec in registry.MODELS.items():
        text_tower = _text_tower_name(arch)
        size = (spec.download_mb or 0.0) + (TEXT_TOWER_MB if text_tower else 0.0)
        extra = f" + {text_tower} tokenizer/config" if text_tower else ""
        what = f"open_clip {arch} / {spec.pretrained}{extra}"
        items[arch] = Item(arch, "clip", what, USED_BY.get(arch, "?"), _hub_host(), size)
    for name in LESSON_VQGANS:
        host = _host(TAMING_VQGANS[name]["ckpt"])
        items[name] = Item(name, "vqgan", f"taming {name} (.ckpt + .yaml)", "04", host, VQGAN_MB)
    hosts = {"min-dalle": _host(P.MIN_DALLE_URL), "kandinsky-2.2": _hub_host()}
    for name in P.PRETRAINED_DALLE:
        what = P.PRETRAINED_DALLE[name]["what"].split(":")[0]
        items[name] = Item(name, "dalle", what, "05", hosts[name], DALLE_MB.get(name, 0.0), True)
    return items


def select(only: str | None = None, skip: str | None = None, gpu: bool | None = None) -> list[Item]:
    """The items ``--only`` / ``--skip`` name (comma-separated keys or aliases: clip, multilingual,
    vqgan, dalle, kandinsky). Without ``--only``, the DALL-E models only where a CUDA GPU is visible
    (lesson 05 runs them on a GPU only).

    Introduced in lesson 00_welcome.

    Example:
        >>> [item.key for item in select(only="vqgan")]
        ['vqgan_imagenet_f16_16384']
    """
    items = plan()

    def names(text: str) -> set[str]:
        keys = set()
        for word in (w.strip() for w in text.split(",") if w.strip()):
            if word not in items and word not in ALIASES:
                known = ", ".join(sorted(ALIASES) + sorted(items))
                raise ValueError(f"unknown model {word!r}: choose from {known}")
            keys.update(ALIASES.get(word, (word,)))
        return keys

    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    wanted = names(only) if only else {k for k, i in items.items() if gpu or not i.gpu_only}
    wanted -= names(skip) if skip else set()
    return [item for key, item in items.items() if key in wanted]


# ----------------------------------------------------------------------------- what is in the cache


def _text_tower_name(arch: str) -> str | None:
    import open_clip

    return (open_clip.get_model_config(arch) or {}).get("text_cfg", {}).get("hf_model_name")


def _hub_snapshot_files(repo_id: str, cache: Path) -> list[Path]:
    return sorted(
        p for p in (cache / f"models--{repo_id.replace('/', '--')}").glob("snapshots/*/*")
    )


def _text_tower_files(name: str) -> list[Path]:
    """The text tower's tokenizer (course cache) and config (the default Hugging Face cache)."""
    from huggingface_hub import try_to_load_from_cache

    files = _hub_snapshot_files(name, registry.hub_cache_dir())
    config = try_to_load_from_cache(name, "config.json")
    return files + ([Path(config)] if isinstance(config, str) else [])


def is_cached(item: Item) -> bool:
    """True when ``item``'s files are all in the cache (file names only, no hashing, no network).

    Introduced in lesson 00_welcome.

    Example:
        >>> is_cached(plan()["ViT-B-32"])  # doctest: +SKIP
        True
    """
    from lessonlib import pretrained_dalle as P

    root = environment.cache_dir()
    if item.kind == "clip":
        tower = _text_tower_name(item.key)
        tower_ok = not tower or len(_text_tower_files(tower)) >= 2
        return registry.cached_checkpoint(registry.MODELS[item.key]) is not None and tower_ok
    if item.kind == "vqgan":  # download_taming_vqgan's layout
        return all((root / "vqgan" / item.key / f).is_file() for f in ("last.ckpt", "model.yaml"))
    if item.key == "min-dalle":  # download_min_dalle's layout (DALL-E Mega)
        files = ("dalle_bart_mega/encoder.pt", "dalle_bart_mega/decoder.pt", "vqgan/detoker.pt")
        return all((root / "min-dalle" / f).is_file() for f in files)
    return not any(
        P._incomplete(P._cached_snapshot(repo, P.KANDINSKY_REVISIONS[part]), part)
        for part, repo in P.KANDINSKY_REPOS.items()
    )


# --------------------------------------------------------------------------------- checking hashes


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's own hash
    digest.update(path.read_bytes())
    return digest.hexdigest()


def verify_file(path: str | Path, pinned: str | None = None, known: str | None = None) -> str:
    """Check ``path`` against the course's pin, else the hub's hash; say which (or that none exists).

    Introduced in lesson 00_welcome. In a Hugging Face cache a file is a link to ``blobs/<hash>``:
    the sha256 of the file for large (LFS) files, git's blob sha1 for small ones. ``known`` is a
    sha256 already computed for the file (it saves hashing it twice). A mismatch raises
    ``CheckpointError``.

    Example:
        >>> verify_file("open_clip_model.safetensors")  # doctest: +SKIP
        "ok (the hub's sha256)"
    """
    path = Path(path)
    if pinned:
        verify_sha256(path, pinned)
        return "ok (the course's pin)"
    blob = Path(os.path.realpath(path)).name
    if re.fullmatch(r"[0-9a-f]{64}", blob):
        got = known or file_sha256(path)
        if got != blob:
            raise CheckpointError(
                f"'{path}' has sha256 {got}, the hub published {blob}: the file is damaged; "
                "delete it so that it is downloaded again"
            )
        return "ok (the hub's sha256)"
    if re.fullmatch(r"[0-9a-f]{40}", blob):
        if _git_blob_sha1(path) != blob:
            raise CheckpointError(f"'{path}' does not match the hub's git hash {blob}: delete it")
        return "ok (the hub's git hash)"
    return "not checked (no hash known)"


def _recorded(path: Path) -> bool:
    return path.with_name(path.name + ".sha256").is_file()


# ---------------------------------------------------------------------------- fetching, per kind


def _fetch_text_tower(arch: str) -> None:
    """The one place the multilingual CLIP's text files touch the network (tests replace it).

    open_clip reads the text tower's config from the default Hugging Face cache; ``load_clip`` keeps
    the tokenizer in the course cache."""
    from transformers import AutoConfig

    AutoConfig.from_pretrained(_text_tower_name(arch))
    registry._tokenizer_for(arch)


def _size(paths) -> int:
    return sum(Path(p).stat().st_size for p in paths if Path(p).is_file())


def _fetch_clip(item: Item) -> list[Row]:
    spec = registry.MODELS[item.key]
    path, filename = registry.download_checkpoint(spec)
    rows = [Row(item.key, str(path), _size([path]), verify_file(path, spec.sha256.get(filename)))]
    if tower := _text_tower_name(item.key):
        _fetch_text_tower(item.key)
        files = _text_tower_files(tower)
        checks = {verify_file(f) for f in files}
        where = ", ".join(sorted({str(f.parent.parent.parent) for f in files}))
        rows.append(
            Row(f"{tower} ({len(files)} files)", where, _size(files), "; ".join(sorted(checks)))
        )
    return rows


def _fetch_vqgan(item: Item) -> list[Row]:
    from lessonlib.vqgan import TAMING_VQGANS, download_taming_vqgan

    folder = environment.cache_dir() / "vqgan" / item.key
    had_record = _recorded(folder / "last.ckpt") and (folder / "last.ckpt").is_file()
    ckpt, yml = download_taming_vqgan(item.key, mode="pretrained")  # checks any record or pin
    if TAMING_VQGANS[item.key].get("sha256"):
        status = "ok (the course's pin)"
    elif had_record:
        status = "ok (matches the record of the first download)"
    else:
        status = "recorded now (no published sha256; later runs check against it)"
    return [Row(item.key, str(folder), _size([ckpt, yml]), status)]


def _fetch_min_dalle(item: Item) -> list[Row]:
    from lessonlib.pretrained_dalle import download_min_dalle

    root = environment.cache_dir() / "min-dalle"
    before = {p for p in root.rglob("*.sha256")} if root.is_dir() else set()
    root = download_min_dalle(is_mega=True, mode="pretrained")  # checks each file's record or pin
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix not in (".sha256", ".part")]
    new = len(set(root.rglob("*.sha256")) - before)
    status = "ok (matches the records of the first download)"
    if new:
        status = f"recorded now for {new} files (no published sha256; later runs check them)"
    return [Row(f"{item.key} ({len(files)} files)", str(root), _size(files), status)]


def _fetch_kandinsky(item: Item) -> list[Row]:
    from lessonlib.pretrained_dalle import KANDINSKY_REPOS, download_kandinsky

    rows = []
    for part, folder in download_kandinsky(mode="pretrained").items():  # checks or writes records
        repo = KANDINSKY_REPOS[part]
        record = environment.cache_dir() / "pretrained_dalle" / repo.replace("/", "--")
        record = record / f"{folder.name}.json"
        hashes = json.loads(record.read_text()) if record.is_file() else {}
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        checks = {verify_file(f, known=hashes.get(f.relative_to(folder).as_posix())) for f in files}
        rows.append(
            Row(
                f"{repo} ({len(files)} files)", str(folder), _size(files), "; ".join(sorted(checks))
            )
        )
    return rows


def _fetch(item: Item) -> list[Row]:
    if item.kind == "clip":
        return _fetch_clip(item)
    if item.kind == "vqgan":
        return _fetch_vqgan(item)
    return _fetch_min_dalle(item) if item.key == "min-dalle" else _fetch_kandinsky(item)


# ------------------------------------------------------------------------------------------ cache


def _unreachable(items: list[Item]) -> dict[str, list[str]]:
    """Hosts that did not answer within ``HUB_TIMEOUT_S`` -> the items that need them."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return {}  # behind a proxy a direct probe proves nothing: let the downloads try
    hosts: dict[str, list[str]] = {}
    for item in items:
        hosts.setdefault(item.host, []).append(item.key)
    return {h: keys for h, keys in hosts.items() if not environment.hub_reachable(h)}


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


def _print_table(rows: list[Row], out) -> None:
    width = max([len(r.what) for r in rows] + [4])
    out(f"\n{'what':{width}}  {'size':>9}  sha256 / where")
    for r in rows:
        out(f"{r.what:{width}}  {_mb(r.size):>9}  {'' if r.ok else 'FAILED: '}{r.sha256}")
        out(f"{'':{width}}  {'':>9}  {r.where}")


OFFLINE_ADVICE = (
    "Nothing was downloaded. What to do: run `{}` on a machine with internet (set HTTPS_PROXY if "
    "your network needs a proxy), then copy the cache folder above to the classroom machines or "
    "point LESSONLIB_CACHE at a shared copy. Offline, the lessons use the course's tiny models."
)


def _print_plan(items: list[Item], cached: dict[str, bool], need: float, out) -> None:
    models = f"{len(items)} model" + ("s" if len(items) != 1 else "")
    out(f"Course cache: {environment.cache_dir()}  ({models}, {_mb(need)} to download)")
    for item in items:
        state = "cached" if cached[item.key] else f"to download, ~{_mb(item.size_mb * 1e6)}"
        out(f"  {item.key:28} lessons {item.lessons:6} {state:26} from {item.host}: {item.what}")
    if left := [i for i in plan().values() if i.key not in cached and i.gpu_only]:
        sizes = ", ".join(f"{i.key} (~{_mb(i.size_mb * 1e6)})" for i in left)
        out(
            f"  not in this run: {sizes}. Lesson 05 runs them on a CUDA GPU only, so without "
            "--only they are fetched only where one is visible; `--only dalle` fetches them anyway."
        )


def _cannot_start(todo: list[Item], need: float, out) -> bool:
    """Say why nothing can be downloaded (hub switched off, no network, no disk space), at once."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline and (blocked := [item.key for item in todo if item.host == _hub_host()]):
        out(
            f"ERROR: HF_HUB_OFFLINE is set, so {', '.join(blocked)} cannot be downloaded: run "
            f"`unset HF_HUB_OFFLINE` in this shell, then `{CACHE_COMMAND}` again"
        )
        return True
    if down := _unreachable(todo):
        for host, keys in down.items():
            wait = f"{environment.HUB_TIMEOUT_S:.0f} s"
            out(f"ERROR: cannot reach {host} (needed for {', '.join(keys)}) within {wait}.")
        out(OFFLINE_ADVICE.format(CACHE_COMMAND))
        return True
    folder = environment.cache_dir()
    probe = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if need * 1.05 > free:
        out(
            f"ERROR: {_mb(need)} to download but only {_mb(free)} free on {probe}: free space, or "
            "set LESSONLIB_CACHE to a bigger disk, or leave some out (--skip dalle)"
        )
        return True
    return False


def run_cache(items: list[Item], dry_run: bool = False, out=print) -> int:
    """Download (or find) ``items`` and check them; print one line per model and a table.

    Introduced in lesson 00_welcome. Returns the exit code: 0 all cached and checked, 1 a download
    or a check failed, 2 nothing was tried (no network, no disk space, the hub switched off).

    Example:
        >>> run_cache(select(only="clip"), dry_run=True)  # doctest: +SKIP
        0
    """
    cached = {item.key: is_cached(item) for item in items}
    todo = [item for item in items if not cached[item.key]]
    need = sum(item.size_mb for item in todo) * 1e6
    _print_plan(items, cached, need, out)
    if dry_run or not items:
        return 0
    if _cannot_start(todo, need, out):
        return 2
    rows, failed = [], 0
    for n, item in enumerate(items, 1):
        tag = f"[{n}/{len(items)}] {item.key}:"
        out(f"{tag} {'checking' if cached[item.key] else 'downloading'}")
        start = time.perf_counter()
        try:
            new = _fetch(item)
        except Exception as err:  # noqa: BLE001 - one clear line per model, never a traceback
            failed += 1
            hint = "" if isinstance(err, CheckpointError) else f"; run `{CACHE_COMMAND}` again"
            line = " ".join(f"{type(err).__name__}: {err}".split())
            rows.append(Row(item.key, str(environment.cache_dir()), 0, line + hint, ok=False))
            out(f"{tag} FAILED: {line}{hint}")
            continue
        rows += new
        size, took = _mb(sum(r.size for r in new)), time.perf_counter() - start
        out(f"{tag} {size} in {took:.0f} s, sha256 {'; '.join(r.sha256 for r in new)}")
    _print_table(rows, out)
    summary = f"\n{len(items) - failed} of {len(items)} models cached and checked"
    out(summary + (f"; {failed} FAILED (see above)" if failed else ""))
    return 1 if failed else 0
