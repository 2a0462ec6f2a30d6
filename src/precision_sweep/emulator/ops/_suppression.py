"""Greedy non-maximum suppression of one batch entry, for ``non_maximum_suppression``.

Follows ``non_maximum_suppression`` in coremltools' ``ops/defs/iOS15/tensor_operation.py``
(and iOS17's) and the reference its op tests compare Core ML against
(``ops/tests/iOS14/test_tensor_operation.py``, ``_ref_non_maximum_suppression``):

* boxes are ``(x_center, y_center, width, height)``; a box's score is its best class score;
* boxes scoring below ``score_threshold`` are dropped, the rest are visited in descending
  score order and a box is kept unless its IoU with a kept box exceeds ``iou_threshold``;
* with ``per_class_suppression`` a box only suppresses boxes of its own class (the class of
  its best score), and the kept boxes of all classes are ordered by score;
* at most ``max_boxes`` are kept; if none survives, the reference keeps the best-scoring box.
"""

from __future__ import annotations

import numpy as np


def iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """Pairwise IoU of center-size boxes (B, 4); 0 where the union is empty."""
    cx, cy, w, h = (boxes[:, i].astype(np.float64) for i in range(4))
    left, right = cx - w / 2, cx + w / 2
    bottom, top = cy - h / 2, cy + h / 2
    iw = np.maximum(0.0, np.minimum(right[:, None], right[None]) - np.maximum(left[:, None], left[None]))
    ih = np.maximum(0.0, np.minimum(top[:, None], top[None]) - np.maximum(bottom[:, None], bottom[None]))
    inter = iw * ih
    area = np.abs(w * h)
    union = area[:, None] + area[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _greedy(order: np.ndarray, iou: np.ndarray, iou_threshold: float) -> list[int]:
    kept: list[int] = []
    for candidate in order:
        if all(iou[candidate, k] <= iou_threshold for k in kept):
            kept.append(int(candidate))
    return kept


def select(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, score_threshold: float | None,
           max_boxes: int, per_class: bool) -> np.ndarray:
    """Indices of the boxes kept from ``boxes`` (B, 4) with class ``scores`` (B, K), best first."""
    best = scores.max(axis=-1).astype(np.float64)
    order = np.argsort(-best, kind="stable")
    if score_threshold is not None:
        order = order[best[order] >= score_threshold]
    iou = iou_matrix(boxes)
    if not per_class:
        kept = _greedy(order, iou, iou_threshold)
    else:
        classes = scores.argmax(axis=-1)
        kept = []
        for c in np.unique(classes[order]):
            kept += _greedy(order[classes[order] == c], iou, iou_threshold)
        rank = {int(b): r for r, b in enumerate(order)}
        kept.sort(key=rank.__getitem__)
    if not kept and len(best):
        kept = [int(np.argmax(best))]
    return np.asarray(kept[:max_boxes], dtype=np.intp)
