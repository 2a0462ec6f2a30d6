"""Stage 5: metrics of a variant's outputs against labels and the FP32 TensorFlow baseline.

Names are the ones logged to MLflow: ``accuracy``, ``baseline_accuracy``,
``accuracy_delta`` (a fraction), ``agreement`` (top-1 equal to the baseline's top-1),
``max_abs_diff`` and ``mean_abs_diff`` of the outputs, ``n_samples``; per output of a model with
several, ``max_abs_diff/<output>`` and the like (:func:`drift_by_output`); and, in the units the
summaries use, ``delta_pp``, ``ci_low_pp`` and ``size_kb`` (:func:`display_units`).
"""

from __future__ import annotations

import numpy as np


def top1(outputs: np.ndarray) -> np.ndarray:
    return np.argmax(outputs, axis=-1)


def compare(outputs: np.ndarray, baseline: np.ndarray, labels: np.ndarray,
            predicted: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy, agreement and output differences of ``outputs`` against ``baseline``.

    Outputs may be probabilities or logits: top-1 is the same either way. ``predicted`` (a
    classifier's ``classLabel`` as class indices) is what accuracy is read from when given;
    agreement compares the scores' top-1 with TF's either way.
    """
    if outputs.shape != baseline.shape:
        raise ValueError(f"outputs {outputs.shape} and baseline {baseline.shape} differ in shape")
    scored, reference = top1(outputs), top1(baseline)
    accuracy = float(np.mean((scored if predicted is None else predicted) == labels))
    predicted = scored
    baseline_accuracy = float(np.mean(reference == labels))
    largest, mean = abs_diff(outputs, baseline)
    return {
        "accuracy": accuracy,
        "baseline_accuracy": baseline_accuracy,
        "accuracy_delta": accuracy - baseline_accuracy,
        "agreement": float(np.mean(predicted == reference)),
        "max_abs_diff": largest,
        "mean_abs_diff": mean,
        "n_samples": int(len(labels)),
    }


def abs_diff(outputs: np.ndarray, baseline: np.ndarray) -> tuple[float, float]:
    """(largest, mean) absolute difference of ``outputs`` from ``baseline`` (inf where any is not finite)."""
    diff = np.abs(np.asarray(outputs, np.float64) - np.asarray(baseline, np.float64))
    if not np.isfinite(diff).all():
        return float("inf"), float("inf")
    return (float(diff.max()), float(diff.mean())) if diff.size else (0.0, 0.0)


def drift_by_output(outputs: dict[str, np.ndarray], baseline: dict[str, np.ndarray]) -> dict[str, float]:
    """Every output's drift from the FP32 TF output of the same name: ``max_abs_diff/<name>``,
    ``mean_abs_diff/<name>`` and, where TF's output holds class probabilities (batch, classes:
    non-negative rows summing to 1), ``agreement/<name>`` (top-1 equal to TF's)."""
    metrics = {}
    for name, reference in baseline.items():
        value = outputs[name]
        if value.shape != reference.shape:
            raise ValueError(f"output {name}: {value.shape} from the program, {reference.shape} from TF")
        metrics[f"max_abs_diff/{name}"], metrics[f"mean_abs_diff/{name}"] = abs_diff(value, reference)
        if reference.ndim == 2 and reference.shape[1] > 1 and _probabilities(reference):
            metrics[f"agreement/{name}"] = float(np.mean(top1(value) == top1(reference)))
    return metrics


def display_units(metrics: dict[str, float]) -> dict[str, float]:
    """The accuracy delta and its CI's lower bound in percentage points, the size in KB: the
    units of the summaries, so that the runs table reads the same."""
    shown = {}
    if "accuracy_delta" in metrics:
        shown["delta_pp"] = 100 * float(metrics["accuracy_delta"])
    if "accuracy_delta_ci_low" in metrics:
        shown["ci_low_pp"] = 100 * float(metrics["accuracy_delta_ci_low"])
    if "model_size_bytes" in metrics:
        shown["size_kb"] = float(metrics["model_size_bytes"]) / 1024
    return shown


def _probabilities(scores: np.ndarray) -> bool:
    return bool((scores >= -1e-6).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3))
