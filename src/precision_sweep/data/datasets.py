"""Labeled datasets: the embedded scikit-learn digits (more sources plug in by ``source``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from precision_sweep.errors import UserInputError
from precision_sweep.hashing import hash_arrays


@dataclass
class Dataset:
    """Train/test arrays in the model's input layout (NHWC images), integer labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] = field(default_factory=list)

    @property
    def content_hash(self) -> str:
        """Hash of the evaluated (test) arrays: runs on different data never compare silently."""
        return hash_arrays([self.x_test, self.y_test])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def _digits(cfg) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) * np.float32(cfg.scale))[..., None]  # (N, 8, 8, 1)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=cfg.test_size, random_state=cfg.seed, stratify=y
    )
    if cfg.limit:
        x_test, y_test = x_test[: cfg.limit], y_test[: cfg.limit]
    return Dataset(
        name=cfg.name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=[str(c) for c in bunch.target_names],
    )


LOADERS = {"digits": _digits}


def load_dataset(cfg) -> Dataset:
    """Load the dataset a ``dataset`` config describes."""
    loader = LOADERS.get(cfg.source)
    if loader is None:
        raise UserInputError(
            f"Unknown dataset source {cfg.source!r} in dataset={cfg.name}. "
            f"Set dataset.source to one of: {', '.join(sorted(LOADERS))}."
        )
    return loader(cfg)
