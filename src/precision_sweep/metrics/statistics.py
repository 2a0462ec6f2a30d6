"""Paired statistics of a variant against the FP32 baseline on the same samples.

Every sample is evaluated by both models, so the comparison is paired: the accuracy delta's
confidence interval comes from a paired bootstrap over samples, and the significance of the
difference from the exact McNemar test on the discordant pairs (samples exactly one of the two
models gets right). Names are the ones logged to MLflow: ``accuracy_delta_ci_low``,
``accuracy_delta_ci_high`` (fractions, like ``accuracy_delta``), ``mcnemar_p``,
``flips_to_wrong`` (baseline right, variant wrong) and ``flips_to_right``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def paired_statistics(
    predicted: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """Bootstrap CI of the accuracy delta, exact McNemar p-value and flip counts. With
    ``groups`` (correlated samples, e.g. shifted copies of one image) the CI resamples whole
    groups (see :func:`mean_delta_interval`).

    Parameters
    ----------
    predicted, reference
        Top-1 class of the variant and of the baseline, one per sample.
    labels
        True class per sample.
    confidence
        Confidence level of the interval (0.95 for a 95% interval).
    n_resamples, seed
        Bootstrap resamples and the seed of its generator: the interval is reproducible.

    Returns
    -------
    dict
        ``accuracy_delta_ci_low``, ``accuracy_delta_ci_high``, ``mcnemar_p``,
        ``flips_to_wrong``, ``flips_to_right``.
    """
    from scipy import stats

    variant_right = np.asarray(predicted) == np.asarray(labels)
    baseline_right = np.asarray(reference) == np.asarray(labels)
    to_wrong = int(np.sum(baseline_right & ~variant_right))
    to_right = int(np.sum(~baseline_right & variant_right))
    discordant = to_wrong + to_right
    mcnemar_p = 1.0 if discordant == 0 else float(stats.binomtest(to_right, discordant, 0.5).pvalue)

    low, high = mean_delta_interval(variant_right.astype(float), baseline_right.astype(float), confidence,
                                    n_resamples, seed, groups)
    return {
        "accuracy_delta_ci_low": low,
        "accuracy_delta_ci_high": high,
        "mcnemar_p": mcnemar_p,
        "flips_to_wrong": to_wrong,
        "flips_to_right": to_right,
    }


# Elements of one vectorized bootstrap batch (resamples x samples): scipy draws a
# (resamples, samples) index array and a resampled copy of the sample (16 bytes an element), so
# 2000 resamples of 50,000 samples in one batch take 1.6 GB; in batches of 1M elements, 16 MB.
BATCH_ELEMENTS = 1 << 20


def mean_delta_interval(variant: np.ndarray, baseline: np.ndarray, confidence: float, n_resamples: int,
                        seed: int, groups: np.ndarray | None = None) -> tuple[float, float]:
    """Paired percentile bootstrap interval of ``mean(variant) - mean(baseline)`` (scipy's
    ``stats.bootstrap``, seeded), in batches of resamples so memory stays bounded in the
    number of samples. The pairs are resampled together, so the statistic is the mean of the
    paired differences (one resampled array, not two). BCa is not used: it degenerates on
    mostly-zero paired differences.

    ``groups`` (one id per sample, e.g. ``Dataset.test_groups``: the shifted copies of one image)
    makes it a cluster bootstrap: whole groups are resampled, and the statistic is the resampled
    groups' summed difference over their sample count. Copies of one image err together, so
    resampling them as independent samples gives an interval too narrow by up to the square root
    of the group size."""
    low, high, _ = mean_delta_bootstrap(variant, baseline, confidence, n_resamples, seed, groups)
    return low, high


def mean_delta_bootstrap(variant: np.ndarray, baseline: np.ndarray, confidence: float, n_resamples: int, seed: int,
                         groups: np.ndarray | None = None) -> tuple[float, float, float]:
    """One bootstrap of :func:`mean_delta_interval`: its interval's ``(low, high)`` and the
    resamples' standard error (0 when every paired difference is the same). The standard error
    serves bounds at small levels (a Bonferroni bound over many candidates), where a percentile
    of a few thousand resamples would rest on one or two of them."""
    result = _bootstrap(variant, baseline, confidence, n_resamples, seed, groups)
    if isinstance(result, float):
        return result, result, 0.0
    return float(result.confidence_interval.low), float(result.confidence_interval.high), float(result.standard_error)


def _bootstrap(variant, baseline, confidence: float, n_resamples: int, seed: int, groups):
    """scipy's paired (cluster) bootstrap result of the mean difference; a float when every
    paired difference is the same (every resample has that delta: scipy would warn on it)."""
    from scipy import stats

    diff = np.asarray(variant, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if np.all(diff == diff[0]):
        return float(diff[0])
    samples, statistic = (diff,), np.mean
    if groups is not None:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        if inverse.max() + 1 < len(diff):
            samples = (np.bincount(inverse, weights=diff), np.bincount(inverse).astype(np.float64))

            def statistic(sums, counts, axis=-1):
                return np.sum(sums, axis=axis) / np.sum(counts, axis=axis)
    n = len(samples[0])
    batch = {"batch": max(1, BATCH_ELEMENTS // n)} if n * n_resamples > BATCH_ELEMENTS else {}
    return stats.bootstrap(
        samples, statistic, paired=len(samples) > 1, vectorized=True, confidence_level=confidence,
        n_resamples=n_resamples, method="percentile", **_seeded(seed), **batch,
    )


def _seeded(seed: int) -> dict:
    import inspect

    from scipy import stats

    # scipy >= 1.15 names the generator ``rng``; older releases ``random_state``.
    name = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def per_class_deltas(
    predicted: np.ndarray, reference: np.ndarray, labels: np.ndarray, class_names: list[str] | None = None
) -> pd.DataFrame:
    """Accuracy of the baseline and of the variant on each true class, and their delta.

    Columns: ``class``, ``n``, ``baseline_accuracy``, ``accuracy``, ``accuracy_delta``,
    ``flips_to_wrong``, ``flips_to_right``; one row per class present in ``labels``.
    """
    predicted, reference, labels = map(np.asarray, (predicted, reference, labels))
    rows = []
    for cls in np.unique(labels):
        mask = labels == cls
        variant_right = predicted[mask] == cls
        baseline_right = reference[mask] == cls
        rows.append(
            {
                "class": class_names[int(cls)] if class_names else str(cls),
                "n": int(mask.sum()),
                "baseline_accuracy": float(baseline_right.mean()),
                "accuracy": float(variant_right.mean()),
                "accuracy_delta": float(variant_right.mean() - baseline_right.mean()),
                "flips_to_wrong": int(np.sum(baseline_right & ~variant_right)),
                "flips_to_right": int(np.sum(~baseline_right & variant_right)),
            }
        )
    return pd.DataFrame(rows)


def confusion(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]``."""
    flat = np.asarray(labels, dtype=np.int64) * n_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_table(variant: np.ndarray, baseline: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Both full confusion matrices, one row per cell that is non-zero in either.

    Columns ``true``, ``predicted`` (class names), ``count`` (variant), ``baseline_count``
    and ``change``; a pair not listed is 0 in both. Long form because a dense 1000-class
    matrix is a million cells, nearly all zero.
    """
    true, predicted = np.nonzero((variant != 0) | (baseline != 0))
    names = np.asarray(class_names, dtype=object)
    return pd.DataFrame({
        "true": names[true], "predicted": names[predicted],
        "count": variant[true, predicted], "baseline_count": baseline[true, predicted],
        "change": variant[true, predicted] - baseline[true, predicted],
    })


def paired_report(
    outputs: np.ndarray,
    baseline: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    out_dir,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    title: str = "",
    predicted: np.ndarray | None = None,
    groups: np.ndarray | None = None,
):
    """Paired statistics and their artifacts for one run (``predicted``: a classifier's
    ``classLabel`` as class indices, read instead of the top-1 of ``outputs``; ``groups``: see
    :func:`paired_statistics`).

    Returns ``(metrics, paths)``: the metrics of :func:`paired_statistics` and the written
    ``per_class.csv``, ``confusion.png`` and ``confusion.csv`` (the full matrices, see
    :func:`confusion_table`; the png shows a subset beyond ``plots.MAX_CLASSES`` classes)
    under ``out_dir``.
    """
    from pathlib import Path

    from precision_sweep.metrics import top1
    from precision_sweep.metrics.plots import confusion_png

    out_dir = Path(out_dir)
    predicted, reference = (top1(outputs) if predicted is None else predicted), top1(baseline)
    metrics = paired_statistics(predicted, reference, labels, confidence, n_resamples, seed, groups)
    n_classes = max(len(class_names), int(max(predicted.max(), reference.max(), labels.max())) + 1)
    names = list(class_names) if len(class_names) == n_classes else [str(c) for c in range(n_classes)]
    table = per_class_deltas(predicted, reference, labels, names)
    per_class = out_dir / "per_class.csv"
    table.to_csv(per_class, index=False)
    variant, base = confusion(predicted, labels, n_classes), confusion(reference, labels, n_classes)
    # a class is involved in a changed prediction as its true, old or new class
    moved = predicted != reference
    involved = sum(np.bincount(np.asarray(a, dtype=np.int64)[moved], minlength=n_classes)
                   for a in (labels, predicted, reference))
    png = confusion_png(
        out_dir / "confusion.png", variant, base, names, title=title,
        flips=(metrics["flips_to_wrong"], metrics["flips_to_right"]), changed_by_class=involved,
    )
    matrix = out_dir / "confusion.csv"
    confusion_table(variant, base, names).to_csv(matrix, index=False)
    return metrics, [per_class, png, matrix]
