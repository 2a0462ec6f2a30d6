"""Stage 5: metrics of a variant's outputs against labels and the FP32 TensorFlow baseline.

Names are the ones logged to MLflow: ``accuracy``, ``baseline_accuracy``,
``accuracy_delta`` (a fraction), ``agreement`` (top-1 equal to the baseline's top-1),
``max_abs_diff`` and ``mean_abs_diff`` of the outputs, ``n_samples``; and, in the units the
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
    diff = np.abs(outputs.astype(np.float64) - baseline.astype(np.float64))
    finite = np.isfinite(diff)
    return {
        "accuracy": accuracy,
        "baseline_accuracy": baseline_accuracy,
        "accuracy_delta": accuracy - baseline_accuracy,
        "agreement": float(np.mean(predicted == reference)),
        "max_abs_diff": float(diff.max()) if finite.all() else float("inf"),
        "mean_abs_diff": float(diff.mean()) if finite.all() else float("inf"),
        "n_samples": int(len(labels)),
    }


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
