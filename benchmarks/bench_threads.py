"""Lesson notebooks end to end under torch's thread choices, on a quiet machine and beside a busy process.

Each run executes a notebook headless (``jupyter nbconvert --execute``, offline mode) with the thread
count forced by ``LESSONLIB_THREADS`` (1, 2) or left to ``lessonlib.setup()``'s policy ("policy"), first
with nothing else running ("quiet"), then beside one CPU-bound process that spins on one core ("busy"),
which is what a shared laptop, Binder or a second test job look like. All runs happen in one go, side by
side, so the ratios compare like with like. A run that passes ``--limit`` seconds is stopped and reported
as such.

    python benchmarks/bench_threads.py                       # notebook 04, all six runs
    python benchmarks/bench_threads.py --notebook notebooks/01_clip_concepts.ipynb --threads 1 policy

Prints one row per run (seconds, what the policy chose) and, per condition, each choice's time as a
ratio to the fastest. Results go to BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spin_forever() -> subprocess.Popen:
    """One process that keeps one CPU core busy until it is killed."""
    return subprocess.Popen([sys.executable, "-c", "while True:\n    pass"])


def run_notebook(notebook: Path, threads: str, limit: float) -> tuple[float | None, str]:
    """Execute ``notebook``; return (seconds or None if stopped at ``limit``, the setup line)."""
    env = dict(os.environ, LESSONLIB_MODE="offline", MPLBACKEND="Agg")
    env.pop("LESSONLIB_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)
    if threads != "policy":
        env["LESSONLIB_THREADS"] = threads
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            f"--ExecutePreprocessor.timeout={int(limit)}",
            "--output-dir",
            out,
            str(notebook),
        ]
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command, env=env, cwd=notebook.parent, capture_output=True, text=True, timeout=limit
            )
        except subprocess.TimeoutExpired:
            return None, "(stopped at the limit)"
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            raise RuntimeError(f"{notebook.name} failed with threads={threads}: {tail}")
        executed = json.loads((Path(out) / notebook.name).read_text())
    text = json.dumps(executed["cells"][2].get("outputs", []))
    line = re.search(r"threads=\d+ \([^)]*\)", text)
    return seconds, line.group(0) if line else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", default="notebooks/04_vqgan_clip.ipynb")
    parser.add_argument("--threads", nargs="+", default=["1", "2", "policy"])
    parser.add_argument("--conditions", nargs="+", default=["quiet", "busy"])
    parser.add_argument(
        "--limit", type=float, default=900.0, help="seconds before a run is stopped"
    )
    args = parser.parse_args()
    for c in args.conditions:
        if c not in ("quiet", "busy"):
            parser.error(f"condition {c!r}: use quiet or busy")
    for t in args.threads:
        if t != "policy" and not (t.isdigit() and int(t) >= 1):
            parser.error(f"--threads {t!r}: give whole numbers >= 1 or 'policy'")
    notebook = (ROOT / args.notebook).resolve()
    if not notebook.is_file():
        parser.error(f"notebook '{args.notebook}' not found")

    print(f"{notebook.name}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    results: dict[str, dict[str, float | None]] = {}
    for condition in args.conditions:
        competitor = spin_forever() if condition == "busy" else None
        try:
            if competitor is not None:
                time.sleep(2)  # let it reach full speed
            for threads in args.threads:
                seconds, chosen = run_notebook(notebook, threads, args.limit)
                results.setdefault(condition, {})[threads] = seconds
                shown = f"{seconds:7.0f} s" if seconds is not None else f"> {args.limit:.0f} s"
                print(
                    f"{condition:6} threads={threads:7} {shown}   setup said: {chosen}", flush=True
                )
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    for condition, row in results.items():
        finished = [s for s in row.values() if s is not None]
        if not finished:
            continue
        best = min(finished)
        ratios = ", ".join(
            f"{t}: {s / best:.2f}x" if s is not None else f"{t}: > {args.limit / best:.1f}x"
            for t, s in row.items()
        )
        print(f"{condition}: time relative to the fastest: {ratios}")


if __name__ == "__main__":
    main()
