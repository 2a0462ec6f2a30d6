"""Emulator time of this checkout against another revision, on one model, in alternating
processes.

Two revisions of the emulator cannot share one process (same module names), so this checks the
other revision out into a temporary git worktree and runs one timing process per revision in
turn, ``--pairs`` times, this checkout first in odd pairs and the other first in even ones (a
machine whose speed drifts favours neither). Each process loads the program, runs two
warm-ups (which compile or load the numba kernels: each worktree has its own cache) and prints
the best of ``--repeats`` predictions. Printed: every pair, each side's range, and the ratio of
the medians (this checkout / the other). Usage::

    python benchmarks/emulator_ab.py --against e74bd07~2 [--model ResNet50] [--size 96]
        [--compute-units cpu_and_ne] [--device m1] [--precision fp16] [--pairs 3] [--repeats 5]

The model (random weights, batch 32) is converted to an ML program (``--precision``, fp16 by
default) once and kept in the temporary directory for the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIMER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from precision_sweep.emulator import Emulator
emulator = Emulator(sys.argv[2], compute_units=sys.argv[3], device=sys.argv[4])
size, repeats = int(sys.argv[5]), int(sys.argv[6])
x = np.random.default_rng(0).uniform(-1, 1, (32, size, size, 3)).astype(np.float32)
feeds = {emulator.input_names[0]: x}
emulator.predict(feeds)
emulator.predict(feeds)
best = float("inf")
for _ in range(repeats):
    start = time.perf_counter()
    emulator.predict(feeds)
    best = min(best, time.perf_counter() - start)
print(best)
"""


def convert(model_name: str, size: int, precision: str, path: Path) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests" / "emulator"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _emu_helpers as helpers
    from emulator_vs_tf import build_model  # the four models of that benchmark, the ViT included

    helpers.convert(build_model(model_name, size), [(32, size, size, 3)], precision=precision).save(str(path))


def time_once(src: Path, package: Path, args) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", TIMER, str(src), str(package), args.compute_units, args.device, str(args.size),
         str(args.repeats)],
        capture_output=True, text=True, env=env, check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the other revision (any git revision name)")
    parser.add_argument("--model", default="ResNet50")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--compute-units", default="cpu_and_ne")
    parser.add_argument("--device", default="m1")
    parser.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="emulator-ab-") as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(other), args.against],
                       check=True)
        try:
            package = Path(tmp) / f"{args.model}_{args.size}_{args.precision}.mlpackage"
            convert(args.model, args.size, args.precision, package)
            sides = {"this": ROOT / "src", "other": other / "src"}
            times: dict[str, list[float]] = {"this": [], "other": []}
            for pair in range(args.pairs):
                order = ["this", "other"] if pair % 2 == 0 else ["other", "this"]
                for side in order:
                    times[side].append(time_once(sides[side], package, args))
                print(f"pair {pair + 1}: this {times['this'][-1] * 1000:.0f} ms, "
                      f"{args.against} {times['other'][-1] * 1000:.0f} ms", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False)
    for side, label in (("this", "this checkout"), ("other", args.against)):
        print(f"{label}: {min(times[side]) * 1000:.0f}-{max(times[side]) * 1000:.0f} ms")
    ratio = statistics.median(times["this"]) / statistics.median(times["other"])
    print(f"{args.model} {args.size} {args.precision} {args.compute_units}/{args.device}: this / {args.against} = {ratio:.2f} "
          "(medians)")


if __name__ == "__main__":
    main()
