"""Wall time of the default sweep (3 precisions x 4 targets on digits), after install.

Runs, in one process and in fresh temporary directories:
  1. one job (fp16, ios16) with a cold cache (trains the digits model);
  2. the default grid with a cold cache;
  3. the default grid again with the model and baseline already cached;
and prints the seconds and the ratios (grid / one job), since absolute seconds are noisy.

    python benchmarks/sweep_wall_time.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(args: list[str], cwd: Path, cache: Path) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "precision_sweep", *args, f"paths.cache={cache}", "runtime.progress=false"],
        cwd=cwd, env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"command failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def main() -> None:
    grid = ["-cd", str(REPO / "sweeps"), "-cn", "default"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("a", "b", "c"):
            (tmp / name).mkdir()
        one = timed(["precision=fp16", "target=ios16"], tmp / "a", tmp / "cache-a")
        cold = timed(grid, tmp / "b", tmp / "cache-b")
        warm = timed(grid, tmp / "c", tmp / "cache-b")
    print(f"one job, cold cache        : {one:6.1f} s")
    print(f"default grid (12 jobs), cold: {cold:6.1f} s   ratio to one job {cold / one:4.2f}x")
    print(f"default grid (12 jobs), warm: {warm:6.1f} s   ratio to one job {warm / one:4.2f}x")
    print(f"marginal cost per extra job : {(cold - one) / 11 / one:4.2f} of a one-job run")


if __name__ == "__main__":
    main()
