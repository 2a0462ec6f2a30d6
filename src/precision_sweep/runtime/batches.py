"""A job's evaluation batch by batch on disk: each batch's outputs saved as it finishes.

The folder (``paths.cache/evaluations/<key>``) is keyed by everything the outputs depend on:
the package's bytes, the execution (compute units, device), the runtime, the samples' hash,
the judged output and the batch size. So:

* a job interrupted mid-dataset (Ctrl-C, scancel, a lost node) leaves the batches it finished,
  and the same job run again with ``resume=true`` reads them and evaluates only the missing
  ones;
* the shards of one evaluation (``runtime.shards``, :mod:`~precision_sweep.runtime.shards`)
  write their batches there and the job reads them all: the same batches as one process
  evaluates, so the same numbers, bit for bit.

A batch is one ``.npz`` (``output``, ``label`` for a classifier's predicted labels, ``other:<name>``
for a model's other outputs), written atomically and read with ``allow_pickle=False``. The job
removes the folder once its predictions are recorded.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from precision_sweep.cache import load_npz, save_npz_atomic
from precision_sweep.hashing import hash_config, hash_path

log = logging.getLogger(__name__)

OUTPUT, LABEL, OTHER = "output", "label", "other:"


def evaluation_key(package: Path, execution, runtime_name: str, samples_hash: str, output: str | None,
                   batch_size: int) -> str:
    """The folder name of one evaluation (see the module docstring)."""
    return hash_config([hash_path(Path(package), []), repr(execution), runtime_name, samples_hash, output, batch_size])


@dataclass(frozen=True)
class BatchStore:
    """The saved batches of one evaluation, by their first sample's index."""

    folder: Path

    @classmethod
    def for_evaluation(cls, cache_dir: Path, key: str) -> BatchStore:
        return cls(Path(cache_dir) / "evaluations" / key)

    def path(self, start: int) -> Path:
        return self.folder / f"batch-{start:09d}.npz"

    def load(self, start: int) -> dict[str, np.ndarray] | None:
        return load_npz(self.path(start))

    def save(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        save_npz_atomic(self.path(start), arrays)

    def saved(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.folder.glob("batch-*.npz")} if self.folder.exists() else set()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def predict_batch(runtime, x, start: int, batch_size: int) -> dict[str, np.ndarray]:
    """The runtime's outputs of ``x[start:start + batch_size]`` as a batch's arrays (float32
    outputs; a classifier's labels as numbers or text, never objects)."""
    from precision_sweep.samples import feeds_of

    result = runtime.predict(feeds_of(x[start : start + batch_size], runtime.input_name))
    arrays = {OUTPUT: np.asarray(result[runtime.output_name], dtype=np.float32)}
    if runtime.label_name is not None:
        label = np.asarray(result[runtime.label_name]).reshape(-1)
        arrays[LABEL] = label.astype(str) if label.dtype == object else label
    for name, value in result.items():
        if name not in (runtime.output_name, runtime.label_name):
            arrays[OTHER + name] = np.asarray(value, dtype=np.float32)
    return arrays
