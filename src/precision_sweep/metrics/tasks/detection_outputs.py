"""task=detection in a job: a detector's outputs, read by name into one list of
:class:`~.detection.Detections` per model, judged by :func:`.detection.compare` (COCO mAP through
pycocotools, paired bootstrap over images), and its confidences compared box by box.

Labels are an npz ``y`` of shape ``(N, K, 5)``: per image up to ``K`` ground-truth rows
``(class, box)``, the box in the task's ``box_format`` (pixels of the model's input, or
``normalized``), rows of class -1 being padding.

Where the model's non-maximum suppression runs (``nms``):

- ``outside``: the model outputs every candidate, ``boxes`` ``(N, A, 4)`` and per-class
  ``scores`` ``(N, A, C)``. TensorFlow's ``combined_non_max_suppression`` (per class, at
  ``iou_threshold``, ``score_threshold``, at most ``max_detections`` per image) runs on TF's
  outputs and on the converted model's alike, as the app would run it after Core ML.
- ``inside``: the model outputs what its NMS kept, ``boxes`` ``(N, M, 4)``, ``scores`` ``(N, M)``
  and ``classes`` ``(N, M)`` (padded); entries below ``score_threshold`` are dropped.

Beyond mAP, each TF detection is matched to the converted model's detection of its class with
the highest IoU (at least 0.5, each used once, TF's most confident first), and the confidences
and boxes of the matched pairs are compared (``score_max_abs_diff``, ``score_mean_abs_diff``,
``box_max_abs_diff``, ``matched_fraction``): a converted model whose scores all read 1.0
(Ultralytics #13079) keeps its boxes and shows here at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from precision_sweep.errors import UserInputError
from precision_sweep.metrics.tasks import detection
from precision_sweep.metrics.tasks.detection import Detections, GroundTruth
from precision_sweep.metrics.tasks.paired import DEFAULT_CONFIDENCE

NMS_PLACES = ("outside", "inside")
MATCH_IOU = 0.5


def _image_size(input_shape: Sequence[int] | None) -> tuple[float, float]:
    """(height, width) of an image input (NHWC or NCHW, without batch); unbounded when unknown."""
    shape = tuple(input_shape or ())
    if len(shape) == 3:
        return (shape[1], shape[2]) if shape[0] in (1, 3) and shape[-1] not in (1, 3) else (shape[0], shape[1])
    return (float("inf"), float("inf"))


def ground_truth(labels: np.ndarray, input_shape=None, box_format: str = "xyxy", normalized: bool = False) -> list[GroundTruth]:
    """The labels ``(N, K, 5)`` as one :class:`GroundTruth` per image (class -1 rows dropped)."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 3 or labels.shape[-1] != 5:
        raise UserInputError(
            f"Detection labels have shape {labels.shape}; task=detection reads y of shape (N, K, 5): per image "
            "up to K rows (class, box), rows of class -1 being padding. Save them so: np.savez(path, x=images, y=rows)."
        )
    size = _image_size(input_shape)
    truths = []
    for rows in labels:
        rows = rows[rows[:, 0] != -1]
        truths.append(GroundTruth(detection.to_xyxy_pixels(rows[:, 1:], size, box_format, normalized),
                                  rows[:, 0].astype(np.int64), size))
    return truths


def _output(outputs: dict, name: str, role: str, nms: str) -> np.ndarray:
    if not isinstance(outputs, dict):
        raise UserInputError(
            "task=detection reads a detector's several outputs by name (its boxes and scores), but the model has "
            "one output. Give the detector's outputs (task.compare.boxes, .scores) as separate Keras outputs."
        )
    if name not in outputs:
        raise UserInputError(
            f"task.compare.{role}={name} names no output of the model; its outputs are {', '.join(sorted(outputs))}. "
            f"Set task.compare.{role} to the output holding the {role} (nms={nms})."
        )
    return np.asarray(outputs[name])


def detections(outputs, *, nms: str, boxes: str, scores: str, classes: str | None, input_shape=None,
               box_format: str = "xyxy", normalized: bool = False, score_threshold: float = 0.05,
               iou_threshold: float = 0.5, max_detections: int = 100) -> list[Detections]:
    """One model's outputs (by name) as its detections per image, after NMS."""
    if nms not in NMS_PLACES:
        raise UserInputError(f"task.compare.nms={nms} is not one of {list(NMS_PLACES)}: say where the model's NMS runs.")
    box_values = _output(outputs, boxes, "boxes", nms).astype(np.float32)
    score_values = _output(outputs, scores, "scores", nms).astype(np.float32)
    size = _image_size(input_shape)
    if nms == "outside":
        if box_values.ndim != 3 or box_values.shape[-1] != 4 or score_values.ndim != 3 or score_values.shape[:2] != box_values.shape[:2]:
            raise UserInputError(
                f"With nms=outside the boxes output {boxes} must be (N, candidates, 4) and the scores output "
                f"{scores} (N, candidates, classes); they are {box_values.shape} and {score_values.shape}."
            )
        kept_boxes, kept_scores, kept_classes, counts = _suppress(box_values, score_values, score_threshold,
                                                                   iou_threshold, max_detections)
    else:
        if classes is None:
            raise UserInputError("With nms=inside set task.compare.classes to the output holding each kept box's class.")
        class_values = _output(outputs, classes, "classes", nms)
        if box_values.ndim != 3 or box_values.shape[-1] != 4 or score_values.shape != box_values.shape[:2] \
                or class_values.shape != box_values.shape[:2]:
            raise UserInputError(
                f"With nms=inside the outputs must be boxes (N, M, 4), scores (N, M) and classes (N, M); they are "
                f"{box_values.shape}, {score_values.shape} and {class_values.shape}."
            )
        kept_boxes, kept_scores, kept_classes = box_values, score_values, class_values
        counts = np.full(len(box_values), box_values.shape[1])
    found = []
    for i, count in enumerate(counts):
        keep = kept_scores[i, :count] >= score_threshold
        found.append(Detections(detection.to_xyxy_pixels(kept_boxes[i, :count][keep], size, box_format, normalized),
                                np.rint(kept_classes[i, :count][keep]).astype(np.int64),
                                kept_scores[i, :count][keep].astype(np.float64)))
    return found


def _suppress(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float,
              max_detections: int, chunk: int = 512):
    """TensorFlow's per-class ``combined_non_max_suppression``, in chunks of images."""
    import tensorflow as tf

    parts = []
    for start in range(0, len(boxes), chunk):
        result = tf.image.combined_non_max_suppression(
            boxes[start:start + chunk, :, None, :], scores[start:start + chunk], max_output_size_per_class=max_detections,
            max_total_size=max_detections, iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False)
        parts.append([np.asarray(t) for t in result])
    return [np.concatenate([p[k] for p in parts]) for k in range(4)]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes ``a`` (n, 4) against ``b`` (m, 4), by pycocotools."""
    from pycocotools import mask

    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    def xywh(boxes):
        return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
    return np.asarray(mask.iou(xywh(a), xywh(b), np.zeros(len(b), dtype=np.uint8)))


def confidence_drift(variant: Sequence[Detections], reference: Sequence[Detections]) -> dict[str, float]:
    """The confidences and boxes of the converted model's detections against TF's, pair by
    pair (see the module docstring)."""
    score_diffs, box_diffs, total = [], [], 0
    for mine, theirs in zip(variant, reference):
        total += len(theirs.scores)
        used = np.zeros(len(mine.scores), dtype=bool)
        overlap = _iou(theirs.boxes, mine.boxes)
        for k in np.argsort(-theirs.scores, kind="stable"):
            candidates = (~used) & (mine.classes == theirs.classes[k]) & (overlap[k] >= MATCH_IOU) if len(mine.scores) else used
            if not candidates.any():
                continue
            j = int(np.argmax(np.where(candidates, overlap[k], -1.0)))
            used[j] = True
            score_diffs.append(abs(float(mine.scores[j]) - float(theirs.scores[k])))
            box_diffs.append(float(np.max(np.abs(mine.boxes[j] - theirs.boxes[k]))))
    return {
        "matched_fraction": len(score_diffs) / total if total else 1.0,
        "score_max_abs_diff": max(score_diffs, default=0.0),
        "score_mean_abs_diff": float(np.mean(score_diffs)) if score_diffs else 0.0,
        "box_max_abs_diff": max(box_diffs, default=0.0),
        "detections_per_image": float(np.mean([len(d.scores) for d in variant])) if variant else 0.0,
        "baseline_detections_per_image": total / len(reference) if reference else 0.0,
    }


def check(labels: np.ndarray, outputs, *, nms: str = "outside", boxes: str = "boxes", scores: str = "scores",
          classes: str | None = None, input_shape=None, box_format: str = "xyxy", normalized: bool = False,
          score_threshold: float = 0.05, iou_threshold: float = 0.5, max_detections: int = 100, **_) -> None:
    """The labels and the FP32 baseline's outputs checked against each other before converting:
    outputs named and shaped as configured, ground-truth boxes inside the model's input image."""
    truths = ground_truth(labels, input_shape, box_format, normalized)
    found = detections(outputs, nms=nms, boxes=boxes, scores=scores, classes=classes, input_shape=input_shape,
                       box_format=box_format, normalized=normalized, score_threshold=score_threshold,
                       iou_threshold=iou_threshold, max_detections=max_detections)
    detection.check(truths, found)


def compare(labels: np.ndarray, outputs, baseline_outputs, *, nms: str = "outside", boxes: str = "boxes",
            scores: str = "scores", classes: str | None = None, input_shape=None, box_format: str = "xyxy",
            normalized: bool = False, score_threshold: float = 0.05, iou_threshold: float = 0.5,
            max_detections: int = 100, metrics: Sequence[str] = detection.METRICS,
            confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = detection.DEFAULT_RESAMPLES, seed: int = 0):
    """mAP@[.5:.95] and mAP@.5 of the converted model against TF's (:func:`.detection.compare`),
    then the per-box confidence comparison as plain metrics."""
    settings = dict(nms=nms, boxes=boxes, scores=scores, classes=classes, input_shape=input_shape,
                    box_format=box_format, normalized=normalized, score_threshold=score_threshold,
                    iou_threshold=iou_threshold, max_detections=max_detections)
    truths = ground_truth(labels, input_shape, box_format, normalized)
    variant, reference = detections(outputs, **settings), detections(baseline_outputs, **settings)
    results = detection.compare(truths, variant, reference, metrics=metrics, confidence=confidence,
                                n_resamples=n_resamples, seed=seed)
    return (*results, confidence_drift(variant, reference))
