"""The classifier output op (spec: ops/defs/iOS15/classify.py).

``classify(probabilities, classes)`` ends a program converted with ``ct.ClassifierConfig``:
its outputs are the predicted class label (``classLabel``, what an app reads) and the
dictionary of class -> probability (``classLabel_probs``). The spec defines it for one sample
(``len(classes) == prod(probabilities.shape)``); the emulator runs a batch through the
program, so the last axis holds the classes and each row is one sample's prediction.

Values, not Python dicts: the label output is an array of the class values (``str`` or
``int64``, as the spec's ``ClassT``), the dictionary output the probabilities in the order of
``classes`` (the spec's ``ProbT`` is fp32; Core ML hands the dictionary out as doubles, an
exact widening). The predicted label is the class of the largest probability; among equal
largest probabilities the first in ``classes`` order is taken (Core ML does not document its
tie rule; ties need bit-equal probabilities).
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.registry import kernel


@kernel("classify")
def classify(probabilities, classes):
    classes = np.asarray(classes)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    rows = probabilities.reshape(-1, classes.size) if probabilities.ndim < 2 else probabilities
    if rows.shape[-1] != classes.size:
        raise ValueError(
            f"classify: {classes.size} classes for probabilities of shape {probabilities.shape}"
        )
    return classes[np.argmax(rows, axis=-1)], rows
