"""Segmentation: mean IoU and pixel accuracy of per-pixel class outputs against label masks.

Both are read off one confusion matrix pooled over all pixels of all images, so neither is a
mean of per-image values: they are compared with the ``paired_bootstrap`` over images. Each
image's own confusion matrix is computed once (``np.bincount``); a resample's pooled matrix is
then the images' matrices weighted by how often it drew each image, so every resample's mIoU is
exact and costs one matrix product. An image's confusion matrix is all the comparison keeps of
it: a streaming evaluation can hand :func:`compare_confusions` those instead of the outputs.

mIoU follows the usual convention (mmsegmentation, ``sklearn.metrics.jaccard_score`` over the
classes present): IoU = TP / (TP + FP + FN) per class, averaged over the classes that occur in
the labels or the predictions; pixels labelled ``ignore_index`` (255 by default, as in VOC,
Cityscapes and ADE20K) count nowhere.
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
)

METRICS = ("miou", "pixel_accuracy")
# Pixels turned into confusion counts at once: bounds the index arrays of large masks.
_CHUNK_PIXELS = 1 << 22


def _predicted_classes(labels: np.ndarray, outputs: np.ndarray, n_classes: int | None,
                       class_axis: int) -> tuple[np.ndarray, int | None]:
    """Per-pixel predicted classes shaped like ``labels``, and the number of classes (None when
    the outputs are class ids and ``n_classes`` is not given)."""
    if outputs.ndim == labels.ndim + 1:
        scores = np.moveaxis(outputs, class_axis, -1)
        spatial, classes = scores.shape[:-1], scores.shape[-1]
        predicted = None
    elif outputs.ndim == labels.ndim:
        spatial, classes, scores = outputs.shape, n_classes, None
        predicted = outputs
    else:
        raise UserInputError(
            f"Segmentation needs masks (n, height, width) and outputs of per-pixel class scores "
            f"(n, height, width, classes) or classes (n, height, width), but the masks have shape "
            f"{labels.shape} and the outputs {outputs.shape}. Read the model's per-pixel output."
        )
    if spatial != labels.shape:
        raise UserInputError(
            f"The segmentation masks are {_size(labels.shape)} but the model's output is "
            f"{_size(spatial)} per image: a mask must label each output pixel. Resize the masks to "
            "the output's size with nearest-neighbour sampling (never interpolate class ids), or "
            "upsample the model's output to the mask size in the model."
        )
    if predicted is None:
        predicted = np.argmax(scores, axis=-1)
    elif not np.issubdtype(predicted.dtype, np.integer) and not np.all(np.mod(predicted, 1) == 0):
        # (Core ML gives an argmax output as floats: whole numbers are class ids all the same)
        raise UserInputError(
            f"Segmentation outputs of shape {outputs.shape} have no class axis, so they must be "
            f"class ids, but they hold fractions ({predicted.dtype}). Read the per-pixel score "
            "output instead, or give the masks the shape of the output without its class axis."
        )
    return predicted.astype(np.int64), classes


def check(labels: np.ndarray, outputs: np.ndarray, n_classes: int | None = None, class_axis: int = -1) -> None:
    """A UserInputError where the masks do not fit the outputs (shape, class axis, class ids)."""
    _predicted_classes(np.asarray(labels), np.asarray(outputs), n_classes, class_axis)


def _size(shape) -> str:
    return f"{shape[0]} images of {' x '.join(str(s) for s in shape[1:])} pixels"


def confusions(
    labels: np.ndarray,
    outputs: np.ndarray,
    *,
    n_classes: int | None = None,
    ignore_index: int | None = 255,
    class_axis: int = -1,
) -> np.ndarray:
    """Each image's confusion matrix ``(n, classes, classes)``, counts ``[true, predicted]``.

    Parameters
    ----------
    labels
        Masks ``(n, height, width)`` of class ids (a trailing axis of 1 is dropped).
    outputs
        Per-pixel scores ``(n, height, width, classes)`` (the class axis at ``class_axis``) or
        class ids ``(n, height, width)``.
    n_classes
        Classes, when ``outputs`` are class ids (default: the largest id seen plus one).
    ignore_index
        Label of pixels that count nowhere (None: every label is a class).
    """
    labels, outputs = np.asarray(labels), np.asarray(outputs)
    if labels.ndim == 4 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim < 2 or not np.issubdtype(labels.dtype, np.integer):
        raise UserInputError(
            f"Segmentation masks must be integer class ids per pixel, (n, height, width), but they "
            f"are {labels.dtype} of shape {labels.shape}. Store masks as integer arrays (PNG masks "
            "read as uint8 are), not one-hot or colour images."
        )
    predicted, classes = _predicted_classes(labels, outputs, n_classes, class_axis)
    labels = labels.astype(np.int64)
    kept = np.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index
    if classes is None:
        classes = int(max(predicted.max(initial=0), labels[kept].max(initial=0))) + 1
    bad = kept & ((labels < 0) | (labels >= classes))
    if bad.any():
        values = np.unique(labels[bad])[:5].tolist()
        raise UserInputError(
            f"{int(bad.sum())} mask pixels hold class ids {values} outside the model's {classes} "
            f"classes (0..{classes - 1}; ignore_index={ignore_index}). Map the masks' ids to the "
            "model's classes, or set ignore_index to the id of the pixels to leave out."
        )
    if predicted.min(initial=0) < 0 or predicted.max(initial=0) >= classes:
        raise UserInputError(
            f"The model's per-pixel class ids run from {predicted.min()} to {predicted.max()}, outside "
            f"the {classes} classes asked for (n_classes={n_classes}). Set n_classes to the model's "
            "number of classes."
        )
    n = len(labels)
    out = np.zeros((n, classes * classes), np.int64)
    step = max(1, _CHUNK_PIXELS // max(int(np.prod(labels.shape[1:])), 1))
    for start in range(0, n, step):
        m = min(n, start + step) - start
        true = labels[start:start + m].reshape(m, -1)
        keep = kept[start:start + m].reshape(m, -1)
        # index of (image in chunk, true, predicted) in the chunk's stacked matrices
        flat = true * classes + predicted[start:start + m].reshape(m, -1) + (np.arange(m) * classes * classes)[:, None]
        out[start:start + m] = np.bincount(flat[keep], minlength=m * classes * classes).reshape(m, -1)
    return out.reshape(n, classes, classes)


def miou_of_sums(sums: np.ndarray) -> np.ndarray:
    """mIoU of pooled confusion matrices ``(rows, classes * classes) -> (rows,)``; NaN where no
    class occurs."""
    classes = int(round(np.sqrt(sums.shape[-1])))
    matrix = sums.reshape(-1, classes, classes)
    tp = np.diagonal(matrix, axis1=1, axis2=2)
    union = matrix.sum(axis=1) + matrix.sum(axis=2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        present = np.sum(union > 0, axis=1)
        return np.where(present > 0, np.nansum(iou, axis=1) / present, np.nan)


def pixel_accuracy_of_sums(sums: np.ndarray) -> np.ndarray:
    """Pixel accuracy of pooled confusion matrices ``(rows, classes * classes) -> (rows,)``."""
    classes = int(round(np.sqrt(sums.shape[-1])))
    matrix = sums.reshape(-1, classes, classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.trace(matrix, axis1=1, axis2=2) / matrix.sum(axis=(1, 2))


AGGREGATES = {"miou": miou_of_sums, "pixel_accuracy": pixel_accuracy_of_sums}


def mean_iou(labels: np.ndarray, outputs: np.ndarray, **options) -> float:
    """mIoU over all pixels of all images (options as :func:`confusions`)."""
    pooled = confusions(labels, outputs, **options).sum(axis=0)
    return float(miou_of_sums(pooled.reshape(1, -1))[0])


def pixel_accuracy(labels: np.ndarray, outputs: np.ndarray, **options) -> float:
    """Fraction of (not ignored) pixels whose predicted class is the label."""
    pooled = confusions(labels, outputs, **options).sum(axis=0)
    return float(pixel_accuracy_of_sums(pooled.reshape(1, -1))[0])


def compare_confusions(
    variant: np.ndarray,
    baseline: np.ndarray,
    *,
    metrics: Sequence[str] = METRICS,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[MetricComparison, ...]:
    """Compare from each image's confusion matrix (``(n, classes, classes)`` per model, as
    :func:`confusions` gives them), in the order of ``metrics``."""
    unknown = set(metrics) - set(AGGREGATES)
    if unknown:
        raise UserInputError(f"Unknown segmentation metric {sorted(unknown)}: choose from {list(METRICS)}.")
    variant, baseline = np.asarray(variant), np.asarray(baseline)
    n, classes = variant.shape[0], variant.shape[1]
    flat_variant, flat_baseline = variant.reshape(n, -1), baseline.reshape(n, -1)
    # With many classes most (true, predicted) pairs never occur: resample only those that do.
    occurring = np.flatnonzero(flat_variant.any(axis=0) | flat_baseline.any(axis=0))

    def widen(aggregate):
        def on_occurring(sums):
            full = np.zeros((sums.shape[0], classes * classes))
            full[:, occurring] = sums
            return aggregate(full)
        return on_occurring

    return tuple(
        paired_bootstrap_sums(name, flat_variant[:, occurring], flat_baseline[:, occurring],
                              widen(AGGREGATES[name]), higher_is_better=True, confidence=confidence,
                              n_resamples=n_resamples, seed=seed)
        for name in metrics
    )


def compare(
    labels: np.ndarray,
    outputs: np.ndarray,
    baseline_outputs: np.ndarray,
    *,
    metrics: Sequence[str] = METRICS,
    n_classes: int | None = None,
    ignore_index: int | None = 255,
    class_axis: int = -1,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[MetricComparison, ...]:
    """mIoU and pixel accuracy of the variant against the baseline (the first of ``metrics`` is
    the task's primary metric; options as :func:`confusions`)."""
    options = dict(ignore_index=ignore_index, class_axis=class_axis)
    if n_classes is None and np.ndim(outputs) == np.ndim(labels):
        # class-id outputs: both models' matrices need the same number of classes
        n_classes = int(max(np.max(outputs), np.max(baseline_outputs))) + 1
        labels = np.asarray(labels)
        kept = labels if ignore_index is None else labels[labels != ignore_index]
        n_classes = max(n_classes, int(kept.max(initial=0)) + 1)
    return compare_confusions(
        confusions(labels, outputs, n_classes=n_classes, **options),
        confusions(labels, baseline_outputs, n_classes=n_classes, **options),
        metrics=metrics, confidence=confidence, n_resamples=n_resamples, seed=seed,
    )
