"""Regression: mean absolute error and root mean squared error of real-valued outputs.

Labels and outputs hold the same number of values per sample (a scalar, a keypoint vector, a
depth map); both metrics run over all values. MAE is the mean of each sample's absolute
errors (every sample holds as many values), so it is compared ``paired_per_sample``. RMSE is
the square root of a mean, which no per-sample value averages to: it is compared with the
``paired_bootstrap`` over per-sample sums of squared errors. Both are errors: lower is better,
and a positive ``metric_delta`` is a loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from precision_sweep.errors import UserInputError
from precision_sweep.metrics.tasks.paired import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    MetricComparison,
    paired_bootstrap_sums,
    paired_per_sample,
)

METRICS = ("mae", "rmse")


def check(labels: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and outputs as ``(n, values)`` float64 arrays; a UserInputError where they do not
    hold the same number of values per sample or a label is not a finite number."""
    labels, outputs = np.asarray(labels, dtype=np.float64), np.asarray(outputs, dtype=np.float64)
    if labels.ndim == 0 or outputs.ndim == 0 or len(labels) != len(outputs):
        raise UserInputError(
            f"Regression needs one label and one output per sample, but the labels have shape "
            f"{labels.shape} and the outputs {outputs.shape}. Give the dataset one target per sample "
            "in the order of its inputs."
        )
    n = len(labels)
    per_label, per_output = labels.reshape(n, -1), outputs.reshape(n, -1)
    if per_label.shape[1] != per_output.shape[1]:
        raise UserInputError(
            f"Regression labels hold {per_label.shape[1]} values per sample (shape {labels.shape[1:]}) "
            f"but the model outputs {per_output.shape[1]} (shape {outputs.shape[1:]}). Give each sample "
            "as many targets as the output it is compared with (e.g. resize depth maps to the "
            "output's size), or read the output that predicts them."
        )
    finite = np.isfinite(per_label)
    if not finite.all():
        raise UserInputError(
            f"{int((~finite).sum())} regression labels are not finite numbers (first in sample "
            f"{int(np.argmax(~finite.all(axis=1)))}). Remove those samples or fill their targets."
        )
    return per_label, per_output


def absolute_errors(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Each sample's mean absolute error over its values."""
    labels, outputs = check(labels, outputs)
    return np.mean(np.abs(outputs - labels), axis=1)


def squared_error_sums(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """``(n, 2)``: each sample's sum of squared errors and its number of values."""
    labels, outputs = check(labels, outputs)
    return np.stack([np.sum((outputs - labels) ** 2, axis=1),
                     np.full(len(labels), labels.shape[1], np.float64)], axis=1)


def rmse_of_sums(sums: np.ndarray) -> np.ndarray:
    """RMSE from summed :func:`squared_error_sums` rows: ``(rows, 2) -> (rows,)``."""
    return np.sqrt(sums[:, 0] / sums[:, 1])


def mae(labels: np.ndarray, outputs: np.ndarray) -> float:
    return float(np.mean(absolute_errors(labels, outputs)))


def rmse(labels: np.ndarray, outputs: np.ndarray) -> float:
    return float(rmse_of_sums(squared_error_sums(labels, outputs).sum(axis=0)[None])[0])


def compare(
    labels: np.ndarray,
    outputs: np.ndarray,
    baseline_outputs: np.ndarray,
    *,
    metrics: Sequence[str] = METRICS,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[MetricComparison, ...]:
    """MAE and RMSE of the variant against the baseline, in the order of ``metrics`` (the first
    is the task's primary metric)."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise UserInputError(f"Unknown regression metric {sorted(unknown)}: choose from {list(METRICS)}.")
    options = dict(higher_is_better=False, confidence=confidence, n_resamples=n_resamples, seed=seed)
    results = []
    for name in metrics:
        if name == "mae":
            results.append(paired_per_sample("mae", absolute_errors(labels, outputs),
                                             absolute_errors(labels, baseline_outputs), **options))
        else:
            results.append(paired_bootstrap_sums("rmse", squared_error_sums(labels, outputs),
                                                 squared_error_sums(labels, baseline_outputs),
                                                 rmse_of_sums, **options))
    return tuple(results)
