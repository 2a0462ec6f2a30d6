"""The paired comparison every task shares: one task-neutral result, and two ways to its interval.

Both models are evaluated on the same samples, so the comparison is paired. A task's metric
reaches its confidence interval in one of two ways, recorded as ``method``:

``paired_per_sample``
    The metric is the mean of one value per sample (right or not, absolute error, a query's hit
    at k). The interval is the paired percentile bootstrap of that mean, the rule of
    :mod:`precision_sweep.metrics.statistics`: 0/1 values go through its
    :func:`~precision_sweep.metrics.statistics.paired_statistics` (which adds McNemar's p and the
    flips), real values through the same scipy call (:func:`paired_per_sample`).
``paired_bootstrap``
    The metric is not a mean over samples (RMSE, mIoU, pixel accuracy, mAP, a user's function):
    samples are drawn with replacement, the same draws for both models; both metrics are
    recomputed on each resample and the interval is the percentile interval of the resampled
    deltas. Every such metric draws from :func:`resample_indices`, so one seed gives the same
    resamples whatever the task. Metrics that are a function of per-sample sums (a confusion
    matrix, sums of squared errors) take the fast path :func:`paired_bootstrap_sums`: a
    resample's sums are its per-sample statistics weighted by how often it drew each sample.

The sign convention is one for all tasks: ``metric_delta`` is the variant's metric minus the
baseline's, in the metric's own units, whichever way the metric improves; ``higher_is_better``
says which way that is (False for MAE and RMSE, where a positive delta is a loss), and
:attr:`MetricComparison.gain` turns any delta into "positive is better".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from precision_sweep.metrics.statistics import BATCH_ELEMENTS, mean_delta_interval

METHODS = ("paired_per_sample", "paired_bootstrap")
DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class MetricComparison:
    """One metric of a variant against the FP32 baseline on the same samples.

    Attributes
    ----------
    metric
        The metric's name as logged (``accuracy``, ``top5_accuracy``, ``mae``, ``rmse``,
        ``miou``, ``pixel_accuracy``, ``map_50_95``, ``map_50``, ``recall_at_1``, a user's name).
    value, baseline_value
        The metric of the variant and of the baseline on all samples.
    metric_delta
        ``value - baseline_value`` in the metric's units (see ``higher_is_better`` for its sign).
    ci_low, ci_high
        The ``confidence`` interval of ``metric_delta``.
    higher_is_better
        True when a larger metric is better (accuracy, mIoU, mAP, recall); False for errors.
    method
        ``paired_per_sample`` or ``paired_bootstrap`` (module docstring).
    n_resamples, seed
        The bootstrap's resamples and the seed of its generator: the interval is reproducible.
    n_samples
        Samples compared (images, queries, rows).
    details
        What the method adds besides the interval (``mcnemar_p``, ``flips_to_wrong``,
        ``flips_to_right`` for 0/1 per-sample values; ``resamples_undefined`` where some
        resamples had no value, e.g. no ground-truth box).
    """

    metric: str
    value: float
    baseline_value: float
    metric_delta: float
    ci_low: float
    ci_high: float
    higher_is_better: bool
    method: str
    n_resamples: int
    seed: int
    confidence: float
    n_samples: int
    details: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {METHODS}")
        object.__setattr__(self, "details", dict(self.details))

    @property
    def gain(self) -> float:
        """The delta with "positive is better" whichever way the metric improves."""
        return self.metric_delta if self.higher_is_better else -self.metric_delta

    @property
    def gain_ci(self) -> tuple[float, float]:
        """The interval of :attr:`gain` (low, high)."""
        if self.higher_is_better:
            return self.ci_low, self.ci_high
        return -self.ci_high, -self.ci_low

    def as_metrics(self, primary: bool = False) -> dict[str, float]:
        """Numbers to log: ``<metric>``, ``baseline_<metric>``, ``<metric>_delta``,
        ``<metric>_delta_ci_low``, ``<metric>_delta_ci_high`` and ``<metric>_<detail>``; with
        ``primary`` also the task-neutral ``metric_delta``, ``metric_delta_ci_low`` and
        ``metric_delta_ci_high`` that every task logs for its first metric.

        For ``accuracy`` the first five are the names (and the values: same rule, same seed)
        that the classification job logs already.
        """
        shown = {
            self.metric: self.value,
            f"baseline_{self.metric}": self.baseline_value,
            f"{self.metric}_delta": self.metric_delta,
            f"{self.metric}_delta_ci_low": self.ci_low,
            f"{self.metric}_delta_ci_high": self.ci_high,
            **{f"{self.metric}_{key}": float(value) for key, value in self.details.items()},
        }
        if primary:
            shown.update(metric_delta=self.metric_delta, metric_delta_ci_low=self.ci_low,
                         metric_delta_ci_high=self.ci_high)
        return shown


def resample_indices(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap draws: ``n_resamples`` rows of ``n`` sample indices drawn with replacement.

    Yielded in batches of rows (``(rows, n)`` int arrays) so that memory stays bounded for large
    ``n``; the same ``(n, n_resamples, seed)`` always yields the same draws.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, BATCH_ELEMENTS // max(n, 1))
    done = 0
    while done < n_resamples:
        take = min(rows, n_resamples - done)
        yield rng.integers(0, n, size=(take, n))
        done += take


def resample_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` samples was drawn in each row of ``indices`` (``(rows, n)``)."""
    rows = indices.shape[0]
    flat = (indices + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n)


def percentile_interval(deltas: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of resampled deltas (scipy's ``method="percentile"``); resamples
    whose delta is undefined (NaN) are left out."""
    deltas = np.asarray(deltas, dtype=np.float64)
    deltas = deltas[~np.isnan(deltas)]
    if deltas.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(deltas, [tail, 100 - tail])
    return float(low), float(high)


def paired_per_sample(
    metric: str,
    variant: np.ndarray,
    baseline: np.ndarray,
    *,
    higher_is_better: bool,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> MetricComparison:
    """Compare a metric that is the mean of one value per sample.

    Parameters
    ----------
    metric
        The metric's name.
    variant, baseline
        The per-sample value of each model, one per sample in the same order. Booleans (right
        or not, hit or not) go through :func:`~precision_sweep.metrics.statistics.paired_statistics`
        and add McNemar's p and the flips to ``details``; real values get the same paired
        percentile bootstrap of the mean's delta.
    higher_is_better, confidence, n_resamples, seed
        As in :class:`MetricComparison`.
    """
    from precision_sweep.metrics.statistics import paired_statistics

    variant, baseline = np.asarray(variant), np.asarray(baseline)
    if variant.shape != baseline.shape or variant.ndim != 1:
        raise ValueError(f"per-sample values {variant.shape} and {baseline.shape} must be one per sample")
    details: dict[str, float] = {}
    if variant.dtype == bool and baseline.dtype == bool:
        # Right/wrong per sample is exactly what paired_statistics compares: a sample is "right"
        # when its value equals the label 1.
        stats = paired_statistics(variant.astype(np.int8), baseline.astype(np.int8),
                                  np.ones(len(variant), np.int8), confidence, n_resamples, seed)
        low, high = stats["accuracy_delta_ci_low"], stats["accuracy_delta_ci_high"]
        details = {key: stats[key] for key in ("mcnemar_p", "flips_to_wrong", "flips_to_right")}
    else:
        low, high = mean_delta_interval(variant.astype(np.float64), baseline.astype(np.float64),
                                         confidence, n_resamples, seed)
    value, base = float(np.mean(variant)), float(np.mean(baseline))
    return MetricComparison(metric, value, base, value - base, low, high, higher_is_better,
                            "paired_per_sample", n_resamples, seed, confidence, len(variant), details)


def paired_bootstrap_sums(
    metric: str,
    variant: np.ndarray,
    baseline: np.ndarray,
    aggregate: Callable[[np.ndarray], np.ndarray],
    *,
    higher_is_better: bool,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> MetricComparison:
    """Compare a metric that is a function of per-sample statistics summed over the samples.

    Parameters
    ----------
    metric
        The metric's name.
    variant, baseline
        ``(n, m)`` per-sample statistics of each model (a flattened confusion matrix, a sum of
        squared errors and an element count), samples in the same order.
    aggregate
        The metric from summed statistics, vectorized: ``(rows, m) -> (rows,)``.
    higher_is_better, confidence, n_resamples, seed
        As in :class:`MetricComparison`.

    Notes
    -----
    A resample's sums are ``counts @ statistics``, ``counts`` being how often it drew each
    sample: the metric is recomputed exactly on every resample without copying samples.
    """
    variant, baseline = np.asarray(variant, np.float64), np.asarray(baseline, np.float64)
    if variant.shape != baseline.shape or variant.ndim != 2:
        raise ValueError(f"per-sample statistics {variant.shape} and {baseline.shape} must be (n, m) alike")
    n, m = variant.shape
    both = np.concatenate([variant, baseline], axis=1)
    value, base = (float(aggregate(stats.sum(axis=0)[None])[0]) for stats in (variant, baseline))
    deltas = []
    for indices in resample_indices(n, n_resamples, seed):
        sums = resample_counts(indices, n).astype(np.float64) @ both
        deltas.append(aggregate(sums[:, :m]) - aggregate(sums[:, m:]))
    deltas = np.concatenate(deltas)
    low, high = percentile_interval(deltas, confidence)
    return MetricComparison(metric, value, base, value - base, low, high, higher_is_better,
                            "paired_bootstrap", n_resamples, seed, confidence, n,
                            _undefined(deltas))


def paired_bootstrap(
    metrics: Sequence[str],
    evaluate: Callable[[np.ndarray | None], np.ndarray],
    n: int,
    *,
    higher_is_better: bool,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[MetricComparison, ...]:
    """Compare metrics of any form by recomputing them on each resample.

    Parameters
    ----------
    metrics
        Names of the metrics ``evaluate`` returns, in its order.
    evaluate
        ``evaluate(indices)`` gives the metrics of the variant and of the baseline on the
        samples at ``indices`` (repeats included; ``None`` for all samples once) as an array
        ``(2, len(metrics))``: row 0 the variant, row 1 the baseline. NaN where a metric is
        undefined on a resample (such resamples are left out of the interval and counted).
    n
        Number of samples.
    higher_is_better, confidence, n_resamples, seed
        As in :class:`MetricComparison`.
    """
    point = np.asarray(evaluate(None), dtype=np.float64).reshape(2, len(metrics))
    deltas = []
    for batch in resample_indices(n, n_resamples, seed):
        for indices in batch:
            values = np.asarray(evaluate(indices), dtype=np.float64).reshape(2, len(metrics))
            deltas.append(values[0] - values[1])
    deltas = np.asarray(deltas).reshape(n_resamples, len(metrics))
    results = []
    for j, name in enumerate(metrics):
        low, high = percentile_interval(deltas[:, j], confidence)
        value, base = float(point[0, j]), float(point[1, j])
        results.append(MetricComparison(name, value, base, value - base, low, high, higher_is_better,
                                        "paired_bootstrap", n_resamples, seed, confidence, n,
                                        _undefined(deltas[:, j])))
    return tuple(results)


def _undefined(deltas: np.ndarray) -> dict[str, float]:
    missing = int(np.isnan(deltas).sum())
    return {"resamples_undefined": missing} if missing else {}
