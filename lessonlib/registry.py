"""One loader for every CLIP in the course: pretrained open_clip models, local files and the tiny model.

Introduced in lesson 02_zero_shot_classification.

``load_clip(name, pretrained)`` returns ``(model, preprocess, tokenizer)`` the way
``open_clip.create_model_and_transforms`` + ``open_clip.get_tokenizer`` do, with four differences that
matter in a course:

* Before any network call it asks ``lessonlib.environment.get_mode()``. In ``offline`` mode it does not
  touch the hub at all: it prints one line saying why and returns the tiny Shapes World model (or raises,
  if the caller passed ``strict=True``).
* Downloads land in ``lessonlib.environment.cache_dir() / "hub"`` and are checked against a sha256 where
  the course knows one.
* Our code, not a pickle, reads the weights: safetensors, or ``torch.load(weights_only=True)``, then
  ``model.load_state_dict``. A missing, damaged or ill-fitting file gets an error that says which keys.
* A local file goes through exactly the same reading code as a download (that is how it is tested offline).

Names:

* ``"tiny"`` (alias ``"tiny-clip-shapes"``): the course's tiny CLIP trained on Shapes World, shipped as
  ``lessonlib/weights/tiny_clip.safetensors`` (``lessonlib.models.load_tiny_clip``).
* an open_clip architecture, e.g. ``"ViT-B-32"`` (default tag ``laion2b_s34b_b79k``) or
  ``"xlm-roberta-base-ViT-B-32"`` (default tag ``laion5b_s13b_b90k``, for prompts that are not English;
  needs the ``transformers`` package), with ``pretrained=`` a tag or a local checkpoint file.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from lessonlib.checkpoints import (
    WEIGHTS_DIR,
    load_into,
    read_state_dict,
    verify_sha256,
)
from lessonlib.environment import cache_dir, get_mode, validate_mode

TINY_NAMES = ("tiny", "tiny-clip-shapes")
DEFAULT_MODEL = "ViT-B-32"
MULTILINGUAL_MODEL = "xlm-roberta-base-ViT-B-32"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
TRANSFORMERS_HINT = 'pip install "transformers>=4.40,<5"'


@dataclass(frozen=True)
class ModelSpec:
    """A pretrained checkpoint the course knows: where it lives and how to check it.

    Introduced in lesson 02_zero_shot_classification.

    ``sha256`` maps a file name to its hash; a file that is not listed is not checked (the course only
    lists hashes it has verified, it never guesses one).

    Example:
        >>> MODELS['ViT-B-32'].hub_repo
        'laion/CLIP-ViT-B-32-laion2B-s34B-b79K'
    """

    arch: str
    pretrained: str
    hub_repo: str
    filenames: tuple[str, ...] = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    sha256: dict[str, str] = field(default_factory=dict)
    params: int | None = None  # None: counted from the architecture when list_models() is called
    download_mb: float | None = None
    languages: str = "English"
    note: str = ""


# The hashes of the hub files could not be checked from this project's sources (no hub access when this
# was written), so they are left empty: hf_hub_download still checks each LFS file against the hub's own
# sha256 while downloading. Add a hash here only after computing it from a downloaded file.
MODELS: dict[str, ModelSpec] = {
    DEFAULT_MODEL: ModelSpec(
        arch=DEFAULT_MODEL,
        pretrained="laion2b_s34b_b79k",
        hub_repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        download_mb=605.0,
        note="the course's default CLIP (66.6% zero-shot ImageNet top-1)",
    ),
    MULTILINGUAL_MODEL: ModelSpec(
        arch=MULTILINGUAL_MODEL,
        pretrained="laion5b_s13b_b90k",
        hub_repo="laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
        # ViT-B-32 image tower (87.8 M, counted) + xlm-roberta-base text tower (~278 M, its model card).
        params=366_000_000,
        download_mb=1470.0,
        languages="100 languages (XLM-RoBERTa)",
        note="for prompts that are not English; needs the transformers package",
    ),
}


# ----------------------------------------------------------------------------------------------- helpers


def _quiet_open_clip():
    """open_clip logs 'initialized randomly' warnings while we build an architecture we fill right after."""

    class _Quiet:
        def __enter__(self):
            logging.disable(logging.WARNING)

        def __exit__(self, *exc):
            logging.disable(logging.NOTSET)

    return _Quiet()


def hub_cache_dir() -> Path:
    """Folder that holds downloaded checkpoints: ``cache_dir() / "hub"`` (a Hugging Face cache layout).

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> hub_cache_dir().name
        'hub'
    """
    return cache_dir() / "hub"


# ---------------------------------------------------------------------------------- resolving the names


def _open_clip():
    import open_clip

    return open_clip


def _check_arch(name: str) -> str:
    open_clip = _open_clip()
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name {name!r} is empty: give e.g. 'ViT-B-32' or 'tiny'")
    name = name.strip()
    if name in open_clip.list_models():
        return name
    same_but_case = [m for m in open_clip.list_models() if m.lower() == name.lower()]
    if len(same_but_case) == 1:  # "vit-b-32" means ViT-B-32
        return same_but_case[0]
    if Path(name).suffix in CHECKPOINT_SUFFIXES or Path(name).expanduser().exists():
        raise ValueError(
            f"{name!r} looks like a file: give the architecture as the name and the file as pretrained, "
            f"e.g. load_clip('ViT-B-32', pretrained={name!r})"
        )
    close = difflib.get_close_matches(
        name.replace("/", "-"), open_clip.list_models(), n=3, cutoff=0.6
    )
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}: give 'tiny', one of {', '.join(MODELS)}, or another open_clip "
        f"architecture (open_clip.list_models()).{hint}"
    )


def _is_local_file(pretrained: str) -> bool:
    return (
        Path(pretrained).suffix in CHECKPOINT_SUFFIXES or os.sep in pretrained or "/" in pretrained
    )


def _spec_for(arch: str, tag: str) -> ModelSpec:
    spec = MODELS.get(arch)
    if spec is not None and spec.pretrained == tag:
        return spec
    open_clip = _open_clip()
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(
            f"unknown pretrained tag {tag!r} for {arch}: choose one of {', '.join(tags) or '(none)'}, "
            "or give a local checkpoint file"
        )
    hf_hub = cfg.get("hf_hub", "")
    if not hf_hub:
        raise ValueError(
            f"{arch}/{tag} is only published as a URL download, which the course does not load "
            "(it may be a pickled TorchScript file): choose a tag hosted on the Hugging Face hub"
        )
    # open_clip's convention: "org/repo/" means the default file names, "org/repo/file.bin" one file.
    repo, filename = os.path.split(hf_hub)
    if filename:
        return ModelSpec(arch=arch, pretrained=tag, hub_repo=repo, filenames=(filename,))
    return ModelSpec(arch=arch, pretrained=tag, hub_repo=repo.rstrip("/"))


def _hub_download(repo_id: str, filename: str, cache: Path) -> str:
    """The one place that touches the network (tests replace it with a local copy)."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename=filename, cache_dir=str(cache))


def _find_in_cache(spec: ModelSpec) -> tuple[Path, str] | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in spec.filenames:
        hit = try_to_load_from_cache(spec.hub_repo, filename, cache_dir=str(hub_cache_dir()))
        if isinstance(hit, str) and os.path.exists(hit):
            return Path(hit), filename
    return None


def cached_checkpoint(spec: ModelSpec) -> Path | None:
    """Path of the spec's checkpoint if it is already in the cache, else None (never uses the network).

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> cached_checkpoint(MODELS['ViT-B-32'])  # None until the first download  # doctest: +SKIP
    """
    hit = _find_in_cache(spec)
    return hit[0] if hit else None


def download_checkpoint(spec: ModelSpec) -> tuple[Path, str]:
    """Download (or find in the cache) the spec's checkpoint; return ``(path, filename)``.

    Introduced in lesson 02_zero_shot_classification.

    Safetensors is tried first, then the pickled ``.bin`` (read later with ``weights_only=True``). A
    file already in the cache is used without any network call.

    Example:
        >>> path, filename = download_checkpoint(MODELS['ViT-B-32'])  # doctest: +SKIP
    """
    hit = _find_in_cache(spec)
    if hit is not None:
        return hit
    errors = []
    for filename in spec.filenames:
        try:
            return Path(_hub_download(spec.hub_repo, filename, hub_cache_dir())), filename
        except Exception as err:  # noqa: BLE001 - the hub client raises many kinds; we report them all
            errors.append(f"{filename}: {type(err).__name__}: {err}")
    raise ConnectionError(
        f"could not download {spec.arch}/{spec.pretrained} from {spec.hub_repo} ({'; '.join(errors)}): "
        "check the internet connection, or use the tiny model with lessonlib.setup(mode='offline')"
    )


def require_text_deps(arch: str) -> None:
    """Raise a clear ImportError if ``arch`` has a Hugging Face text tower and transformers is missing.

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> require_text_deps('ViT-B-32')  # a plain CLIP text tower: nothing needed
    """
    model_cfg = _open_clip().get_model_config(arch) or {}
    if "hf_model_name" not in model_cfg.get("text_cfg", {}):
        return
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"{arch} has a Hugging Face text tower ({model_cfg['text_cfg']['hf_model_name']}) and "
            f"needs the transformers package: {TRANSFORMERS_HINT}"
        ) from err


def _build_architecture(arch: str, tag_cfg: dict | None, device: str):
    """The open_clip architecture with random weights (no download), plus its eval preprocess."""
    open_clip = _open_clip()
    require_text_deps(arch)
    tag_cfg = tag_cfg or {}
    preprocess_cfg = {
        k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg
    }
    # No base-weight download for Hugging Face text towers: every weight comes from our checkpoint.
    # (open_clip >= 3 calls the switch pretrained_text, older releases pretrained_hf.)
    params = inspect.signature(open_clip.create_model).parameters
    no_text_weights = {"pretrained_text" if "pretrained_text" in params else "pretrained_hf": False}
    with _quiet_open_clip():
        model = open_clip.create_model(
            arch,
            pretrained=None,
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            force_preprocess_cfg=preprocess_cfg,
            device="cpu",
            cache_dir=str(hub_cache_dir()),
            **no_text_weights,
        )
    from open_clip.transform import PreprocessCfg, image_transform_v2

    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    return model, preprocess


def _tokenizer_for(arch: str):
    open_clip = _open_clip()
    model_cfg = open_clip.get_model_config(arch) or {}
    kwargs = {}
    # Hugging Face tokenizers (multilingual CLIP) download their files: keep them in the course cache.
    if model_cfg.get("text_cfg", {}).get("hf_tokenizer_name"):
        kwargs["cache_dir"] = str(hub_cache_dir())
    return open_clip.get_tokenizer(arch, **kwargs)


def _load_tiny(device: str):
    from lessonlib.models import load_tiny_clip

    return load_tiny_clip(device=device)


def _pick_device(device: str | None) -> str:
    if device is not None:
        return device
    from lessonlib.environment import current, pick_device

    cfg = current()
    return cfg.device if cfg is not None else pick_device()


# ------------------------------------------------------------------------------------------ public API


def load_clip(
    name: str = DEFAULT_MODEL,
    pretrained: str | os.PathLike | None = None,
    device: str | None = None,
    *,
    sha256: str | None = None,
    strict: bool = False,
    verbose: bool = True,
    mode: str | None = None,
):
    """Return ``(model, preprocess, tokenizer)`` for a hub tag, a local checkpoint file or the tiny model.

    Introduced in lesson 02_zero_shot_classification.

    * ``load_clip("tiny")``: the course's tiny CLIP (Shapes World), no network.
    * ``load_clip("ViT-B-32")``: ViT-B-32 / laion2b_s34b_b79k from the hub, cached in
      ``cache_dir()/"hub"``. In offline mode (or if the download fails) this prints one line and returns
      the tiny model instead; with ``strict=True`` it raises instead.
    * ``load_clip("xlm-roberta-base-ViT-B-32")``: the multilingual CLIP (needs ``transformers``).
    * ``load_clip("ViT-B-32", pretrained="my_clip.safetensors", sha256=...)``: a local file, read with
      safetensors or ``torch.load(weights_only=True)``, checked against ``sha256`` if given.

    The model is in eval mode on ``device`` (default: the device ``lessonlib.setup()`` chose). ``mode``
    (``cfg.mode`` from ``setup()``) says whether the hub may be used; without it, the mode ``setup()``
    chose is read back (``lessonlib.get_mode()``).

    Example:
        >>> model, preprocess, tokenizer = load_clip("tiny")  # doctest: +SKIP
        >>> model, preprocess, tokenizer = load_clip("ViT-B-32", mode=cfg.mode)  # doctest: +SKIP
    """
    if mode is not None and validate_mode(mode) == "auto":
        raise ValueError("mode 'auto' is for setup(); give load_clip the mode it chose (cfg.mode)")
    device = _pick_device(device)
    if isinstance(name, str) and name.strip().lower() in TINY_NAMES:
        if pretrained is not None:
            raise ValueError(
                f"the tiny model takes no pretrained argument (got {pretrained!r}): it always loads "
                "lessonlib/weights/tiny_clip.safetensors"
            )
        return _load_tiny(device)
    arch = _check_arch(name)
    require_text_deps(arch)  # before any download: a missing package should not cost 1.5 GB first
    open_clip = _open_clip()

    if pretrained is None:
        if arch not in MODELS:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise ValueError(
                f"{arch} has no default weights in the course: pass pretrained= one of "
                f"{', '.join(tags) or '(no tags)'} or a local checkpoint file"
            )
        pretrained = MODELS[arch].pretrained

    tag_cfg: dict | None
    if isinstance(pretrained, os.PathLike) or _is_local_file(str(pretrained)):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint file '{path}' does not exist: check the path, or give a pretrained tag "
                f"such as {', '.join(open_clip.list_pretrained_tags_by_model(arch)[:3]) or 'none'}"
            )
        source = f"checkpoint '{path}'"
        tag_cfg = None
        expected = sha256
    else:
        tag = str(pretrained)
        spec = _spec_for(arch, tag)
        tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
        why = None
        if (get_mode() if mode is None else validate_mode(mode)) == "offline":
            why = "offline mode"
        if why is None:
            try:
                path, filename = download_checkpoint(spec)
            except ConnectionError as err:
                if strict:
                    raise
                why = f"download failed: {str(err).split(' (')[0]}"
        if why is not None:
            if strict:
                raise RuntimeError(
                    f"{arch}/{tag} needs the model hub, but lessonlib is in {why}: run "
                    "lessonlib.setup(mode='pretrained') with internet, or use load_clip('tiny')"
                )
            if verbose:
                print(
                    f"lessonlib: {why}, so {arch}/{tag} is replaced by the tiny Shapes World CLIP"
                )
            return _load_tiny(device)
        source = f"checkpoint '{path}' ({arch}/{tag})"
        expected = sha256 or spec.sha256.get(filename)

    if expected:
        verify_sha256(path, expected)
    state_dict = read_state_dict(path)
    model, preprocess = _build_architecture(arch, tag_cfg, device)
    load_into(model, state_dict, source)
    model = model.to(device).eval()
    return model, preprocess, _tokenizer_for(arch)


def _count_params(arch: str) -> int | None:
    """Parameter count of an open_clip architecture, built on the meta device (no memory, no download)."""
    import torch

    open_clip = _open_clip()
    cfg = open_clip.get_model_config(arch) or {}
    if "hf_model_name" in cfg.get("text_cfg", {}):
        return None  # building an HF text tower needs its config from the hub
    with _quiet_open_clip(), torch.device("meta"):
        model = open_clip.create_model(arch, device="meta")
    return sum(p.numel() for p in model.parameters())


def list_models() -> list[dict]:
    """The models ``load_clip`` knows, one dict per row, without touching the network.

    Introduced in lesson 02_zero_shot_classification.

    Keys: ``name``, ``pretrained``, ``params`` (parameter count), ``size_mb`` (file size on disk when
    cached or shipped, else the expected download size), ``cached`` (True when no download is needed),
    ``languages`` and ``note``.

    Example:
        >>> [row["name"] for row in list_models()][:2]  # doctest: +SKIP
        ['tiny', 'ViT-B-32']
    """
    rows = []
    tiny_file = WEIGHTS_DIR / "tiny_clip.safetensors"
    tiny_params = None
    if tiny_file.exists():
        import json
        import math

        from safetensors import safe_open

        info_file = tiny_file.with_suffix(".json")
        info = json.loads(info_file.read_text()) if info_file.exists() else {}
        if isinstance(info.get("parameters"), int):
            tiny_params = info["parameters"]
        else:  # count from the file; batch-norm statistics are buffers, not parameters
            with safe_open(str(tiny_file), framework="pt") as fh:
                tiny_params = sum(
                    math.prod(fh.get_slice(k).get_shape())
                    for k in fh.keys()
                    if "running_" not in k and "num_batches_tracked" not in k
                )
    rows.append(
        dict(
            name="tiny",
            pretrained="shipped (Shapes World)",
            params=tiny_params,
            size_mb=round(tiny_file.stat().st_size / 1e6, 2) if tiny_file.exists() else None,
            cached=tiny_file.exists(),
            languages="Shapes World words",
            note="trained by the course; offline mode",
        )
    )
    for name, spec in MODELS.items():
        hit = cached_checkpoint(spec)
        params = spec.params if spec.params is not None else _count_params(spec.arch)
        rows.append(
            dict(
                name=name,
                pretrained=spec.pretrained,
                params=params,
                size_mb=round(hit.stat().st_size / 1e6, 1) if hit else spec.download_mb,
                cached=hit is not None,
                languages=spec.languages,
                note=spec.note,
            )
        )
    return rows


def format_models(rows: list[dict] | None = None) -> str:
    """``list_models()`` as a small text table (for notebooks).

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> print(format_models())  # doctest: +SKIP
    """
    rows = list_models() if rows is None else rows
    header = f"{'name':28} {'pretrained':24} {'params':>9} {'size MB':>8}  cached"
    lines = [header, "-" * len(header)]
    for r in rows:
        params = f"{r['params'] / 1e6:.2f} M" if r["params"] else "?"
        size = f"{r['size_mb']:.1f}" if r["size_mb"] is not None else "?"
        lines.append(
            f"{r['name']:28} {r['pretrained']:24} {params:>9} {size:>8}  {'yes' if r['cached'] else 'no'}"
        )
    return "\n".join(lines)
