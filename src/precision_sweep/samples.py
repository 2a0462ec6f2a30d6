"""The samples of a model with several inputs: one array per named input, one row per sample.

A single-input model's samples stay one ``np.ndarray``. :class:`NamedSamples` is what a model
with several inputs (a text classifier's ``token_ids`` and ``padding_mask``) takes: the arrays
share their first dimension, and indexing selects the same samples from each, so the split,
``dataset.limit``, batching and the baseline treat both kinds alike. The program and Keras
both take the arrays by input name (:meth:`NamedSamples.feeds`).
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np


class NamedSamples:
    """Arrays by input name, with the same number of samples (first dimension) each."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.arrays = {str(name): np.asarray(array) for name, array in arrays.items()}
        lengths = {name: len(array) for name, array in self.arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the inputs hold different numbers of samples: {lengths}")

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def __getitem__(self, index) -> NamedSamples:
        """The samples at ``index`` (a slice, or integer positions), from every input."""
        return NamedSamples({name: array[index] for name, array in self.arrays.items()})

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    @property
    def names(self) -> list[str]:
        return list(self.arrays)

    def feeds(self) -> dict[str, np.ndarray]:
        """The inputs by name, as ``predict`` of Keras, Core ML and the emulator take them."""
        return dict(self.arrays)

    def hash_parts(self) -> list[np.ndarray]:
        """The arrays in a fixed (name) order, for content hashes."""
        return [self.arrays[name] for name in sorted(self.arrays)]

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}: {a.dtype}{list(a.shape)}" for name, a in self.arrays.items())
        return f"NamedSamples({parts})"


def feeds_of(x, input_name: str) -> dict[str, np.ndarray]:
    """What a program's ``predict`` takes for samples ``x``: its inputs by name."""
    return x.feeds() if isinstance(x, NamedSamples) else {input_name: x}


def hash_parts(x) -> list[np.ndarray]:
    """The arrays of samples ``x`` for a content hash (one array, or each input's by name)."""
    return x.hash_parts() if isinstance(x, NamedSamples) else [x]
