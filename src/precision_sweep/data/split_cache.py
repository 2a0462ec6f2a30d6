"""What a dataset load needs scikit-learn for, computed once and kept as plain arrays.

scikit-learn supplies the embedded digits and the seeded (stratified) train/test split.
Importing it costs about 2 s per process, more than a warm digits job's own work, and every
worker of a parallel sweep paid it. This cache keeps the digits arrays and each split's
indices as ``.npy`` files under ``paths.cache/datasets`` (read with ``allow_pickle=False``:
reading them runs no code), keyed by scikit-learn's version and everything the split depends
on (the labels, the test size, the seed). The split is computed on sample indices, so the same
indices select the same samples as splitting the arrays themselves would.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np

from precision_sweep.cache import load_npy, save_npy_atomic
from precision_sweep.hashing import hash_arrays

REVISION = 1  # bump when what is stored changes


def _sklearn_version() -> str:
    return metadata.version("scikit-learn")


def digits(cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's digits: images (N, 8, 8) float32 in 0..16, labels int64, class names."""
    folder = Path(cache_dir) / "datasets" / f"digits-{_sklearn_version()}-r{REVISION}" if cache_dir else None
    if folder is not None:
        images, labels, names = (load_npy(folder / f"{part}.npy") for part in ("images", "labels", "names"))
        if images is not None and labels is not None and names is not None and len(images) == len(labels):
            return images, labels, [str(name) for name in names]
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bunch.images.astype(np.float32), bunch.target.astype(np.int64)
    names = np.asarray(bunch.target_names)
    if folder is not None:
        for part, array in (("images", images), ("labels", labels), ("names", names)):
            save_npy_atomic(folder / f"{part}.npy", array)
    return images, labels, [str(name) for name in names]


def split_indices(y: np.ndarray, test_size: float, seed: int, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of the seeded split of samples labelled ``y``: stratified when
    every class allows it, as scikit-learn's ``train_test_split`` draws them."""
    key = hash_arrays([np.asarray(y)], extra=(float(test_size), int(seed), _sklearn_version(), REVISION))[:24]
    path = Path(cache_dir) / "datasets" / "splits" / f"{key}.npy" if cache_dir else None
    stored = load_npy(path) if path is not None else None
    if stored is not None and _is_split_of(stored, len(y)):
        n_train = int(stored[0])
        return stored[1 : 1 + n_train], stored[1 + n_train :]
    train, test = _draw(y, test_size, seed)
    if path is not None:
        save_npy_atomic(path, np.concatenate([[len(train)], train, test]).astype(np.int64))
    return train, test


def _is_split_of(stored: np.ndarray, n: int) -> bool:
    """A stored split: [n_train, train..., test...], together every sample exactly once."""
    if stored.dtype != np.int64 or stored.ndim != 1 or len(stored) != n + 1 or not 0 <= stored[0] <= n:
        return False
    return bool(np.array_equal(np.sort(stored[1:]), np.arange(n)))


def _draw(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    order = np.arange(len(y))
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    try:
        train, test = train_test_split(order, test_size=test_size, random_state=seed, stratify=stratify)
    except ValueError:  # too few samples per class for a stratified split of that size
        train, test = train_test_split(order, test_size=test_size, random_state=seed)
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
