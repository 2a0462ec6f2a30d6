"""Stage 2: the FP32 TensorFlow baseline predictions on the test split.

Cached by model and dataset content hashes (and the TensorFlow and Keras versions, which run
the model), so a sweep computes them once however many jobs it runs. A cached entry is read
without importing TensorFlow or loading the model (a model read from its card loads on a miss).

Samples streamed from their files (:class:`~precision_sweep.data.streamed.StreamedImages`) are
predicted a slice of :data:`STREAMED_SLICE` at a time, each slice saved as it finishes (a
:class:`~precision_sweep.runtime.batches.BatchStore` beside the entry): a job stopped there
resumes at the first slice not saved, and memory holds one slice of images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from precision_sweep.cache import file_lock, load_npy, load_npz, save_npy_atomic, save_npz_atomic
from precision_sweep.data.models import LoadedModel, predict_outputs, predict_probabilities
from precision_sweep.data.streamed import StreamedImages
from precision_sweep.data.versions import library_version
from precision_sweep.runtime.batches import BatchStore
from precision_sweep.runtime.progress import SampleProgress

STREAMED_SLICE = 256


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
        outputs = _predict(model, x_test, path, lambda part: {"output": predict_probabilities(model, part)})["output"]
        save_npy_atomic(path, outputs)
        _slices(path).remove()
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
        outputs = _predict(model, x_test, path, lambda part: predict_outputs(model, part))
        save_npz_atomic(path, outputs)
        _slices(path).remove()
    return outputs


def _slices(path: Path) -> BatchStore:
    """Where the slices of the entry ``path`` are saved while it is computed."""
    return BatchStore(path.with_name(path.stem + ".slices"))


def _predict(model: LoadedModel, x_test, path: Path, predict) -> dict[str, np.ndarray]:
    """``predict(x_test)`` (a dict of arrays); for streamed samples, slice by slice, each saved
    in :func:`_slices` of the entry ``path`` and read back from there by a later run (the
    caller removes them once it has saved the whole)."""
    if not isinstance(x_test, StreamedImages):
        return predict(x_test)
    store = _slices(path)
    meter = SampleProgress(f"TF baseline ({model.name})", len(x_test), bar=True)
    parts = []
    for start in range(0, len(x_test), STREAMED_SLICE):
        part = store.load(start)
        evaluated = part is None
        if evaluated:
            part = {name: np.asarray(value, dtype=np.float32) for name, value in predict(x_test[start:start + STREAMED_SLICE]).items()}
            store.save(start, part)
        parts.append(part)
        meter.update(min(STREAMED_SLICE, len(x_test) - start), evaluated)
    meter.close()
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
