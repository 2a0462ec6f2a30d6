"""What one more job costs: a 1-job sweep against a 12-job sweep, for two models.

For the digits CNN (embedded data) and for MobileNetV2 (alpha 0.35, random weights) at 96x96 on
random images written to an .npz here (32 test images, 64 calibration images), runs in fresh
temporary directories, each a real ``precision-sweep -m`` process:

  1. a 1-job sweep (fp16 x ios18) with an empty cache;
  2. a 12-job sweep (fp32, fp16, int8, palettize x ios16, ios17, ios18) with an empty cache;
  3. both again with the caches the first runs left (model, baseline, frontend, base packages);

and prints the wall times, the marginal cost per extra job as a fraction of the 1-job time,
((T12 - T1) / 11) / T1, and the mean per-job convert and eval seconds logged in MLflow.

    python benchmarks/sweep_cost.py            # both models
    python benchmarks/sweep_cost.py digits     # one of: digits, mobilenet_v2
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ONE = ["precision=fp16", "target=ios18"]
TWELVE = ["precision=fp32,fp16,int8,palettize", "target=ios16,ios17,ios18"]


def model_args(name: str, tmp: Path) -> list[str]:
    if name == "digits":
        return []
    path = tmp / "images96.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((128, 96, 96, 3), dtype=np.float32), y=rng.integers(0, 10, 128))
    return ["model=mobilenet_v2", "dataset=npz", f"dataset.path={path}", "dataset.test_size=0.25"]


def sweep(args: list[str], workdir: Path, cache: Path) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "precision_sweep", "-m", *args, f"paths.cache={cache}", "runtime.progress=false"],
        cwd=workdir, env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"sweep failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def per_job_seconds(workdir: Path) -> tuple[float, float, int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("precision-sweep")
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
            if r.data.tags.get("precision_sweep.role") == "job" and "eval_seconds" in r.data.metrics]
    convert = float(np.mean([r.data.metrics["convert_seconds"] for r in runs]))
    evaluate = float(np.mean([r.data.metrics["eval_seconds"] for r in runs]))
    return convert, evaluate, len(runs)


def bench(name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        extra = model_args(name, tmp)
        one_cold = sweep([*extra, *ONE], tmp / "one-cold", tmp / "cache-one")
        twelve_cold = sweep([*extra, *TWELVE], tmp / "twelve-cold", tmp / "cache-twelve")
        one_warm = sweep([*extra, *ONE], tmp / "one-warm", tmp / "cache-one")
        twelve_warm = sweep([*extra, *TWELVE], tmp / "twelve-warm", tmp / "cache-twelve")
        convert, evaluate, n = per_job_seconds(tmp / "twelve-warm")
    print(f"\n{name}")
    for label, one, twelve in (("cold cache", one_cold, twelve_cold), ("warm cache", one_warm, twelve_warm)):
        marginal = (twelve - one) / 11 / one
        print(f"  {label}: 1-job sweep {one:6.1f} s, 12-job sweep {twelve:6.1f} s, "
              f"marginal cost per extra job {marginal:5.3f} of the 1-job time")
    print(f"  per evaluated job (12-job warm sweep, {n} jobs): convert {convert:.2f} s, eval {evaluate:.2f} s")


def main() -> None:
    names = sys.argv[1:] or ["digits", "mobilenet_v2"]
    for name in names:
        bench(name)


if __name__ == "__main__":
    main()
