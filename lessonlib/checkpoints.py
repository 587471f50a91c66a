"""One way to save and load weights: safetensors (or ``torch.load(weights_only=True)``), sha256, a ``.json``.

Introduced in lesson 01_clip_concepts (the tiny CLIP is the first model the course saves and loads).

Every model the course ships (tiny CLIPs, tiny VQGANs, the code prior, and the models of later lessons)
goes through the two calls here:

* ``save_weights(model, path, config, command=...)`` writes ``path`` (safetensors: tensors only, no
  code) and a ``.json`` beside it holding the config, the command that reproduces the file and any
  measurements;
* ``load_weights(path, build, what=...)`` reads that ``.json``, builds the architecture from its config
  with ``build(config)``, reads the tensors safely and checks that every key and shape fits before
  copying them in. Anything wrong raises ``CheckpointError`` (or ``FileNotFoundError``) naming the file
  and saying what would work.

Downloaded checkpoints (open_clip's, taming's) are read by ``read_state_dict``: safetensors, or
``torch.load(weights_only=True)``, which refuses to run pickled code; a short list of harmless globals
(``inert_globals``) may be replaced by placeholders that run nothing. ``verify_sha256`` pins a file.

Example:
    >>> import tempfile, torch
    >>> path = save_weights(torch.nn.Linear(2, 3), tempfile.mkdtemp() + "/lin.safetensors",
    ...                     config={"in": 2, "out": 3}, command="python make_lin.py")
    >>> model, info = load_weights(path, lambda c: torch.nn.Linear(c["in"], c["out"]), what="linear")
    >>> info["command"]
    'python make_lin.py'
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path

# The one folder that holds the weights shipped inside lessonlib.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class CheckpointError(ValueError):
    """A checkpoint file is damaged, has the wrong hash, or does not fit the architecture.

    Introduced in lesson 01_clip_concepts.

    Example:
        >>> raise CheckpointError("checkpoint 'x.safetensors' cannot be read")  # doctest: +SKIP
    """


# -------------------------------------------------------------------------------------------- hashes


def file_sha256(path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks.

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> file_sha256(__file__) == file_sha256(__file__)
        True
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(expected) -> str:
    """``expected`` as 64 lower-case hex digits, or a ``ValueError`` saying what a sha256 looks like.

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> check_sha256(" " + "AB" * 32)[:4]
        'abab'
    """
    text = expected.strip().lower() if isinstance(expected, str) else ""
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"sha256 {expected!r} is not 64 hexadecimal digits: give the full hash")
    return text


def verify_sha256(path, expected: str) -> None:
    """Raise ``CheckpointError`` unless the file's sha256 equals ``expected`` (a 64-hex-digit string).

    Introduced in lesson 02_zero_shot_classification.

    Example:
        >>> verify_sha256('model.safetensors', '3f5a...')  # doctest: +SKIP
    """
    expected = check_sha256(expected)
    got = file_sha256(path)
    if got != expected:
        raise CheckpointError(
            f"checkpoint '{path}' has sha256 {got}, expected {expected}: the file is damaged or a "
            "different one; delete it so that it is downloaded again"
        )


# ------------------------------------------------------------------------------------------- reading


def _inert_class(full_name: str) -> type:
    """A placeholder type named after a checkpoint global: accepts anything, runs nothing."""

    def _new(cls, *args, **kwargs):
        return object.__new__(cls)

    def _init(self, *args, **kwargs) -> None:
        self.args = args

    def _setstate(self, state) -> None:
        self.state = state

    return type(
        full_name.rpartition(".")[2],
        (),
        {
            "__new__": _new,
            "__init__": _init,
            "__setstate__": _setstate,
            "__module__": "lessonlib.checkpoints.inert",
            "__repr__": lambda self: f"<inert placeholder for {full_name}>",
        },
    )


def _torch_load(path: Path):
    """``torch.load(weights_only=True)``, memory-mapped where the file allows it (a large checkpoint's
    unused tensors are then never read into memory)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):  # e.g. a legacy (pre-zip) file cannot be mapped: read it whole
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def _torch_load_with_inert(path: Path, inert_globals: frozenset):
    import torch

    try:
        return _torch_load(path)
    except pickle.UnpicklingError:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception as err:  # not a torch zip file at all
            raise CheckpointError(f"'{path}' is not a readable PyTorch checkpoint: {err}") from err
        refused = sorted(set(names) - inert_globals)
        if refused:
            raise CheckpointError(
                f"checkpoint '{path}' refers to code that lessonlib will not import: {refused}. "
                "Only tensors, plain containers and these harmless names are accepted: "
                f"{sorted(inert_globals) or 'none'}. Re-save the weights with safetensors."
            ) from None
        with torch.serialization.safe_globals([(_inert_class(n), n) for n in names]):
            return _torch_load(path)


def read_state_dict(path, inert_globals: Iterable[str] = ()) -> dict:
    """Read a checkpoint file safely and return its state dict (tensors only, on the CPU).

    Introduced in lesson 02_zero_shot_classification.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses to run pickled code. Globals named in
    ``inert_globals`` (a Lightning callback's class, numpy scalars) are replaced by placeholders that run
    nothing; any other global is refused. A ``{"state_dict": ...}`` wrapper and a ``module.`` prefix
    (left by DistributedDataParallel) are removed.

    Example:
        >>> sd = read_state_dict("model.safetensors")  # doctest: +SKIP
    """
    import torch

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file '{path}' does not exist: check the path")
    if path.is_dir():
        raise IsADirectoryError(f"'{path}' is a folder: give the checkpoint file inside it")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            checkpoint = load_file(str(path), device="cpu")
        else:
            checkpoint = _torch_load_with_inert(path, frozenset(inert_globals))
    except CheckpointError:
        raise
    except Exception as err:  # safetensors, pickle and zip errors have no common base class
        raise CheckpointError(
            f"checkpoint '{path}' cannot be read ({type(err).__name__}: {err}); it is damaged or not "
            "a weights file: give a .safetensors file or a torch state dict saved with torch.save"
        ) from err
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise CheckpointError(
            f"checkpoint '{path}' holds a {type(checkpoint).__name__}, not a state dict of tensors"
        )
    not_tensors = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"'{path}': entries {not_tensors[:5]} are not tensors")
    if all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module.") :]: v for k, v in checkpoint.items()}
    return checkpoint


def _show_keys(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def load_into(model, state_dict: dict, source: str = "checkpoint", hint: str = "") -> None:
    """Copy ``state_dict`` into ``model`` after checking that every key and shape fits.

    Introduced in lesson 02_zero_shot_classification.

    Raises ``CheckpointError`` naming the missing keys, the unexpected keys and the wrong shapes, so a
    checkpoint for another architecture is caught before it gives silent nonsense. Tensors are cast to
    the dtype of the model's own (weights stored as fp16 load into a float32 model).

    Example:
        >>> load_into(model, read_state_dict('model.safetensors'), 'model.safetensors')  # doctest: +SKIP
    """
    state_dict = dict(state_dict)
    own = model.state_dict()
    # Hugging Face text towers stopped storing position_ids (transformers >= 4.31): drop it if unused.
    if "text.transformer.embeddings.position_ids" not in own:
        state_dict.pop("text.transformer.embeddings.position_ids", None)
    # open_clip stores logit_scale as a 0-d or a 1-element tensor depending on the version.
    if "logit_scale" in state_dict and "logit_scale" in own:
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(own["logit_scale"].shape)
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [
        f"{k} (file {tuple(v.shape)}, model {tuple(own[k].shape)})"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_show_keys(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_show_keys(unexpected)}")
        if wrong:
            parts.append(f"{len(wrong)} wrong shapes: {_show_keys(wrong, 3)}")
        raise CheckpointError(
            f"{source} does not fit the model architecture: {'; '.join(parts)}. "
            + (hint or "Check that the architecture name matches the file")
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)


# ------------------------------------------------------------------------- the course's own weights


def weights_info(path) -> dict:
    """The ``.json`` beside a weights file: its config, the command that made it, measurements.

    Introduced in lesson 01_clip_concepts.

    Example:
        >>> weights_info(WEIGHTS_DIR / "tiny_clip.safetensors")["command"].startswith("python -m")
        True
    """
    path = Path(path)
    config_path = path.with_suffix(".json")
    if not config_path.is_file():
        raise FileNotFoundError(
            f"config not found at '{config_path}': it sits beside the weights (same name, .json); "
            "save models with lessonlib.checkpoints.save_weights"
        )
    try:
        info = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"'{config_path}' is not valid JSON: {err}") from None
    if not isinstance(info, dict) or "config" not in info:
        raise CheckpointError(
            f"'{config_path}' has no 'config' entry: it was not written by "
            "lessonlib.checkpoints.save_weights"
        )
    return info


def save_weights(
    model,
    path,
    config: dict,
    command: str | None = None,
    half: bool = False,
    extra: dict | None = None,
) -> Path:
    """Save ``model``'s tensors as safetensors and ``{config, command, dtype, **extra}`` as ``.json``.

    Introduced in lesson 01_clip_concepts.

    ``half=True`` stores floating-point tensors as fp16 (half the size; ``load_weights`` casts them
    back). ``command`` is the shell command that reproduces the file; keep it, so that every shipped
    model says how it was made.

    Example:
        >>> import tempfile, torch
        >>> p = save_weights(torch.nn.Linear(2, 2), tempfile.mkdtemp() + "/m.safetensors", {"n": 2})
        >>> p.with_suffix(".json").exists()
        True
    """
    from safetensors.torch import save_file

    if not isinstance(config, dict):
        raise TypeError(
            f"config must be a dict (the model's settings), got {type(config).__name__}"
        )
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights path '{path}' must end in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor.contiguous()
    save_file(state, str(path), metadata={"format": "pt"})
    info = {"config": config, "dtype": "float16" if half else "float32"}
    if command is not None:
        info["command"] = command
    info.update(extra or {})
    path.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    return path


def load_weights(
    path, build: Callable[[dict], object], what: str = "model", reproduce: str = ""
) -> tuple:
    """Build a model from the ``.json`` beside ``path`` and load its weights: ``(model, info)``.

    Introduced in lesson 01_clip_concepts.

    ``build(config)`` makes the architecture from the saved config; the tensors are read with
    safetensors and checked key by key and shape by shape (``load_into``). The model comes back in eval
    mode, in the dtype ``build`` gave it. ``reproduce`` (a command) goes into the error for a missing file.

    Example:
        >>> from lessonlib.models import TinyCLIPConfig, build_tiny_clip
        >>> model, info = load_weights(WEIGHTS_DIR / "tiny_clip.safetensors",
        ...                            lambda c: build_tiny_clip(TinyCLIPConfig.from_dict(c)))
        >>> info["config"]["embed_dim"] > 0
        True
    """
    path = Path(path)
    if not path.is_file():
        how = f"run `{reproduce}`" if reproduce else "check the path"
        raise FileNotFoundError(f"{what} weights not found at '{path}': {how}")
    info = weights_info(path)
    model = build(info["config"])
    load_into(
        model,
        read_state_dict(path),
        source=f"'{path}'",
        hint="The weights do not match the config beside them: save both with save_weights",
    )
    model.eval()
    return model, info
