"""Classification: top-1 and top-k accuracy of class scores against class-index labels.

Right or wrong is decided per sample, so the comparison is ``paired_per_sample``: the paired
bootstrap and McNemar test of :mod:`precision_sweep.metrics.statistics` on the per-sample
correctness. Ties between scores go to the lower class index, as ``numpy.argmax`` (and so the
job's top-1) breaks them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from precision_sweep.errors import UserInputError
from precision_sweep.metrics.tasks.paired import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    MetricComparison,
    paired_per_sample,
)


def check(labels: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``(n,)`` class indices and outputs ``(n, classes)`` scores (or ``(n,)`` predicted
    class indices, e.g. a classifier's ``classLabel``), as arrays; a UserInputError where the
    labels do not fit the outputs."""
    labels, outputs = np.asarray(labels), np.asarray(outputs)
    if labels.ndim != 1 or outputs.ndim not in (1, 2) or len(outputs) != len(labels):
        raise UserInputError(
            f"Classification needs one class index per sample and one row of class scores per "
            f"sample, but the labels have shape {labels.shape} and the outputs {outputs.shape}. "
            "Give labels as integer class indices (not one-hot) and read the model's class-score "
            "output, or choose the task that matches the model."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.mod(labels, 1) == 0):
            raise UserInputError(
                f"Classification labels must be class indices, but they hold non-integer values "
                f"({labels[np.mod(labels, 1) != 0][:3].tolist()}). Use task=regression for real-valued targets."
            )
        labels = labels.astype(np.int64)
    n_classes = outputs.shape[1] if outputs.ndim == 2 else None
    bad = (labels < 0) | (labels >= n_classes) if n_classes else labels < 0
    if bad.any():
        allowed = f"the model's {n_classes} classes (0..{n_classes - 1})" if n_classes else "0 and above"
        raise UserInputError(
            f"{int(bad.sum())} classification labels lie outside {allowed} (first: sample "
            f"{int(np.argmax(bad))}, label {int(labels[bad][0])}). Labels must be class indices in "
            "the model's output order: check the dataset's class list against the model's classes."
        )
    return labels, outputs


def correct(labels: np.ndarray, outputs: np.ndarray, k: int = 1) -> np.ndarray:
    """Whether each sample's label is among its ``k`` highest scores (bool per sample)."""
    labels, outputs = check(labels, outputs)
    if outputs.ndim == 1:
        if k != 1:
            raise UserInputError(
                f"Top-{k} accuracy needs class scores, but the outputs are predicted class "
                "indices. Read the model's score output, or ask for top-1 only."
            )
        return outputs.astype(np.int64) == labels
    if not 1 <= k <= outputs.shape[1]:
        raise UserInputError(
            f"Top-{k} accuracy needs k between 1 and the model's {outputs.shape[1]} classes. "
            "Lower k in the task's top_k."
        )
    if k == 1:
        return np.argmax(outputs, axis=1) == labels
    # the label's rank: scores above it, and equal scores at a lower index (argmax's tie rule)
    own = np.take_along_axis(outputs, labels[:, None], axis=1)
    lower_index = np.arange(outputs.shape[1])[None, :] < labels[:, None]
    rank = np.sum(outputs > own, axis=1) + np.sum((outputs == own) & lower_index, axis=1)
    return rank < k


def metric_name(k: int) -> str:
    """``accuracy`` for top-1 (the name the job logs today), ``top<k>_accuracy`` otherwise."""
    return "accuracy" if k == 1 else f"top{k}_accuracy"


def top_k_accuracy(labels: np.ndarray, outputs: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose label is among their ``k`` highest scores."""
    return float(np.mean(correct(labels, outputs, k)))


def compare(
    labels: np.ndarray,
    outputs: np.ndarray,
    baseline_outputs: np.ndarray,
    *,
    top_k: Sequence[int] = (1,),
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[MetricComparison, ...]:
    """Top-k accuracy of the variant against the baseline for each k in ``top_k`` (the first is
    the task's primary metric)."""
    return tuple(
        paired_per_sample(metric_name(k), correct(labels, outputs, k), correct(labels, baseline_outputs, k),
                          higher_is_better=True, confidence=confidence, n_resamples=n_resamples, seed=seed)
        for k in top_k
    )
