"""The one call at the top of every notebook: seeds, device and mode.

Introduced in lesson 00_welcome.

Two modes share one code path:

* ``pretrained``: real open_clip / taming weights, downloaded once into a cache.
* ``offline``: the tiny models the course trains itself on Shapes World (shipped inside lessonlib).

``auto`` (the default) picks ``pretrained`` when the default CLIP weights are already cached or the model
hub answers within a few seconds, else ``offline``. The environment variable ``LESSONLIB_MODE`` forces a
mode (CI sets ``offline``). Deciding never takes longer than ``HUB_TIMEOUT_S`` seconds, so nobody waits
through the hub client's 45-second retry loop.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("auto", "pretrained", "offline")
MODE_ENV = "LESSONLIB_MODE"
DEVICE_ENV = "LESSONLIB_DEVICE"
CACHE_ENV = "LESSONLIB_CACHE"
HUB_HOST = "huggingface.co"
HUB_TIMEOUT_S = 3.0
# The default pretrained CLIP of the course (open_clip ViT-B-32 / laion2b_s34b_b79k) lives in this hub repo.
DEFAULT_CLIP_HUB_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
DEFAULT_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class Setup:
    """What ``setup()`` chose. ``str(cfg)`` is the one line it prints."""

    mode: str
    device: str
    seed: int
    reason: str
    cache_dir: Path = field(default_factory=lambda: cache_dir())

    def __str__(self) -> str:
        return (
            f"lessonlib: mode={self.mode} ({self.reason}); device={self.device}; seed={self.seed}"
        )


_current: Setup | None = None


def validate_mode(mode: str | None) -> str:
    """Return ``mode`` normalised, or raise a ValueError that lists the valid modes.

    Example:
        >>> validate_mode(" Offline ")
        'offline'
    """
    if mode is None:
        return "auto"
    if not isinstance(mode, str) or mode.strip().lower() not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    return mode.strip().lower()


def cache_dir() -> Path:
    """Folder for downloaded weights and embedding caches (``$LESSONLIB_CACHE`` or ``~/.cache/lessonlib``)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "lessonlib")
    return Path(root)


def hub_reachable(host: str = HUB_HOST, port: int = 443, timeout: float = HUB_TIMEOUT_S) -> bool:
    """True if a TCP connection to the model hub opens within ``timeout`` seconds (DNS included).

    The probe runs in a daemon thread so that a hanging DNS lookup cannot hold the caller longer than
    ``timeout``.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _hub_cache_dirs() -> list[Path]:
    """Hub cache folders to look in, read from the environment now (not at import time)."""
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "huggingface"
    )
    dirs = [Path(os.environ.get("HF_HUB_CACHE") or os.path.join(hf_home, "hub"))]
    # lessonlib.registry keeps its downloads under the course cache; look there too.
    dirs += [cache_dir(), cache_dir() / "hub", cache_dir() / "open_clip"]
    return dirs


def default_weights_cached() -> bool:
    """True if the default pretrained CLIP is already in a hub cache folder (no network needed)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return False
    for folder in _hub_cache_dirs():
        if not folder.is_dir():
            continue
        for filename in DEFAULT_CLIP_FILES:
            hit = try_to_load_from_cache(DEFAULT_CLIP_HUB_REPO, filename, cache_dir=folder)
            if isinstance(hit, str) and os.path.exists(hit):
                return True
    return False


def decide_mode(requested: str | None = None) -> tuple[str, str]:
    """Pick the mode and say why, in a few words. ``requested`` beats ``$LESSONLIB_MODE`` beats ``auto``."""
    if requested is not None:
        mode, source = validate_mode(requested), "asked for in setup()"
    elif os.environ.get(MODE_ENV):
        mode, source = validate_mode(os.environ[MODE_ENV]), f"set by ${MODE_ENV}"
    else:
        mode, source = "auto", ""
    if mode != "auto":
        return mode, source
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "offline", "auto: HF_HUB_OFFLINE is set"
    if default_weights_cached():
        return "pretrained", "auto: pretrained CLIP weights found in the cache"
    if hub_reachable():
        return "pretrained", f"auto: {HUB_HOST} answered, weights will be downloaded once"
    return (
        "offline",
        f"auto: {HUB_HOST} is not reachable (checked for at most {HUB_TIMEOUT_S:.0f} s), using the tiny models",
    )


def pick_device(requested: str | None = None) -> str:
    """``cuda`` if available, else ``mps`` (Apple), else ``cpu``; ``requested`` or ``$LESSONLIB_DEVICE`` wins."""
    import torch

    requested = requested or os.environ.get(DEVICE_ENV)
    if requested:
        requested = requested.strip().lower()
        valid = ("cpu", "cuda", "mps")
        if requested.split(":")[0] not in valid:
            raise ValueError(f"unknown device {requested!r}: choose one of {', '.join(valid)}")
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"device {requested!r} asked for, but no CUDA GPU is visible: use 'cpu'"
            )
        if requested == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device 'mps' asked for, but Apple MPS is not available: use 'cpu'")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a lesson gives the same numbers on every run."""
    import numpy as np
    import torch

    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _go_offline() -> None:
    """Make every hub client fail at once instead of retrying for 45 s."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hf_constants

        hf_constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass


def setup(
    mode: str | None = None, seed: int = 0, device: str | None = None, verbose: bool = True
) -> Setup:
    """Seed everything, pick the device and the mode, print one line saying what was chosen and why.

    Introduced in lesson 00_welcome.

    Example:
        >>> cfg = setup(mode="offline", seed=0, verbose=False)
        >>> cfg.mode
        'offline'
    """
    global _current
    chosen, reason = decide_mode(mode)
    seed_everything(seed)
    cfg = Setup(mode=chosen, device=pick_device(device), seed=seed, reason=reason)
    if chosen == "offline":
        _go_offline()
    _current = cfg
    if verbose:
        print(cfg)
    return cfg


def get_mode() -> str:
    """The mode in force: the last ``setup()``'s, else ``$LESSONLIB_MODE``, else decided now (``auto``)."""
    if _current is not None:
        return _current.mode
    return decide_mode(None)[0]


def current() -> Setup | None:
    """The last ``setup()`` result, or None if ``setup()`` has not been called."""
    return _current


def environment_report() -> list[tuple[str, str]]:
    """Rows of (item, value) describing this environment: versions, device, mode, caches, shipped weights.

    Introduced in lesson 00_welcome.

    Example:
        >>> dict(environment_report())["python"]  # doctest: +SKIP
        '3.11.7'
    """
    import platform
    from importlib import metadata

    import torch

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    cfg = _current
    rows = [
        ("python", platform.python_version()),
        ("platform", f"{platform.system()} {platform.machine()}"),
        ("lessonlib", version("lessonlib")),
        ("torch", torch.__version__),
        ("open_clip_torch", version("open_clip_torch")),
        ("taming-transformers", version("taming-transformers-rom1504")),
        ("CPU threads used by torch", str(torch.get_num_threads())),
        ("CUDA GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
        ("device", cfg.device if cfg else pick_device()),
        ("mode", f"{cfg.mode} ({cfg.reason})" if cfg else get_mode()),
        ("course cache", str(cache_dir())),
    ]
    weights = sorted((Path(__file__).parent / "weights").glob("*.safetensors"))
    for path in weights:
        rows.append((f"shipped weights: {path.name}", f"{path.stat().st_size / 1e6:.1f} MB"))
    if not weights:
        rows.append(("shipped weights", "none found (offline lessons need them)"))
    return rows
