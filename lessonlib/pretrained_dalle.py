"""Open DALL-E 1 and DALL-E 2 style models for pretrained mode: min-dalle and Kandinsky 2.2.

Introduced in lesson 05_dalle. ``load_dalle("min-dalle")``: DALL-E Mega in PyTorch (the DALL-E 1
recipe: a transformer writes 256 VQGAN codes one by one). ``load_dalle("kandinsky-2.2")``: Kandinsky 2.2
through diffusers (the unCLIP / DALL-E 2 recipe: a prior maps the caption's CLIP text embedding to a
CLIP image embedding, a latent-diffusion decoder draws from it). Downloads land in the course cache
and are pinned by sha256 (a hash the course knows, else the first download's, checked on every later
use); weights are read as tensors only (min-dalle's ``.pt`` files with ``weights_only=True``, not by
min-dalle's own loader; Kandinsky's safetensors into classes named here, never in a downloaded
config). Offline mode never touches the network; ``describe_pretrained`` says how big and slow they are.

Example:
    >>> print(describe_pretrained("min-dalle"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from lessonlib.checkpoints import CheckpointError, file_sha256, read_state_dict, verify_sha256
from lessonlib.environment import cache_dir, get_mode, validate_mode
from lessonlib.registry import hub_cache_dir

# What each recipe is, how big and how slow (numbers say where they come from).
PRETRAINED_DALLE: dict[str, dict] = {
    "min-dalle": dict(
        what="DALL-E Mega (DALL-E Mini, large) in PyTorch: BART text encoder -> transformer that "
        "writes 256 VQGAN codes one by one -> VQGAN decoder (256x256 pictures). The DALL-E 1 recipe.",
        params="about 2.6 B: encoder 1.11 B + decoder 1.48 B, and a 47 M VQGAN decoder (counted from "
        "min_dalle 0.4.11's classes)",
        download="about 5.4 GB: 5.2 GB of 16-bit transformer weights (min-dalle's converter stores "
        "float16) + 0.19 GB VQGAN; estimated from the parameter counts, not read from the hub",
        needs_gpu=True,
        gpu_speed="about 2-6 s per image when 9 are drawn together: a 3x3 grid takes 55 s on a T4, "
        "33 s on a P100, 15 s on an A10G (min-dalle's README)",
        cpu_speed="no published figure. Each of the 256 codes reads all ~6 GB of float32 decoder "
        "weights, so expect minutes per batch on a laptop CPU, and ~10 GB of RAM",
    ),
    "kandinsky-2.2": dict(
        what="Kandinsky 2.2 (diffusers): CLIP text embedding -> diffusion prior -> CLIP image "
        "embedding -> latent-diffusion U-Net -> MoVQ decoder (512-768 px). The unCLIP (DALL-E 2) recipe.",
        params="about 4.8 B: prior 1.0 B, CLIP image encoder 1.8 B, U-Net 1.22 B, MoVQ 67 M (the "
        "Kandinsky-2 README), CLIP text encoder about 0.7 B (ViT-bigG-14's text tower, counted)",
        download="about 10 GB in 16-bit or 19 GB in 32-bit files (estimated from the parameter "
        "counts; the hub's file list is the authority)",
        needs_gpu=True,
        gpu_speed="not published for 2.2; Replicate's page for Kandinsky 2.1 (same 1.22 B U-Net) "
        "reports predictions in about 6-35 s on an A100 40GB, depending on the settings",
        cpu_speed="no published figure: 25 prior steps and 50-100 U-Net steps (each twice, for "
        "guidance) through 1.2 B parameters, so expect many minutes per image and ~19 GB of RAM",
    ),
}

# Hashes the course has verified on downloaded files ("min-dalle/<file>" or "<repo>/<file>" ->
# sha256). Empty: no hub access when this was written, so files are pinned by their first download.
PINNED_SHA256: dict[str, str] = {}

MIN_DALLE_URL = "https://huggingface.co/kuprel/min-dalle/resolve/{revision}/{name}"
# min-dalle downloads from the branch "main"; its commit hash was not known when this was written.
# Pin a commit here to freeze the files (the recorded sha256 freezes them after the first download).
MIN_DALLE_REVISION = "main"
SIZE_NAMES = (
    "layer_count attention_head_count embed_count glu_embed_count text_vocab_count image_vocab_count"
).split()
MIN_DALLE_SIZES = {  # from min_dalle.MinDalle.__init__ (0.4.11); a test checks them against it
    "mega": dict(zip(SIZE_NAMES, (24, 32, 2048, 4096, 50272, 16415))),
    "mini": dict(zip(SIZE_NAMES, (12, 16, 1024, 2730, 50264, 16384))),
}

KANDINSKY_REPOS = {
    "prior": "kandinsky-community/kandinsky-2-2-prior",
    "decoder": "kandinsky-community/kandinsky-2-2-decoder",
}
# The hub revision of each repo. The real commit hashes could not be looked up when this was written
# (no hub access), so both are "main": replace them with commit hashes to pin the exact files.
KANDINSKY_REVISIONS = {"prior": "main", "decoder": "main"}
HUB_FILES = ["*.json", "*.txt", "*.safetensors"]  # configs, tokenizer, weights: never pickles
HUB_SKIP = ["*.fp16.safetensors", "*non_ema*"]
KANDINSKY_PARTS = {  # the files each repo must hold (glob patterns)
    "prior": "prior/*.safetensors image_encoder/*.safetensors text_encoder/*.safetensors "
    "tokenizer/tokenizer_config.json scheduler/scheduler_config.json image_processor/*.json",
    "decoder": "unet/*.safetensors movq/*.safetensors scheduler/scheduler_config.json",
}
OFFLINE = (
    "{} is not in the cache ('{}') and lessonlib is in offline mode: run lessonlib.setup(mode="
    "'pretrained') with internet and a GPU ({} to download), or run lesson 05's tiny models "
    "(lessonlib.prior: DALL-E 1, lessonlib.unclip: DALL-E 2)"
)


def describe_pretrained(name: str) -> str:
    """The paragraph lesson 05 prints instead of running ``name`` on a machine without a GPU.

    Introduced in lesson 05_dalle.

    Example:
        >>> "GB" in describe_pretrained("kandinsky-2.2")
        True
    """
    r = PRETRAINED_DALLE.get(name)
    if r is None:
        raise ValueError(f"unknown recipe {name!r}: choose one of {', '.join(PRETRAINED_DALLE)}")
    gpu = "It needs a GPU to be practical. " if r["needs_gpu"] else ""
    return (
        f"{name}: {r['what']} Parameters: {r['params']}. Download: {r['download']}. {gpu}"
        f"On a GPU: {r['gpu_speed']}. On a CPU: {r['cpu_speed']}."
    )


NUM = (int, float)


def _check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt {prompt!r} is empty: give a caption such as 'a red bicycle'")
    return prompt


def _check_int(name: str, value, low, high, hint: str = "", kinds=(int,)):
    if not isinstance(value, kinds) or isinstance(value, bool) or not low <= value <= high:
        what = "an integer" if kinds == (int,) else "a number"
        raise ValueError(f"{name} must be {what} from {low} to {high}{hint}, got {value!r}")
    return value


def _mode(mode: str | None) -> str:
    if mode is None:
        return get_mode()
    if validate_mode(mode) == "auto":
        raise ValueError("mode 'auto' is for setup(): give the mode it chose (cfg.mode)")
    return validate_mode(mode)


def _device_and_dtype(device: str | None, dtype):
    """The device ``setup()`` chose (unless given) and float16 on a GPU, float32 elsewhere."""
    import torch

    if device is None:
        from lessonlib.environment import current, pick_device

        device = current().device if current() is not None else pick_device()
    return device, dtype or (torch.float16 if device.startswith("cuda") else torch.float32)


def _download_url(url: str, dest: Path) -> None:
    """The one place min-dalle's files touch the network (tests replace it)."""
    import torch

    torch.hub.download_url_to_file(url, str(dest), progress=True)


def _pin(path: Path, key: str) -> None:
    """Check ``path`` against its pinned hash, else its recorded one; record it on first use."""
    record = path.with_name(path.name + ".sha256")
    known = PINNED_SHA256.get(key) or (record.read_text().split()[0] if record.is_file() else "")
    if known:
        verify_sha256(path, known)
    else:
        record.write_text(f"{file_sha256(path)}  {path.name}\n")


def download_min_dalle(
    is_mega: bool = True, mode: str | None = None, cache: str | Path | None = None
) -> Path:
    """Download (once) min-dalle's files (min-dalle's ``models_root`` layout), check their sha256.

    Introduced in lesson 05_dalle. Returns the folder; offline, a missing file raises at once.

    Example:
        >>> root = download_min_dalle(is_mega=True, mode=cfg.mode)  # doctest: +SKIP
    """
    mode = _mode(mode)
    root = Path(cache) if cache is not None else cache_dir() / "min-dalle"
    model, suffix = ("dalle_bart_mega", "") if is_mega else ("dalle_bart_mini", "_mini")
    files = {f"{model}/{f}": f.replace(".", suffix + ".") for f in ("encoder.pt", "decoder.pt")}
    files.update({f"{model}/vocab.json": f"vocab{suffix}.json", "vqgan/detoker.pt": "detoker.pt"})
    files[f"{model}/merges.txt"] = f"merges{suffix}.txt"
    missing = [rel for rel in files if not (root / rel).is_file()]
    if missing and mode == "offline":
        size = "about 5.4 GB" if is_mega else "~1 GB"
        raise FileNotFoundError(OFFLINE.format(f"min-dalle ({model})", root, size))
    for rel, name in files.items():
        dest = root / rel
        if rel in missing:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            _download_url(MIN_DALLE_URL.format(revision=MIN_DALLE_REVISION, name=name), tmp)
            tmp.replace(dest)
        _pin(dest, f"min-dalle/{rel}")
    return root


def _import_min_dalle():
    """``min_dalle``, undoing what its import does to the process (autograd off, threads = cores)."""
    import torch

    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    try:
        import min_dalle.min_dalle as md
    finally:
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)
    return md


def _load_checked(module, path: Path, strict: bool) -> None:
    """Copy a ``weights_only`` state dict into ``module``. min-dalle loads its transformers with
    ``strict=False``: LayerNorms the Flax model had no scale/bias for keep their defaults (1 and 0,
    the same maths). Any other missing key, and every wrong shape, is refused."""
    from torch import nn

    state, own = read_state_dict(path), module.state_dict()
    norms = {name for name, m in module.named_modules() if isinstance(m, nn.LayerNorm)}
    default = {k for k in own if k.rpartition(".")[0] in norms}
    missing = [k for k in own if k not in state and (strict or k not in default)]
    unexpected = [k for k in state if k not in own] if strict else []
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"'{path}' does not fit min-dalle's {type(module).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}. Delete the file to download "
            "it again, or check is_mega"
        )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items() if k in own}, False)


class MinDalleModel:
    """min-dalle's ``MinDalle`` with its weights read safely; ``generate`` returns PIL images.

    Introduced in lesson 05_dalle. ``model`` is min-dalle's own object (its ``generate_images`` does
    the sampling), built without its ``__init__``, which would download and unpickle by itself.

    Example:
        >>> dalle.generate("an avocado armchair", n=4, seed=1)[0].size  # doctest: +SKIP
        (256, 256)
    """

    def __init__(self, model, device: str) -> None:
        self.model, self.device = model, device

    def generate(
        self, prompt: str, n=1, seed=0, temperature=1.0, top_k=256, supercondition_factor=16.0
    ) -> list:
        """``n`` 256x256 PIL images of ``prompt`` (min-dalle draws a square grid: n=2 costs like 4).

        ``temperature`` and ``top_k`` shape the sampling of each code; ``supercondition_factor`` is
        min-dalle's classifier-free guidance (higher: closer to the text, less varied).
        """
        import torch
        from PIL import Image

        _check_prompt(prompt)
        _check_int("n", n, 1, 16, " (min-dalle draws at most a 4x4 grid at once)")
        _check_int("seed", seed, 0, 2**63 - 1)
        t = float(_check_int("temperature", temperature, 1e-3, 100.0, kinds=NUM))
        _check_int("top_k", top_k, 1, 2**14, " (codes to sample each position from)")
        s = float(_check_int("supercondition_factor", supercondition_factor, 0, 100, "", NUM))
        kw = dict(seed=-1, grid_size=math.isqrt(n - 1) + 1, is_seamless=False, is_verbose=False)
        cuda = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda), torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*autocast.*")  # min-dalle's cuda.amp calls
            torch.manual_seed(seed)  # min-dalle's own seed is -1: it does not reseed
            images = self.model.generate_images(
                text=prompt, temperature=t, top_k=top_k, supercondition_factor=s, **kw
            )
        return [Image.fromarray(p) for p in images[:n].to(torch.uint8).cpu().numpy()]


def load_min_dalle(
    mode: str | None = None, device: str | None = None, is_mega: bool = True, dtype=None, cache=None
) -> MinDalleModel:
    """DALL-E Mega (``is_mega=False``: DALL-E Mini) from min-dalle, downloaded once and checked.

    Introduced in lesson 05_dalle. ``dtype`` defaults to float16 on a GPU, float32 on a CPU;
    ``cache`` is the folder of min-dalle's files (default ``cache_dir()/"min-dalle"``).

    Example:
        >>> dalle = load_min_dalle(mode=cfg.mode)  # doctest: +SKIP
    """
    import torch

    root = download_min_dalle(is_mega, mode=mode, cache=cache)
    device, dtype = _device_and_dtype(device, dtype)
    md = _import_min_dalle()
    from min_dalle.models import DalleBartDecoder, DalleBartEncoder, VQGanDetokenizer
    from min_dalle.text_tokenizer import TextTokenizer

    sizes = MIN_DALLE_SIZES["mega" if is_mega else "mini"]
    folder = root / ("dalle_bart_mega" if is_mega else "dalle_bart_mini")
    model = md.MinDalle.__new__(md.MinDalle)  # the attributes MinDalle.__init__ sets, no downloads
    model.__dict__.update(sizes, device=device, dtype=dtype, is_mega=is_mega, is_reusable=True)
    model.__dict__.update(is_verbose=False, text_token_count=64)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf8"))
    merges = (folder / "merges.txt").read_text(encoding="utf8").split("\n")[1:-1]
    model.tokenizer = TextTokenizer(vocab, merges)
    common = {k: sizes[k] for k in SIZE_NAMES[:4]} | {"device": device}
    with torch.device(device):
        model.encoder = DalleBartEncoder(
            text_vocab_count=sizes["text_vocab_count"], text_token_count=64, **common
        )
        model.decoder = DalleBartDecoder(image_vocab_count=sizes["image_vocab_count"], **common)
        model.detokenizer = VQGanDetokenizer()  # kept in float32, as min-dalle does
    for module, path in ((model.encoder, "encoder.pt"), (model.decoder, "decoder.pt")):
        _load_checked(module.to(dtype), folder / path, strict=False)
    _load_checked(model.detokenizer, root / "vqgan" / "detoker.pt", strict=True)
    for module in (model.encoder, model.decoder, model.detokenizer):
        module.eval().requires_grad_(False)
    return MinDalleModel(model, device)


def _cached_snapshot(repo_id: str, revision: str) -> Path | None:
    """The repo's snapshot folder in the course's hub cache, or None (never uses the network)."""
    from huggingface_hub import snapshot_download

    kw = dict(revision=revision, cache_dir=str(hub_cache_dir()), local_files_only=True)
    try:
        return Path(snapshot_download(repo_id, **kw))
    except (OSError, ValueError):  # LocalEntryNotFoundError is a FileNotFoundError
        return None


def _download_snapshot(repo_id: str, revision: str) -> Path:
    """The one place Kandinsky touches the network (tests replace it with a local copy)."""
    from huggingface_hub import snapshot_download

    kw = dict(allow_patterns=HUB_FILES, ignore_patterns=HUB_SKIP, cache_dir=str(hub_cache_dir()))
    return Path(snapshot_download(repo_id, revision=revision, **kw))


def _incomplete(folder: Path | None, part: str) -> list[str]:
    wanted = KANDINSKY_PARTS[part].split()
    return wanted if folder is None else [w for w in wanted if not any(folder.glob(w))]


def _check_snapshot(folder: Path, repo_id: str) -> dict[str, str]:
    """sha256 of every file of a snapshot, checked against the pinned ones and the record written at
    first use (``cache_dir()/pretrained_dalle/<repo>/<commit>.json``); a change names the file."""
    folder = Path(folder)
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    hashes = {f.relative_to(folder).as_posix(): file_sha256(f) for f in files}
    record = cache_dir() / "pretrained_dalle" / repo_id.replace("/", "--") / f"{folder.name}.json"
    prefix = repo_id + "/"
    pinned = {k[len(prefix) :]: v for k, v in PINNED_SHA256.items() if k.startswith(prefix)}
    known = (json.loads(record.read_text()) if record.is_file() else hashes) | pinned
    changed = sorted(k for k in set(known) | set(hashes) if known.get(k) != hashes.get(k))
    if changed:
        raise CheckpointError(
            f"{repo_id}: {', '.join(changed[:5])} in '{folder}' differ from the sha256 pinned or "
            f"recorded at the first download ('{record}'): the files are damaged or were swapped; "
            "delete the snapshot folder (and the record) so that they are downloaded again"
        )
    if not record.is_file():
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(hashes, indent=1) + "\n")
    return hashes


def download_kandinsky(mode: str | None = None) -> dict[str, Path]:
    """Download (once) Kandinsky 2.2's prior and decoder repos into the hub cache; check their sha256.

    Introduced in lesson 05_dalle. json, txt and safetensors only; ``{"prior": path, "decoder": ...}``.

    Example:
        >>> folders = download_kandinsky(mode=cfg.mode)  # doctest: +SKIP
    """
    mode = _mode(mode)
    folders = {}
    for part, repo_id in KANDINSKY_REPOS.items():
        folder = _cached_snapshot(repo_id, KANDINSKY_REVISIONS[part])
        if _incomplete(folder, part):
            if mode == "offline":
                what, where = f"Kandinsky 2.2 ({repo_id})", hub_cache_dir()
                raise FileNotFoundError(OFFLINE.format(what, where, "10-19 GB"))
            folder = _download_snapshot(repo_id, KANDINSKY_REVISIONS[part])
            if missing := _incomplete(folder, part):
                raise CheckpointError(
                    f"{repo_id} at {KANDINSKY_REVISIONS[part]!r} lacks {missing}: the course loads "
                    "safetensors weights only, with their configs"
                )
        _check_snapshot(folder, repo_id)
        folders[part] = folder
    return folders


def _slerp(a, b, w: float):
    """Slerp of the directions, lerp of the lengths (Kandinsky's embeddings are not unit vectors)."""
    from lessonlib.unclip import slerp  # the tiny unCLIP's slerp, for the directions

    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    return slerp(a, b, w) * ((1 - w) * na + w * nb)


class KandinskyModel:
    """Kandinsky 2.2: prior then decoder, plus unCLIP's variations and interpolations.

    Introduced in lesson 05_dalle. ``prior``, ``decoder``: the diffusers pipelines; ``prior_steps``,
    ``prior_guidance``: the prior's sampling (25, 4.0). Sizes: multiples of ``size_step`` (64 here).

    Example:
        >>> kandinsky.generate("a red cat, 4k photo", n=2)[0].size  # doctest: +SKIP
        (512, 512)
    """

    def __init__(self, prior, decoder, device: str) -> None:
        self.prior, self.decoder, self.device = prior, decoder, device
        self.prior_steps, self.prior_guidance = 25, 4.0
        self.size_step = decoder.movq_scale_factor**2

    def _check(self, guidance_scale, steps, height, width) -> None:
        _check_int("guidance_scale", guidance_scale, 0, 50, " (4 is usual; <= 1: off)", NUM)
        _check_int("steps", steps, 1, 1000, " (decoder denoising steps; 50 is usual)")
        s = self.size_step
        for name, value in (("height", height), ("width", width)):
            if _check_int(name, value, s, 2048, f" (in pixels, a multiple of {s})") % s:
                raise ValueError(f"{name} must be a multiple of {s} pixels, got {value!r}")

    def _generator(self, seed: int):
        import torch

        return torch.Generator("cpu").manual_seed(_check_int("seed", seed, 0, 2**63 - 1))

    def _decode(self, embeds, negative, seed, guidance_scale, steps, height, width) -> list:
        kw = dict(
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=self._generator(seed),
        )
        return list(
            self.decoder(embeds, negative.expand(len(embeds), -1), height, width, **kw).images
        )

    def _embed(self, x, n: int, seed: int):
        """(n, D) image embeddings of a caption (prior samples) or a picture (its CLIP embedding),
        and the "no condition" embedding, by diffusers' ``KandinskyV22PriorPipeline.interpolate``."""
        if isinstance(x, str):
            _check_prompt(x)
        else:  # a PIL image, an array or a pathlib.Path, through the course's one image loader
            from lessonlib.images import load_image

            x = load_image(x)
        steps, guidance = self.prior_steps, self.prior_guidance
        out = self.prior.interpolate(
            [x], [1.0], n, steps, generator=self._generator(seed), guidance_scale=guidance
        )
        return out.image_embeds, out.negative_image_embeds[:1]

    def image_embeds(self, prompt_or_image, n: int = 1, seed: int = 0):
        """(n, D) CLIP image embeddings: a caption (str) through the prior (n samples), or a picture's
        own embedding (a PIL image, an array or a ``pathlib.Path``; repeated n times)."""
        return self._embed(prompt_or_image, _check_int("n", n, 1, 64), seed)[0]

    def generate(
        self, prompt, n: int = 1, seed: int = 0, guidance_scale=4.0, steps=50, height=512, width=512
    ) -> list:
        """``n`` PIL images of ``prompt``: prior (caption -> image embedding), then decoder."""
        _check_prompt(prompt)
        _check_int("n", n, 1, 16, " (pictures at once; call again for more)")
        self._check(guidance_scale, steps, height, width)
        embeds, negative = self._embed(prompt, n, seed)
        return self._decode(embeds, negative, seed, guidance_scale, steps, height, width)

    def variations(
        self, image, n: int = 4, seed: int = 0, guidance_scale=4.0, steps=50, height=512, width=512
    ) -> list:
        """``n`` new pictures decoded from one picture's CLIP image embedding (DALL-E 2's variations)."""
        _check_int("n", n, 1, 16, " (pictures at once)")
        self._check(guidance_scale, steps, height, width)
        embed, negative = self._embed(image, 1, seed)
        return self._decode(
            embed.expand(n, -1), negative, seed, guidance_scale, steps, height, width
        )

    def interpolate(
        self, a, b, k: int = 5, seed: int = 0, guidance_scale=4.0, steps=50, height=512, width=512
    ) -> list:
        """``k`` pictures from points on the arc between the embeddings of ``a`` and ``b`` (captions or
        pictures); every picture is drawn from the same noise, so only the embedding changes."""
        _check_int("k", k, 2, 32, " (pictures along the path)")
        self._check(guidance_scale, steps, height, width)
        (ea, negative), (eb, _) = self._embed(a, 1, seed), self._embed(b, 1, seed)
        images = []
        for i in range(k):
            path = _slerp(ea, eb, i / (k - 1))
            images += self._decode(path, negative, seed, guidance_scale, steps, height, width)
        return images


def _build_kandinsky(folders: dict[str, Path], dtype):
    """The two pipelines from their parts, each class named here (not read from model_index.json)."""
    import diffusers as D
    import transformers as T

    p, d = folders["prior"], folders["decoder"]
    w = dict(use_safetensors=True, local_files_only=True)
    version = tuple(int(x) for x in T.__version__.split(".")[:2])
    tw = {**w, ("dtype" if version >= (4, 56) else "torch_dtype"): dtype}  # renamed in 4.56
    prior = D.KandinskyV22PriorPipeline(
        prior=D.PriorTransformer.from_pretrained(p / "prior", dtype=dtype, **w),
        image_encoder=T.CLIPVisionModelWithProjection.from_pretrained(p / "image_encoder", **tw),
        text_encoder=T.CLIPTextModelWithProjection.from_pretrained(p / "text_encoder", **tw),
        tokenizer=T.CLIPTokenizer.from_pretrained(p / "tokenizer", local_files_only=True),
        scheduler=D.UnCLIPScheduler.from_pretrained(p / "scheduler"),
        image_processor=T.CLIPImageProcessor.from_pretrained(p / "image_processor"),
    )
    decoder = D.KandinskyV22Pipeline(
        unet=D.UNet2DConditionModel.from_pretrained(d / "unet", dtype=dtype, **w),
        scheduler=D.DDPMScheduler.from_pretrained(d / "scheduler"),
        movq=D.VQModel.from_pretrained(d / "movq", dtype=dtype, **w),
    )
    return prior, decoder


def load_kandinsky(mode: str | None = None, device: str | None = None, dtype=None):
    """Kandinsky 2.2 (prior + decoder) from the hub cache, sha256-checked, as a ``KandinskyModel``.

    Introduced in lesson 05_dalle. ``dtype`` defaults to float16 on a GPU, float32 on a CPU.

    Example:
        >>> kandinsky = load_kandinsky(mode=cfg.mode)  # doctest: +SKIP
    """
    folders = download_kandinsky(mode=mode)
    device, dtype = _device_and_dtype(device, dtype)
    prior, decoder = _build_kandinsky(folders, dtype)
    prior.set_progress_bar_config(disable=True)
    return KandinskyModel(prior.to(device), decoder.to(device), device)


LOADERS = {"min-dalle": load_min_dalle, "kandinsky-2.2": load_kandinsky}


def load_dalle(recipe: str, mode: str | None = None, **kw):
    """Load a pretrained recipe of lesson 05: ``"min-dalle"`` (DALL-E 1 style) or ``"kandinsky-2.2"``.

    Introduced in lesson 05_dalle. ``mode`` (``cfg.mode``) says whether the network may be used;
    ``kw`` go to ``load_min_dalle`` / ``load_kandinsky`` (``device``, ``dtype``; ``is_mega``).

    Example:
        >>> kandinsky = load_dalle("kandinsky-2.2", mode=cfg.mode)  # doctest: +SKIP
    """
    if recipe not in LOADERS:
        raise ValueError(f"unknown recipe {recipe!r}: choose one of {', '.join(LOADERS)}")
    return LOADERS[recipe](mode=mode, **kw)
