"""Which loader reads a ``dataset`` config: the array sources of :mod:`.datasets` (``digits``,
``npz``, ``image_folder``) or the kinds users keep their data in, of :mod:`.sources` (``python``,
``tfrecord``, ``tfds_folder``)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from precision_sweep.data.datasets import LOADERS, Dataset, InputSpec
from precision_sweep.data.sources import LOADERS as SOURCE_LOADERS
from precision_sweep.data.validate import check_dataset_path, check_streaming
from precision_sweep.errors import UserInputError

# Sources whose labels may be any kind the task reads (classes, ids or values).
ANY_LABELS = ("npz", *SOURCE_LOADERS)
# The last npz dataset loaded in this process, by what decides its content (see _reuse_key).
_LAST: dict = {}


def load_dataset(cfg, spec: InputSpec | None = None, cache_dir: str | Path | None = None,
                 labels: str = "classes") -> Dataset:
    """Load the dataset a ``dataset`` config describes, preprocessed for a model input ``spec``,
    its labels read as the task's ``labels`` kind (:class:`~precision_sweep.metrics.schema.LabelKind`).

    With a ``cache_dir`` the digits arrays and the split's indices are kept there
    (:mod:`~precision_sweep.data.split_cache`), so a later load imports no scikit-learn.
    """
    cache = Path(cache_dir) if cache_dir else None
    source = str(cfg.source)
    check_streaming(cfg)
    key = _reuse_key(cfg, spec, cache, labels)
    if key is not None and key in _LAST:
        return _reusable(_LAST[key])
    dataset = _load(cfg, spec, cache, source, labels)
    if key is not None:
        _LAST.clear()  # one dataset kept: a sweep's jobs read the same one
        _LAST[key] = _frozen(dataset)
        dataset.content_hash  # hashed once: the copies share the hash with the arrays
        return _reusable(dataset)
    return dataset


def _reuse_key(cfg, spec: InputSpec | None, cache: Path | None, labels) -> tuple | None:
    """What decides an npz dataset's content, or None for other sources (read every time).

    The jobs of a sweep that run in one process (the basic launcher, a worker given several
    jobs) load the same file: reading a 320-image 224x224 file and hashing its test split cost
    0.27 s a job. The key holds the file's identity (path, size, modification time), the whole
    config and the model's input spec, so a changed file or setting loads anew."""
    if str(cfg.source) != "npz":
        return None
    path = check_dataset_path(cfg)
    stat = path.stat()
    config = OmegaConf.to_yaml(cfg, resolve=True) if isinstance(cfg, DictConfig) else repr(vars(cfg))
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, config, repr(spec), str(cache), str(labels))


def _frozen(dataset: Dataset) -> Dataset:
    """``dataset`` with its arrays read-only: kept for the next job, nothing may change them."""
    for value in vars(dataset).values():
        arrays = value.values() if hasattr(value, "values") and not isinstance(value, np.ndarray) else [value]
        for array in arrays:
            if isinstance(array, np.ndarray):
                array.setflags(write=False)
    return dataset


def _reusable(dataset: Dataset) -> Dataset:
    """A job's own copy of a kept dataset: the same (read-only) arrays and their hash, its own
    attributes (the job sets ``feed``) and run parameters."""
    job_copy = copy.copy(dataset)
    job_copy.run_params = dict(dataset.run_params)
    return job_copy


def _load(cfg, spec: InputSpec | None, cache: Path | None, source: str, labels) -> Dataset:
    if source in SOURCE_LOADERS:
        return SOURCE_LOADERS[source](cfg, spec or InputSpec(), cache, str(labels))
    if source in ANY_LABELS:
        return LOADERS[source](cfg, spec or InputSpec(), cache, str(labels))
    if str(labels) != "classes":
        raise UserInputError(
            f"dataset={cfg.name} (source {source}) holds class labels, but the task reads labels that are "
            f"{labels}. Store your samples and labels in an npz file (np.savez(path, x=samples, y=labels)) and use "
            "dataset=npz dataset.path=<file> (or dataset=tfrecord|tfds_folder|python), or choose task=classification."
        )
    return LOADERS[source](cfg, spec or InputSpec(), cache)
