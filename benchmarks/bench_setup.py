"""How long a student waits before a lesson knows it is offline: lessonlib.setup() vs open_clip's own try.

Run:  .venv/bin/python benchmarks/bench_setup.py

Both run in fresh subprocesses with an empty model cache (a temporary HF_HOME), so the hub is the only
place the weights could come from. On a machine with no route to the hub, setup() must decide `offline`
within 5 s; open_clip, asked for the default pretrained CLIP, retries the hub before it fails.
"""

import os
import subprocess
import sys
import tempfile
import time

SETUP = "import lessonlib; cfg = lessonlib.setup(); print(cfg.mode)"
OPEN_CLIP = (
    "import open_clip\n"
    "try:\n"
    "    open_clip.create_model_and_transforms('ViT-B-32', pretrained='laion2b_s34b_b79k')\n"
    "    print('loaded')\n"
    "except Exception as e:\n"
    "    print('failed:', type(e).__name__)\n"
)


def timed(code: str, env: dict, timeout: float = 300.0) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )
    return time.perf_counter() - start, (out.stdout.strip().splitlines() or ["?"])[-1]


def main() -> None:
    with tempfile.TemporaryDirectory() as hf_home:
        env = {k: v for k, v in os.environ.items() if k not in ("LESSONLIB_MODE", "HF_HUB_OFFLINE")}
        env["HF_HOME"] = hf_home
        env["LESSONLIB_CACHE"] = os.path.join(hf_home, "lessonlib")
        baseline, _ = timed("import lessonlib, torch", env)
        t_setup, mode = timed(SETUP, env)
        t_clip, result = timed(OPEN_CLIP, env)
    print(f"python start + import lessonlib, torch : {baseline:6.2f} s")
    print(f"lessonlib.setup() in auto mode          : {t_setup:6.2f} s  -> mode {mode!r}")
    print(f"  of which deciding the mode            : {t_setup - baseline:6.2f} s")
    print(f"open_clip pretrained load, no network   : {t_clip:6.2f} s  -> {result}")
    print(f"ratio open_clip / setup()               : {t_clip / t_setup:6.1f} x")


if __name__ == "__main__":
    main()
