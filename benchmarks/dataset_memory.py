"""Peak memory of one job against the dataset's size (the streaming target of issue 26).

Runs the same job (a small dense classifier, fp16 at iOS18, ``dataset.test_size=1.0``) over
``--small`` and ``--large`` samples, each in its own ``precision-sweep`` process, and prints the
job's ``peak_rss_mb`` (VmHWM, logged by every job) and the large/small ratio, per source:

* ``image_folder`` streamed (``dataset.stream=true``): PNG files of ``--sample`` (H W C),
  one folder per class, read a batch at a time; the job's last progress line is printed too;
* ``image_folder`` in memory (``dataset.stream=false``): the same files decoded first;
* ``dataset=python`` and ``dataset=tfrecord``: arrays, read into memory before the split.

    python benchmarks/dataset_memory.py [--small 5000] [--large 50000] [--sample 32 32 3]
        [--sources image_folder image_folder_in_memory python tfrecord]

For the sources read into memory the ratio is how much a dataset of this sample size adds to a
job whose floor is TensorFlow and coremltools.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FUNCTIONS = '''
import numpy as np

def batches(n, shape, batch=1000):
    rng = np.random.default_rng(0)
    for start in range(0, n, batch):
        size = min(batch, n - start)
        x = rng.uniform(0, 1, size=(size, *shape)).astype(np.float32)
        yield x, (x.reshape(size, -1).mean(axis=1) > 0.5).astype(np.int64)
'''


def _model(path: Path, shape: tuple[int, ...]) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.save(path)


def _records(folder: Path, n: int, shape: tuple[int, ...]) -> None:
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(folder / "data.tfrecord")) as writer:
        for start in range(0, n, 1000):
            size = min(1000, n - start)
            x = rng.uniform(0, 1, size=(size, *shape)).astype(np.float32)
            labels = (x.reshape(size, -1).mean(axis=1) > 0.5).astype(np.int64)
            for sample, label in zip(x, labels):
                features = {"image": tf.train.Feature(float_list=tf.train.FloatList(value=sample.reshape(-1))),
                            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def _images(folder: Path, n: int, shape: tuple[int, ...]) -> None:
    """``n`` random PNG images of ``shape`` (H, W, C) in two class folders (the mean decides)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("dark", "light"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if shape[-1] == 1 else pixels)
        image.save(folder / ("light" if pixels.mean() > 127.5 else "dark") / f"{i:06d}.png", compress_level=1)


def _progress_line(outputs: Path) -> str:
    lines = [line for log in outputs.rglob("*.log") for line in log.read_text().splitlines() if "img/s" in line]
    return lines[-1].split("] - ", 1)[-1].strip() if lines else ""


def _peak(root: Path, name: str, source_args: list[str], env: dict) -> float:
    from mlflow.tracking import MlflowClient

    outputs = root / name
    command = [sys.executable, "-m", "precision_sweep", "model=keras", f"model.path={root / 'model.keras'}",
               *source_args, "dataset.test_size=1.0", "precision=fp16", "target=ios18", "compute_units=cpu_only",
               "diagnosis=off", "runtime.progress=false", f"paths.outputs={outputs}"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    (run,) = [r for r in runs if r.data.tags.get("precision_sweep.role", "job") == "job"]
    line = _progress_line(outputs)
    if line:
        print(f"  {name}: {line}", flush=True)
    return run.data.metrics["peak_rss_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--large", type=int, default=50000)
    parser.add_argument("--sample", type=int, nargs="+", default=[32, 32, 3])
    parser.add_argument("--sources", nargs="+", default=["image_folder", "image_folder_in_memory", "python", "tfrecord"],
                        choices=["image_folder", "image_folder_in_memory", "python", "tfrecord"])
    args = parser.parse_args()
    shape = tuple(args.sample)
    with tempfile.TemporaryDirectory(prefix="dataset-memory-") as tmp:
        root = Path(tmp)
        _model(root / "model.keras", shape)
        (root / "memory_functions.py").write_text(FUNCTIONS)
        env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
        listed = ",".join(map(str, shape))
        print(f"sample {list(shape)} float32 ({int(np.prod(shape)) * 4} bytes), peak_rss_mb of one job:", flush=True)
        rows = []
        for source in args.sources:
            peaks = []
            for n in (args.small, args.large):
                if source.startswith("image_folder"):
                    folder = root / f"images-{n}"
                    if not folder.exists():
                        _images(folder, n, shape)
                    stream = "false" if source.endswith("in_memory") else "true"
                    source_args = ["dataset=image_folder", f"dataset.path={folder}", f"dataset.stream={stream}",
                                   "dataset.calib_size=0"]
                elif source == "python":
                    source_args = ["dataset=python", "dataset.target=memory_functions.batches", f"+dataset.kwargs.n={n}",
                                   f"+dataset.kwargs.shape=[{listed}]"]
                else:
                    _records(root / f"records-{n}", n, shape)
                    source_args = ["dataset=tfrecord", f"dataset.path={root / f'records-{n}'}",
                                   "dataset.features.image.dtype=float32", "dataset.features.image.encoding=raw",
                                   f"dataset.features.image.shape=[{listed}]"]
                peaks.append(_peak(root, f"{source}-{n}", source_args, env))
            rows.append((source, *peaks))
            print(f"{source:24} {args.small:>8} {args.large:>8}: {peaks[0]:8.0f} {peaks[1]:8.0f} MB  ratio {peaks[1] / peaks[0]:.3f}",
                  flush=True)
        print(f"\n{'source':24} {'n=' + str(args.small):>10} {'n=' + str(args.large):>10}  large/small")
        for source, small, large in rows:
            print(f"{source:24} {small:8.0f}MB {large:8.0f}MB  {large / small:.3f}")


if __name__ == "__main__":
    main()
