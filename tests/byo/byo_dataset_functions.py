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


TEXT_VOCABULARY, TEXT_LENGTH, TEXT_CLASSES = 40, 10, 3


def text_arrays(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids and padding masks (int32, zeros past each text's length) and classes: a text's
    class is its first token modulo 3."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, TEXT_LENGTH + 1, size=n)
    mask = (np.arange(TEXT_LENGTH)[None] < lengths[:, None]).astype(np.int32)
    tokens = rng.integers(1, TEXT_VOCABULARY, size=(n, TEXT_LENGTH)).astype(np.int32) * mask
    return tokens, mask, (tokens[:, 0] % TEXT_CLASSES).astype(np.int64)


def text_batches(batch: int = 50):
    """Batches of a model with two named inputs: ({"token_ids": ..., "padding_mask": ...}, labels)."""
    tokens, mask, y = text_arrays(n=200, seed=1)
    return [({"token_ids": tokens[i:i + batch], "padding_mask": mask[i:i + batch]}, y[i:i + batch])
            for i in range(0, len(y), batch)]
