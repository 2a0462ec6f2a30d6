"""A user's own metric: a function of ``(labels, outputs) -> float`` named by a Hydra ``_target_``.

The function is resolved with Hydra's own ``hydra.utils.get_method`` (a dotted path) or
``hydra.utils.instantiate(..., _partial_=True)`` (a mapping with ``_target_`` and keyword
arguments bound to the function), like every other ``_target_`` of the configs. Nothing is known
of its form, so it is compared with the ``paired_bootstrap``: it runs on each resample of the
samples for both models (``2 * n_resamples + 2`` calls). For example, in a task config::

    metric:
      _target_: sklearn.metrics.f1_score
      average: macro

with outputs that are class ids, or a function of your own (``mypackage.metrics.iou_at_50``)
that Python can import in the job's environment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from precision_sweep.errors import UserInputError
from precision_sweep.targets import resolve_function
from precision_sweep.metrics.tasks.paired import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    MetricComparison,
    paired_bootstrap,
)


def resolve(metric: str | Mapping[str, Any]) -> Callable[[Any, Any], float]:
    """The function a ``_target_`` names: a dotted path, or a mapping with ``_target_`` and
    keyword arguments to bind. A UserInputError when it cannot be imported or is not callable."""
    from hydra.utils import instantiate

    target = metric if isinstance(metric, str) else dict(metric).get("_target_")
    if not isinstance(target, str) or not target:
        raise UserInputError(
            f"The task's metric {metric!r} names no function: give it as a dotted path string or as "
            "a mapping whose _target_ is one, e.g. metric: {_target_: mypackage.metrics.my_metric}."
        )
    function = resolve_function(target, "the metric's _target_", "a function of (labels, outputs)")
    if isinstance(metric, str) or len(metric) == 1:
        return function
    return instantiate(dict(metric), _partial_=True)


def _take(data: Any, indices: np.ndarray | None) -> Any:
    """The samples at ``indices`` of an array, a list, or a mapping of them (several outputs)."""
    if indices is None:
        return data
    if isinstance(data, Mapping):
        return {key: _take(value, indices) for key, value in data.items()}
    if isinstance(data, np.ndarray):
        return data[indices]
    return [data[i] for i in indices]


def compare(
    labels: Any,
    outputs: Any,
    baseline_outputs: Any,
    *,
    metric: str | Mapping[str, Any],
    name: str | None = None,
    higher_is_better: bool = True,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[MetricComparison, ...]:
    """The user's metric of the variant against the baseline, with the paired bootstrap.

    Parameters
    ----------
    labels, outputs, baseline_outputs
        One entry per sample: arrays (indexed on their first axis), lists, or mappings of them
        (e.g. several named outputs); the function receives the same kinds.
    metric
        The ``_target_`` (see :func:`resolve`).
    name
        The name to log (default: the function's name).
    higher_is_better
        False for an error or a loss.
    """
    function = resolve(metric)
    target = metric if isinstance(metric, str) else metric["_target_"]
    name = name or target.rpartition(".")[2]
    n = len(labels)

    def value(data, indices) -> float:
        result = function(_take(labels, indices), _take(data, indices))
        if np.ndim(result) != 0:
            raise UserInputError(
                f"The metric {target!r} returned {type(result).__name__} of shape {np.shape(result)}; a "
                "task metric must return one number for a set of samples. Make it average (or "
                "otherwise reduce) over the samples it is given."
            )
        return float(result)

    def evaluate(indices):
        return np.array([[value(outputs, indices)], [value(baseline_outputs, indices)]])

    return paired_bootstrap([name], evaluate, n, higher_is_better=higher_is_better,
                            confidence=confidence, n_resamples=n_resamples, seed=seed)
