"""The sweep's own cost at scale: a 6-job sweep at 224x224 against the jobs' TF inference time.

A user's MobileNetV2 (alpha 1.0, 1000 classes, 224x224, seeded random weights, saved as a
``.keras`` file) and 320 random images in an ``.npz`` (256 test images, 64 calibration), six
jobs: ``precision=fp32,fp16,int8 x compute_units=cpu_only,all``, each a real
``precision-sweep -m`` process in a fresh temporary directory:

  1. cold: an empty ``paths.cache`` (frontend, packages and the TF baseline are built);
  2. warm: the same cache, a fresh tracking store and output folder, timed ``--repeats`` times.

The reference is what TensorFlow alone needs for the jobs' inferences: Keras ``predict`` of the
256 test images (batch 32, after one warm-up call, best of 5: see ``TF_REPEATS``), times 6. Printed: the CPU, that
time, the sweeps' wall times and the ratio warm sweep / (6 x TF), then where a warm sweep's
time goes, from its MLflow runs: start-up before the first job run opens, per job the
conversion (``convert_seconds``, cached packages), the evaluation (``eval_seconds``) and the
rest of the job (baseline read, metrics, plots, store writes), and the wrap-up after the last
job (summary, pick, parent run).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/sweep_scale.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

JOBS = ["precision=fp32,fp16,int8", "compute_units=cpu_only,all"]
# TF's reference is its best of this many predictions: on an Intel Xeon VM one call of the same
# predict took 1.5 s or 2.6 s, so a median of 3 could land on the slow mode and flatter the sweep.
TF_REPEATS = 5
N_JOBS = 6


def cpu_description() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from emulator_vs_tf import cpu_description as describe

    return describe()


def build(tmp: Path, size: int, images: int) -> tuple[Path, Path, float]:
    """The model file, the data file, and TF's median seconds to predict the test images."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=1.0, weights=None, classes=1000)
    model_path = tmp / "mobilenet_v2_224.keras"
    model.save(model_path)
    rng = np.random.default_rng(0)
    x = rng.random((images + 64, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 1000, len(x))
    data_path = tmp / "images.npz"
    np.savez(data_path, x=x, y=y, class_names=np.array([f"class_{i}" for i in range(1000)]))
    test = x[:images]
    model.predict(test[:32], batch_size=32, verbose=0)
    times = []
    for _ in range(TF_REPEATS):
        start = time.perf_counter()
        model.predict(test, batch_size=32, verbose=0)
        times.append(time.perf_counter() - start)
    return model_path, data_path, min(times)


def sweep(args: list[str], workdir: Path, cache: Path) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "precision_sweep", "-m", *args, f"paths.cache={cache}", "runtime.progress=false",
         "diagnosis=off"],
        cwd=workdir, env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"sweep failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def breakdown(workdir: Path, process_start: float, wall: float) -> dict[str, float]:
    """Seconds of a sweep by phase, from its MLflow runs (see the module docstring)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("precision-sweep")
    jobs = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
            if r.data.tags.get("precision_sweep.role") == "job"]
    if len(jobs) != N_JOBS:
        sys.exit(f"expected {N_JOBS} job runs, found {len(jobs)}")
    first = min(r.info.start_time for r in jobs) / 1000
    last = max(r.info.end_time for r in jobs) / 1000
    convert = sum(r.data.metrics.get("convert_seconds", 0.0) for r in jobs)
    evaluate = sum(r.data.metrics.get("eval_seconds", 0.0) for r in jobs)
    job_total = sum((r.info.end_time - r.info.start_time) / 1000 for r in jobs)
    return {"start-up": first - process_start, "conversion": convert, "evaluation": evaluate,
            "rest of the jobs": job_total - convert - evaluate, "wrap-up": process_start + wall - last,
            "jobs' wall (first open to last close)": last - first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    print(cpu_description())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_path, data_path, tf_seconds = build(tmp, options.size, options.images)
        args = [*JOBS, "model=keras", f"model.path={model_path}", "dataset=npz", f"dataset.path={data_path}",
                f"dataset.limit={options.images}", f"dataset.test_size={options.images / (options.images + 64)}"]
        reference = N_JOBS * tf_seconds
        print(f"TF predict of {options.images} images at {options.size}x{options.size}: {tf_seconds:.2f} s "
              f"(best of {TF_REPEATS}); x {N_JOBS} jobs = {reference:.1f} s")
        cold = sweep(args, tmp / "cold", tmp / "cache")
        print(f"cold sweep: {cold:.1f} s wall, {cold / reference:.2f} x the jobs' TF time")
        warm = []
        for repeat in range(options.repeats):
            workdir = tmp / f"warm{repeat}"
            start = time.time()
            seconds = sweep(args, workdir, tmp / "cache")
            warm.append((seconds, breakdown(workdir, start, seconds)))
            print(f"warm sweep {repeat + 1}: {seconds:.1f} s wall, {seconds / reference:.2f} x the jobs' TF time")
    seconds, parts = sorted(warm, key=lambda item: item[0])[len(warm) // 2]
    print(f"median warm sweep: {seconds:.1f} s = {seconds / reference:.2f} x the jobs' TF time; where it goes:")
    for name, value in parts.items():
        print(f"  {name:38s} {value:6.1f} s  ({value / reference:.2f} x TF)")


if __name__ == "__main__":
    main()
