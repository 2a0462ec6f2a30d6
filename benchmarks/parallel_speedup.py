"""Wall time of the 12-job digits grid on 1 vs 2 joblib workers, in one run.

Both sweeps use hydra/launcher=parallel (the joblib launcher) with the same warm caches (a
first, untimed sweep of the same grid trains the model and fills the baseline, frontend and
base-package caches), each into a fresh store, and the script prints the ratio 1-worker time /
2-worker time, and each worker's jobs and thread share (the ``precision_sweep.threads`` tag its
runs carry: TensorFlow intra-op, OpenMP/BLAS and numba threads of the machine's cores). Each sweep includes its fixed costs: the launcher, and every worker's start-up
(importing TensorFlow, coremltools and MLflow, loading the model).

    python benchmarks/parallel_speedup.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = ["precision=fp32,fp16,int8", "target=ios15,ios16,ios17,ios18"]


def sweep(workdir: Path, cache: Path, args: list[str]) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "precision_sweep", "-m", *args, f"paths.cache={cache}",
         "runtime.progress=false", "progress=false"],
        cwd=workdir, env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"sweep failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def worker_shares(workdir: Path) -> list[str]:
    """One line per worker process of the sweep recorded under ``workdir``: its jobs and the
    thread share its runs record."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    workers: dict[str, list] = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], "tags.`precision_sweep.role` = 'job'"):
            key = f"{run.data.tags.get('precision_sweep.host')}:{run.data.tags.get('precision_sweep.pid')}"
            workers.setdefault(key, []).append(run.data.tags.get("precision_sweep.threads", "?"))
    return [f"  worker {key}: {len(tags)} jobs, threads {', '.join(sorted(set(tags)))}" for key, tags in sorted(workers.items())]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp, cache = Path(tmp), Path(tmp) / "cache"
        sweep(tmp / "warm", cache, GRID)  # untimed: fills every cache both timed sweeps use
        one = sweep(tmp / "one", cache, ["hydra/launcher=parallel", "hydra.launcher.n_jobs=1", *GRID])
        two = sweep(tmp / "two", cache, ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *GRID])
        shares = {label: worker_shares(tmp / label) for label in ("one", "two")}
    print(f"12-job digits grid, joblib 1 worker : {one:6.1f} s")
    print(f"12-job digits grid, joblib 2 workers: {two:6.1f} s")
    print(f"speedup (1 worker / 2 workers)      : {one / two:5.2f}x  on {os.cpu_count()} cores")
    for label, lines in shares.items():
        print(f"{label} worker(s):", *lines, sep="\n")


if __name__ == "__main__":
    main()
