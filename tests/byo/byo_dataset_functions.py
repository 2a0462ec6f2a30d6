"""User dataset functions for ``dataset=python`` in the tests (``dataset.target=byo_dataset_functions.<name>``):
importable because pytest puts ``tests/byo`` on ``sys.path``."""

from __future__ import annotations

import numpy as np


def arrays(n: int = 20, features: int = 6, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The samples and class labels every function here serves."""
    rng = np.random.default_rng(7)
    return rng.normal(size=(n, features)).astype(np.float32), (np.arange(n) % classes).astype(np.int64)


def tf_batches(n: int = 20, batch: int = 8):
    """A batched tf.data.Dataset of (inputs, labels), with a short last batch."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(arrays(n)).batch(batch)


def generator_batches(n: int = 20, batch: int = 8):
    """A plain generator of numpy (inputs, labels) batches."""
    x, y = arrays(n)
    for start in range(0, n, batch):
        yield x[start:start + batch], y[start:start + batch]


def single_samples(n: int = 20):
    """One (inputs, label) sample at a time, without a batch dimension."""
    x, y = arrays(n)
    return [(x[i], y[i]) for i in range(n)]


def not_a_dataset(n: int = 20):
    """Returns the wrong thing: a number."""
    return n
