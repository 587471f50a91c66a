"""The one call at the top of every notebook: seeds, device, CPU threads and mode.

Introduced in lesson 00_welcome.

Two modes share one code path:

* ``pretrained``: real open_clip / taming weights, downloaded once into a cache.
* ``offline``: the tiny models the course trains itself on Shapes World (shipped inside lessonlib).

``auto`` (the default) picks ``pretrained`` when the default CLIP weights are already cached or the model
hub answers within a few seconds, else ``offline``. The environment variable ``LESSONLIB_MODE`` forces a
mode (CI sets ``offline``). Deciding never takes longer than ``HUB_TIMEOUT_S`` seconds, so nobody waits
through the hub client's 45-second retry loop.

Threads are chosen, not left to torch's default (one per core). On a 2-core machine that is already
busy (Binder, a shared laptop, a test run beside another job) torch with 2 threads was measured 8-13x
slower than with 1, because its threads wait for each other at every operation while one of them is
descheduled. ``setup()`` therefore counts the CPUs this process may really use (its affinity and any
cgroup quota), measures how busy they are for a fraction of a second, and gives torch the ones that are
free (at least one); ``LESSONLIB_THREADS`` overrides it. BENCHMARKS.md has the measurements.
"""

from __future__ import annotations

import math
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("auto", "pretrained", "offline")
MODE_ENV = "LESSONLIB_MODE"
DEVICE_ENV = "LESSONLIB_DEVICE"
CACHE_ENV = "LESSONLIB_CACHE"
THREADS_ENV = "LESSONLIB_THREADS"
LOAD_SAMPLE_S = 0.3
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
    threads: int = 1
    threads_reason: str = ""
    cache_dir: Path = field(default_factory=lambda: cache_dir())

    def __str__(self) -> str:
        return (
            f"lessonlib: mode={self.mode} ({self.reason}); device={self.device}; "
            f"threads={self.threads} ({self.threads_reason}); seed={self.seed}"
        )


_current: Setup | None = None
_decided_without_setup: tuple[str, str] | None = None
_offline_saved: dict | None = None  # what _go_offline changed, so that _go_online can put it back


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


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None if none."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def usable_cpus() -> tuple[int, list[int] | None]:
    """``(n, cpu_ids)``: how many CPUs this process may use (affinity and cgroup quota), and which.

    Introduced in lesson 00_welcome. ``cpu_ids`` is None where the system does not say (macOS, Windows).

    Example:
        >>> usable_cpus()[0] >= 1
        True
    """
    try:
        ids = sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        ids = None
    n = len(ids) if ids else (os.cpu_count() or 1)
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = max(1, min(n, math.floor(quota + 1e-9)))
    return n, ids


def _cpu_times(ids: list[int] | None) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over ``ids`` (all CPUs if None), from /proc/stat; None elsewhere."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    wanted = None if ids is None else {f"cpu{i}" for i in ids}
    busy = total = 0.0
    for line in lines:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or (wanted and name not in wanted):
            continue
        numbers = [float(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(numbers)
        busy += sum(numbers) - numbers[3] - numbers[4]
    return (busy, total) if total else None


def busy_cpus(ids: list[int] | None = None, seconds: float = LOAD_SAMPLE_S) -> float:
    """How many of the CPUs ``ids`` other work keeps busy, measured over ``seconds`` (0.0 if unknown).

    Introduced in lesson 00_welcome. On Linux it reads /proc/stat before and after a short sleep (this
    process sleeps meanwhile, so what it sees is other work); elsewhere it uses the 1-minute load
    average.

    Example:
        >>> busy_cpus(seconds=0.05) >= 0.0
        True
    """
    before = _cpu_times(ids)
    if before is None:
        try:
            return float(os.getloadavg()[0])
        except (AttributeError, OSError):  # Windows
            return 0.0
    time.sleep(seconds)
    after = _cpu_times(ids)
    n = len(ids) if ids else (os.cpu_count() or 1)
    d_total = after[0] - before[0], after[1] - before[1]
    if d_total[1] <= 0:
        return 0.0
    return n * d_total[0] / d_total[1]


def choose_threads(usable: int, busy: float) -> int:
    """Threads for torch: the usable CPUs that other work leaves free, rounded, at least one.

    Introduced in lesson 00_welcome.

    Example:
        >>> choose_threads(2, 0.1), choose_threads(2, 1.0), choose_threads(8, 2.2)
        (2, 1, 6)
    """
    if not isinstance(usable, int) or usable < 1:
        raise ValueError(f"usable CPUs must be a positive integer, got {usable!r}")
    return max(1, min(usable, math.floor(usable - max(0.0, busy) + 0.5)))


def set_threads(requested: int | str | None = None) -> tuple[int, str]:
    """Give torch a thread count and say why: ``requested``, else ``$LESSONLIB_THREADS``, else the policy.

    Introduced in lesson 00_welcome. The policy is ``choose_threads(usable_cpus(), busy_cpus())``.

    Example:
        >>> set_threads(1)
        (1, 'asked for')
    """
    import torch

    source = "asked for"
    if requested is None and os.environ.get(THREADS_ENV, "").strip():
        requested, source = os.environ[THREADS_ENV].strip(), f"set by ${THREADS_ENV}"
    if requested is not None:
        try:
            n = int(requested)
        except (TypeError, ValueError):
            n = 0
        if isinstance(requested, bool) or n < 1 or str(requested).strip() != str(n):
            raise ValueError(
                f"thread count {requested!r} ({source}): give a whole number of at least 1, "
                f"e.g. {THREADS_ENV}=1"
            )
        reason = source
    else:
        usable, ids = usable_cpus()
        busy = busy_cpus(ids)
        n = choose_threads(usable, busy)
        reason = f"{usable} CPUs usable, {busy:.1f} busy with other work"
    torch.set_num_threads(n)
    return n, reason


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
    """Make every hub client fail at once instead of retrying for 45 s (undone by ``_go_online``)."""
    global _offline_saved
    import huggingface_hub.constants as hf_constants

    if _offline_saved is None:
        _offline_saved = {
            "env": os.environ.get("HF_HUB_OFFLINE"),
            "constant": hf_constants.HF_HUB_OFFLINE,
        }
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_constants.HF_HUB_OFFLINE = True


def _go_online() -> None:
    """Put back what ``_go_offline`` changed (a later ``setup(mode="pretrained")`` must reach the hub)."""
    global _offline_saved
    if _offline_saved is None:
        return
    import huggingface_hub.constants as hf_constants

    if _offline_saved["env"] is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = _offline_saved["env"]
    hf_constants.HF_HUB_OFFLINE = _offline_saved["constant"]
    _offline_saved = None


def setup(
    mode: str | None = None,
    seed: int = 0,
    device: str | None = None,
    threads: int | None = None,
    verbose: bool = True,
) -> Setup:
    """Seed everything, pick the device, torch's CPU threads and the mode; print one line saying why.

    Introduced in lesson 00_welcome.

    Example:
        >>> cfg = setup(mode="offline", seed=0, verbose=False)
        >>> cfg.mode
        'offline'
    """
    global _current
    chosen, reason = decide_mode(mode)
    seed_everything(seed)
    device = pick_device(device)
    n_threads, threads_reason = set_threads(threads)
    cfg = Setup(chosen, device, seed, reason, n_threads, threads_reason)
    if chosen == "offline":
        _go_offline()
    else:
        _go_online()
    _current = cfg
    if verbose:
        print(cfg)
    return cfg


def get_mode() -> str:
    """The mode in force: the last ``setup()``'s, else ``$LESSONLIB_MODE``, else decided once (``auto``).

    Introduced in lesson 00_welcome. Called before ``setup()`` with no ``$LESSONLIB_MODE``, it decides
    once (a network probe of at most ``HUB_TIMEOUT_S`` seconds), says so in a warning, and remembers the
    answer, so later loaders do not probe again. Call ``lessonlib.setup()`` first to choose.

    Example:
        >>> get_mode() in ("pretrained", "offline")  # doctest: +SKIP
        True
    """
    global _decided_without_setup
    if _current is not None:
        return _current.mode
    if os.environ.get(MODE_ENV):
        return decide_mode(None)[0]
    if _decided_without_setup is None:
        _decided_without_setup = decide_mode(None)
        import warnings

        warnings.warn(
            f"lessonlib.setup() has not been called: mode={_decided_without_setup[0]} "
            f"({_decided_without_setup[1]}). Call lessonlib.setup() first to choose the mode.",
            UserWarning,
            stacklevel=2,
        )
    return _decided_without_setup[0]


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
        (
            "CPU threads used by torch",
            f"{torch.get_num_threads()}" + (f" ({cfg.threads_reason})" if cfg else ""),
        ),
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
