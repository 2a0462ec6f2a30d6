"""Which loader reads a ``dataset`` config: the array sources of :mod:`.datasets` (``digits``,
``npz``, ``image_folder``) or the kinds users keep their data in, of :mod:`.sources` (``python``,
``tfrecord``, ``tfds_folder``)."""

from __future__ import annotations

from pathlib import Path

from precision_sweep.data.datasets import LOADERS, Dataset, InputSpec
from precision_sweep.data.sources import LOADERS as SOURCE_LOADERS
from precision_sweep.data.validate import check_streaming
from precision_sweep.errors import UserInputError

# Sources whose labels may be any kind the task reads (classes, ids or values).
ANY_LABELS = ("npz", *SOURCE_LOADERS)


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
