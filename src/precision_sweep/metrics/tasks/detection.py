"""Detection: COCO mAP@[.5:.95] and mAP@.5 of boxes against ground-truth boxes, by pycocotools.

pycocotools is the evaluator; nothing here matches boxes or integrates precision. Boxes are
``(x_min, y_min, x_max, y_max)`` in pixels of the image the model sees (:func:`to_xyxy_pixels`
converts normalised or ``(y, x)``-ordered boxes). Class ``c`` is COCO category ``c + 1`` and the
k-th box gets annotation id ``k + 1``: pycocotools takes an id of 0 for "unmatched".

mAP is not a mean over images, so the comparison is the ``paired_bootstrap`` over images. It is
made fast without leaving pycocotools: ``COCOeval.evaluate()`` runs once per model and matches
detections to ground truth image by image (``evalImgs``), and matching never looks beyond its
image. A resample of images is then the list of its images' ``evalImgs`` (an image drawn twice
appears twice), handed to ``COCOeval.accumulate()``: exactly what pycocotools gives on a data
set holding those images under fresh ids (tested). Only the two figures' settings are evaluated
(area "all", 100 detections per image): one accumulation per resample instead of twelve. The
figures are read as ``COCOeval.summarize()`` reads ``stats[0]`` and ``stats[1]``: the mean of
the precision table over IoU thresholds, recall thresholds and the categories with ground truth.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from precision_sweep.errors import UserInputError
from precision_sweep.metrics.tasks.paired import (
    DEFAULT_CONFIDENCE,
    MetricComparison,
    paired_bootstrap,
)

METRICS = ("map_50_95", "map_50")
# pycocotools' accumulation is a Python loop over detections: 1000 resamples of 500 images with
# 1,800 detections per model take 11 s here (2 cores), so half the other tasks' resamples.
DEFAULT_RESAMPLES = 1000
BOX_FORMATS = ("xyxy", "yxyx", "xywh")


@dataclass(frozen=True)
class GroundTruth:
    """One image's labelled boxes.

    Attributes
    ----------
    boxes
        ``(k, 4)`` ``x_min, y_min, x_max, y_max`` in pixels.
    classes
        ``(k,)`` class ids.
    image_size
        ``(height, width)`` in pixels of the image the model sees: the boxes must lie inside it.
    """

    boxes: np.ndarray
    classes: np.ndarray
    image_size: tuple[int, int]


@dataclass(frozen=True)
class Detections:
    """One image's detections: ``boxes`` ``(k, 4)`` as :class:`GroundTruth`'s, ``classes``
    ``(k,)`` and ``scores`` ``(k,)`` (after NMS and any score threshold)."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray


def to_xyxy_pixels(boxes: np.ndarray, image_size: tuple[int, int], box_format: str = "xyxy",
                   normalized: bool = False) -> np.ndarray:
    """Boxes ``(k, 4)`` in ``box_format`` (``xyxy``, ``yxyx`` as TF's detection API,
    ``xywh`` as COCO's files), normalised to [0, 1] or not, as ``xyxy`` pixels."""
    if box_format not in BOX_FORMATS:
        raise UserInputError(f"Unknown box format {box_format!r}: choose from {list(BOX_FORMATS)}.")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box_format == "yxyx":
        boxes = boxes[:, [1, 0, 3, 2]]
    elif box_format == "xywh":
        boxes = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    if normalized:
        height, width = image_size
        boxes = boxes * np.array([width, height, width, height], np.float64)
    return boxes


def check(labels: Sequence[GroundTruth], outputs: Sequence[Detections]) -> None:
    """A UserInputError where the labels do not fit the outputs: another number of images,
    malformed arrays, boxes with negative width or height, boxes outside their image."""
    if len(labels) != len(outputs):
        raise UserInputError(
            f"Detection labels describe {len(labels)} images but the outputs {len(outputs)}. Give one "
            "ground-truth entry per evaluated image, in the order of the inputs (an image without "
            "objects gets empty boxes)."
        )
    fix = ("Boxes must be (x_min, y_min, x_max, y_max) in pixels of the image the model sees; "
           "if the labels are normalised to [0, 1], in (y, x) order or (x, y, width, height), say so "
           "with the task's box_format and normalized, and scale them with the image if it is resized.")
    for i, truth in enumerate(labels):
        boxes, classes = np.asarray(truth.boxes, np.float64), np.asarray(truth.classes)
        if boxes.size == 0 and classes.size == 0:
            continue
        if boxes.ndim != 2 or boxes.shape[1] != 4 or classes.shape != (len(boxes),):
            raise UserInputError(
                f"The ground truth of image {i} has boxes of shape {boxes.shape} and classes of shape "
                f"{classes.shape}: it needs (k, 4) boxes and k classes. {fix}"
            )
        if not np.isfinite(boxes).all() or (classes < 0).any():
            raise UserInputError(
                f"The ground truth of image {i} holds a non-finite box or a negative class. {fix}")
        height, width = truth.image_size
        negative = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        outside = ((boxes[:, :2] < 0).any(axis=1) | (boxes[:, 2] > width) | (boxes[:, 3] > height))
        for problem, rows in (("has a negative width or height", negative), ("lies outside the "
                              f"{width} x {height} image", outside)):
            if rows.any():
                k = int(np.argmax(rows))
                raise UserInputError(
                    f"Ground-truth box {k} of image {i}, {boxes[k].round(3).tolist()}, {problem} "
                    f"({int(rows.sum())} such boxes in that image). {fix}"
                )
    for i, found in enumerate(outputs):
        boxes = np.asarray(found.boxes, np.float64)
        if boxes.size == 0 and np.size(found.scores) == 0:
            continue
        if (boxes.ndim != 2 or boxes.shape[1] != 4 or np.shape(found.classes) != (len(boxes),)
                or np.shape(found.scores) != (len(boxes),)):
            raise UserInputError(
                f"The detections of image {i} have boxes {boxes.shape}, classes {np.shape(found.classes)} "
                f"and scores {np.shape(found.scores)}: they need (k, 4), (k,) and (k,). Read the model's "
                "box, class and score outputs (after NMS) into one entry per image."
            )


def _coco(labels: Sequence[GroundTruth], outputs: Sequence[Detections]):
    """An evaluated ``COCOeval`` over area "all", 100 detections per image."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, categories = [], [], set()
    for i, truth in enumerate(labels):
        height, width = truth.image_size
        images.append({"id": i + 1, "height": int(height), "width": int(width)})
        for box, cls in zip(np.asarray(truth.boxes, np.float64).reshape(-1, 4), np.asarray(truth.classes).ravel()):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0})
            categories.add(int(cls) + 1)
    results = []
    for i, found in enumerate(outputs):
        for box, cls, score in zip(np.asarray(found.boxes, np.float64).reshape(-1, 4),
                                   np.asarray(found.classes).ravel(), np.asarray(found.scores).ravel()):
            results.append({"image_id": i + 1, "category_id": int(cls) + 1, "score": float(score),
                            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c} for c in sorted(categories)]}
        truth.createIndex()
        if results:
            found = truth.loadRes(results)
        else:  # loadRes cannot take an empty list; an empty result set is the same images, no boxes
            found = COCO()
            found.dataset = {"images": images, "annotations": [], "categories": truth.dataset["categories"]}
            found.createIndex()
        evaluator = COCOeval(truth, found, "bbox")
        evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0, 1e5 ** 2]], ["all"]
        evaluator.params.maxDets = [100]
        evaluator.evaluate()
    return evaluator


def _average_precision(evaluator, images: np.ndarray | None) -> np.ndarray:
    """``[mAP@[.5:.95], mAP@.5]`` of ``evaluator`` accumulated over ``images`` (positions in its
    image list, repeats allowed; None for all): NaN where no drawn image has ground truth."""
    if images is not None:
        n_images = len(evaluator._paramsEval.imgIds)
        n_blocks = len(evaluator.evalImgs) // n_images  # one per category (x one area range)
        evaluator = copy.copy(evaluator)
        evaluator.evalImgs = [evaluator.evalImgs[block * n_images + i] for block in range(n_blocks) for i in images]
        renamed = list(range(1, len(images) + 1))
        evaluator._paramsEval = copy.copy(evaluator._paramsEval)
        evaluator._paramsEval.imgIds = renamed
        evaluator.params = copy.copy(evaluator.params)
        evaluator.params.imgIds = renamed
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, 0]  # [IoU threshold, recall, category]
    at_50 = precision[np.flatnonzero(evaluator.params.iouThrs == 0.5)]
    # COCOeval.summarize's rule: the mean over entries > -1 (-1: a category without ground truth)
    return np.array([s[s > -1].mean() if (s > -1).any() else np.nan for s in (precision, at_50)])


def mean_average_precision(labels: Sequence[GroundTruth], outputs: Sequence[Detections]) -> tuple[float, float]:
    """COCO ``(mAP@[.5:.95], mAP@.5)``, equal to ``COCOeval.stats[0]`` and ``stats[1]``."""
    check(labels, outputs)
    _require_boxes(labels)
    return tuple(float(v) for v in _average_precision(_coco(labels, outputs), None))


def _require_boxes(labels: Sequence[GroundTruth]) -> None:
    if not any(np.size(truth.classes) for truth in labels):
        raise UserInputError(
            f"None of the {len(labels)} images has a ground-truth box, so mAP is undefined. Evaluate "
            "on images with labelled objects (check that the labels were read: an empty label file "
            "gives an image without boxes)."
        )


def compare(
    labels: Sequence[GroundTruth],
    outputs: Sequence[Detections],
    baseline_outputs: Sequence[Detections],
    *,
    metrics: Sequence[str] = METRICS,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[MetricComparison, ...]:
    """COCO mAP@[.5:.95] and mAP@.5 of the variant against the baseline, in the order of
    ``metrics`` (the first is the task's primary metric), with the paired bootstrap over images."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise UserInputError(f"Unknown detection metric {sorted(unknown)}: choose from {list(METRICS)}.")
    check(labels, outputs)
    check(labels, baseline_outputs)
    _require_boxes(labels)
    variant, baseline = _coco(labels, outputs), _coco(labels, baseline_outputs)

    def evaluate(images):
        return np.stack([_average_precision(variant, images), _average_precision(baseline, images)])

    results = paired_bootstrap(METRICS, evaluate, len(labels), higher_is_better=True,
                               confidence=confidence, n_resamples=n_resamples, seed=seed)
    by_name = {result.metric: result for result in results}
    return tuple(by_name[name] for name in metrics)
