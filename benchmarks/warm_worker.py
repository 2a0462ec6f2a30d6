"""What a warm job costs, before and after warm jobs stopped importing TensorFlow/coremltools
(issue 13, item 4), in one run.

A sweep worker (a joblib/Ray/SLURM process) pays its start-up once, and with every cache warm
(model card, baseline, base and compressed packages, compiled emulator plans) a job's own work
is small, so start-up decides whether more workers pay off. For the current checkout and for an
older revision (``--against``, default the commit before the change; checked out with ``git
worktree`` into a temporary folder and run from its ``src``), each with its own caches, this
measures in fresh processes:

* ``warm job``: ``precision-sweep precision=fp16 target=ios17`` on the embedded digits model, run
  again with the caches of a first run (the whole command, start-up included), best of a few;
* whether that warm job imported TensorFlow, Keras or coremltools (``sys.modules`` at exit);
* ``TF + coremltools import``: ``import tensorflow, coremltools`` alone, what a warm job no longer
  pays;

and prints the ratio old / new of the warm job. Usage::

    python benchmarks/warm_worker.py [--repeats 3] [--against a66f746]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
# Runs the app, then reports which heavy libraries the process imported.
RUN_AND_REPORT = (
    "import sys, atexit\n"
    "atexit.register(lambda: print('IMPORTED', sorted(m for m in ('tensorflow', 'keras', 'coremltools') if m in sys.modules), file=sys.stderr))\n"
    "sys.argv = ['precision-sweep'] + sys.argv[1:]\n"
    "from precision_sweep.app import main\n"
    "main()\n"
)


def timed(args: list[str], env: dict, cwd: Path | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds, result.stderr


def warm_job(src: Path, outputs: Path, repeats: int) -> tuple[float, str]:
    env = {**ENV, "PYTHONPATH": str(src)}
    job = [sys.executable, "-c", RUN_AND_REPORT, "precision=fp16", "target=ios17", f"paths.outputs={outputs}",
           "runtime.progress=false"]
    timed(job, env)  # fills the caches
    runs = [timed(job, env) for _ in range(repeats)]
    seconds = min(s for s, _ in runs)
    imported = [line for line in runs[-1][1].splitlines() if line.startswith("IMPORTED")][-1]
    return seconds, imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", default="a66f746", help="the older revision to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.against],
                       check=True, capture_output=True)
        try:
            new_time, new_imported = warm_job(ROOT / "src", Path(tmp) / "new-outputs", args.repeats)
            old_time, old_imported = warm_job(old / "src", Path(tmp) / "old-outputs", args.repeats)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
        libraries, _ = min((timed([sys.executable, "-c", "import tensorflow, coremltools"], ENV)
                            for _ in range(args.repeats)), key=lambda r: r[0])
    print(f"warm job, {args.against} (whole command)   {old_time:6.2f} s   {old_imported}")
    print(f"warm job, this checkout               {new_time:6.2f} s   {new_imported}")
    print(f"old / new                             {old_time / new_time:6.2f}")
    print(f"import tensorflow, coremltools alone  {libraries:6.2f} s")


if __name__ == "__main__":
    main()
