"""Stage 2: the FP32 TensorFlow baseline predictions on the test split.

Cached by model and dataset content hashes (and the TensorFlow and Keras versions, which run
the model), so a sweep computes them once however many jobs it runs. A cached entry is read
without importing TensorFlow or loading the model (a model read from its card loads on a miss).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from precision_sweep.cache import file_lock, load_npy, load_npz, save_npy_atomic, save_npz_atomic
from precision_sweep.data.models import LoadedModel, predict_outputs, predict_probabilities
from precision_sweep.data.versions import library_version


def baseline_path(cache_dir: Path, model: LoadedModel, dataset_hash: str) -> Path:
    """The cache file of the model's outputs on the dataset (the versions read from the installed
    distributions: TensorFlow is imported only to compute an entry)."""
    name = f"{model.content_hash}-{dataset_hash}-tf{library_version('tensorflow')}-keras{library_version('keras')}.npy"
    return Path(cache_dir) / "baseline" / name


def baseline_outputs(model: LoadedModel, x_test: np.ndarray, dataset_hash: str, cache_dir: Path) -> np.ndarray:
    """FP32 TF outputs for ``x_test`` (the judged output), computed once per model and dataset."""
    if model.output_names:
        return baseline_by_output(model, x_test, dataset_hash, cache_dir)[model.output_name]
    path = baseline_path(cache_dir, model, dataset_hash)
    cached = load_npy(path)
    if cached is not None and cached.shape[0] == len(x_test):
        return cached
    with file_lock(path.with_suffix(".lock")):
        cached = load_npy(path)  # another worker may have written it while we waited
        if cached is not None and cached.shape[0] == len(x_test):
            return cached
        outputs = predict_probabilities(model, x_test)
        save_npy_atomic(path, outputs)
    return outputs


def baseline_by_output(model: LoadedModel, x_test, dataset_hash: str, cache_dir: Path) -> dict[str, np.ndarray]:
    """Every output of a model with several outputs on ``x_test``, by name (one ``.npz`` entry
    per model and dataset); a model with one output: that output."""
    if not model.output_names:
        return {model.output_name: baseline_outputs(model, x_test, dataset_hash, cache_dir)}
    path = baseline_path(cache_dir, model, dataset_hash).with_suffix(".npz")

    def complete(entry):
        return entry is not None and set(entry) == set(model.output_names) and all(len(v) == len(x_test) for v in entry.values())

    cached = load_npz(path)
    if complete(cached):
        return cached
    with file_lock(path.with_suffix(".lock")):
        cached = load_npz(path)
        if complete(cached):
            return cached
        outputs = predict_outputs(model, x_test)
        save_npz_atomic(path, outputs)
    return outputs
