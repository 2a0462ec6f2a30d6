"""What a warm job costs, and how much of it is a worker's start-up (issue 13, item 4).

A sweep worker (a joblib/Ray/SLURM process) pays its start-up once: Python, our package and the
libraries a job imports. With every cache warm (model, baseline, frontend program, base and
compressed packages), a job's own work is small, so start-up decides whether more workers pay
off. This script measures, each in a fresh process and in one run:

* ``start-up``: importing what a job imports today (``precision_sweep.job`` and the libraries
  its stages load: TensorFlow, coremltools, MLflow, the emulator's kernels);
* of which TensorFlow + coremltools: the same imports without them;
* ``warm job``: ``precision-sweep precision=fp16 target=ios17`` on the embedded digits model,
  run a second time with the caches of the first (the whole command, start-up included);

and prints the start-up's share of the warm job. Usage::

    python benchmarks/warm_worker.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
JOB_IMPORTS = (
    "import precision_sweep.job, mlflow; from precision_sweep.emulator import ops; "
    "import precision_sweep.job as job; job._import_libraries()"
)
LIGHT_IMPORTS = "import precision_sweep.job, mlflow; from precision_sweep.emulator import ops"


def timed(args: list[str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def best(args: list[str], repeats: int, cwd: Path | None = None) -> float:
    return min(timed(args, cwd) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        job = [python, "-m", "precision_sweep", "precision=fp16", "target=ios17", f"paths.outputs={tmp}",
               "runtime.progress=false"]
        timed(job)  # fills the caches
        warm = best(job, args.repeats)
        startup = best([python, "-c", JOB_IMPORTS], args.repeats)
        light = best([python, "-c", LIGHT_IMPORTS], args.repeats)
    print(f"worker start-up (job imports)          {startup:6.2f} s")
    print(f"  of which TensorFlow + coremltools    {startup - light:6.2f} s")
    print(f"warm job (whole command)               {warm:6.2f} s")
    print(f"start-up share of the warm job         {startup / warm:6.2f}")
    print(f"TF + coremltools share of the warm job {(startup - light) / warm:6.2f}")


if __name__ == "__main__":
    main()
