"""Wall time of a sweep on 1 vs 2 joblib workers, in one run, on two grids.

Grids:

* ``digits``: the default 12-job grid (fp32, fp16, int8 x iOS15-18) on the embedded digits
  model, where start-up dominates: a warm job's own work is a fraction of a second;
* ``long``: MobileNetV2 (alpha 0.35, random weights) at 224x224 on 256 random test images
  (an .npz written here), fp32/fp16 x cpu_only/all: 4 jobs of tens of seconds, each of
  which already uses every core when alone.

For each grid a first, untimed sweep fills every cache (model, baseline, dataset split,
frontend and packages, compiled emulator plans); then the grid runs with
``hydra/launcher=parallel`` on 1 worker and on 2 workers, each into a fresh store (the order
alternates over ``--repeats``; each side keeps its best). The script prints the ratio
1-worker / 2-worker wall time, each worker's jobs and thread share (the
``precision_sweep.threads`` tag its runs carry), and where a sweep's time goes, read from the
runs' own start and end times:

* ``to first job``: the command's start until the first job run starts (Python and library
  imports, the store, the parent run, Hydra composing the jobs, workers starting);
* ``jobs``: the first job's start until the last job's end (``busy`` is the sum of the job
  runs' durations: over the span, the average number of jobs running at once);
* ``wrap-up``: the last job's end until the command exits (the summary, the plots, the pick).

The first and last parts are serial whatever the worker count; they bound the speed-up
(Amdahl), and the script prints that bound.

    python benchmarks/parallel_speedup.py [--grids digits long] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GRIDS = {
    "digits": ["precision=fp32,fp16,int8", "target=ios15,ios16,ios17,ios18"],
    "long": ["precision=fp32,fp16", "compute_units=cpu_only,all", "target=ios17", "model=mobilenet_v2",
             "dataset=npz", "dataset.test_size=1.0", "dataset.calib_size=0"],
}
LONG_IMAGES = 256


@dataclass
class Timeline:
    wall: float
    to_first_job: float
    jobs_span: float
    busy: float
    wrap_up: float
    workers: list[str]


def long_dataset(folder: Path) -> str:
    path = folder / f"images224x{LONG_IMAGES}.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((LONG_IMAGES, 224, 224, 3), dtype=np.float32), y=rng.integers(0, 10, LONG_IMAGES))
    return f"dataset.path={path}"


def sweep(workdir: Path, cache: Path, args: list[str]) -> tuple[float, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start, started = time.perf_counter(), time.time()
    result = subprocess.run(
        [sys.executable, "-m", "precision_sweep", "-m", *args, f"paths.cache={cache}",
         "runtime.progress=false", "progress=false"],
        cwd=workdir, env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"sweep failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return started, seconds


def timeline(workdir: Path, started: float, wall: float) -> Timeline:
    """Where the sweep recorded under ``workdir`` spent its time, from its job runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    jobs = [run for experiment in client.search_experiments()
            for run in client.search_runs([experiment.experiment_id], "tags.`precision_sweep.role` = 'job'")]
    begins = [run.info.start_time / 1000 - started for run in jobs]
    ends = [run.info.end_time / 1000 - started for run in jobs]
    workers: dict[str, list[str]] = {}
    for run in jobs:
        key = f"{run.data.tags.get('precision_sweep.host')}:{run.data.tags.get('precision_sweep.pid')}"
        workers.setdefault(key, []).append(run.data.tags.get("precision_sweep.threads", "?"))
    return Timeline(
        wall=wall, to_first_job=min(begins), jobs_span=max(ends) - min(begins),
        busy=sum(end - begin for begin, end in zip(begins, ends)), wrap_up=wall - max(ends),
        workers=[f"{key}: {len(tags)} jobs, threads {', '.join(sorted(set(tags)))}" for key, tags in sorted(workers.items())],
    )


def bench(grid: str, args: list[str], tmp: Path, repeats: int) -> None:
    cache = tmp / f"cache-{grid}"
    sweep(tmp / f"{grid}-warm", cache, args)  # untimed: fills every cache both timed sweeps use
    best: dict[int, Timeline] = {}
    for repeat in range(repeats):
        for workers in ((1, 2) if repeat % 2 == 0 else (2, 1)):
            folder = tmp / f"{grid}-{workers}-{repeat}"
            started, wall = sweep(folder, cache, ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={workers}", *args])
            measured = timeline(folder, started, wall)
            if workers not in best or measured.wall < best[workers].wall:
                best[workers] = measured
    one, two = best[1], best[2]
    print(f"\n{grid} grid ({' '.join(a for a in args if not a.startswith('dataset.path'))}), "
          f"best of {repeats}, {os.cpu_count()} cores")
    for label, t in (("1 worker ", one), ("2 workers", two)):
        print(f"  {label}: {t.wall:6.1f} s = to first job {t.to_first_job:5.1f} + jobs {t.jobs_span:5.1f} "
              f"(busy {t.busy:5.1f}, {t.busy / t.jobs_span:3.1f} at once) + wrap-up {t.wrap_up:4.1f}")
        for line in t.workers:
            print(f"      worker {line}")
    serial = one.to_first_job + one.wrap_up
    bound = one.wall / (serial + one.jobs_span / 2)
    print(f"  speed-up (1 worker / 2 workers): {one.wall / two.wall:4.2f}x; Amdahl bound with the 1-worker "
          f"run's serial {serial:.1f} s and jobs halved: {bound:4.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", choices=sorted(GRIDS), default=["digits", "long"])
    parser.add_argument("--repeats", type=int, default=1)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for grid in options.grids:
            args = GRIDS[grid] + ([long_dataset(tmp)] if grid == "long" else [])
            bench(grid, args, tmp, options.repeats)


if __name__ == "__main__":
    main()
