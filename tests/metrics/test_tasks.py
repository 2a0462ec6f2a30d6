"""Task metrics (issue 25): each metric against an independent computation of it (pycocotools run
directly, scikit-learn), the paired intervals against the rules they reuse, the bootstrap's
coverage on simulated paired data with a known population delta, a user's ``_target_`` metric,
and the one-paragraph errors for labels that do not fit the outputs."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from precision_sweep.errors import UserInputError
from precision_sweep.metrics.statistics import paired_statistics
from precision_sweep.metrics.tasks import classification, detection, embedding, regression, segmentation, user
from precision_sweep.metrics.tasks.detection import Detections, GroundTruth
from precision_sweep.metrics.tasks.paired import (
    MetricComparison,
    paired_bootstrap,
    paired_bootstrap_sums,
    paired_per_sample,
    resample_indices,
)


def one_paragraph(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and len(message) > 60, message
    return message


# --- detection ------------------------------------------------------------------------------

# pycocotools' own published fake results (cocoapi results/instances_val2014_fakebbox100_results.json)
# on COCO val2014 images 42, 73, 74 and 133, as torchmetrics' detection tests carry them, boxes as
# (x_min, y_min, x_max, y_max). Their docstring quotes pycocotools' summary on this data:
# AP@[.5:.95] = 0.706 and AP@.5 = 0.901.
PUBLISHED_TRUTH = [
    ([[214.15, 41.29, 562.41, 285.07]], [4]),
    ([[13.00, 22.75, 548.98, 632.42], [1.66, 3.32, 270.26, 275.23]], [2, 2]),
    ([[61.87, 276.25, 358.29, 379.43], [2.75, 3.66, 162.15, 316.06], [295.55, 93.96, 313.97, 152.79],
      [326.94, 97.05, 340.49, 122.98], [356.62, 95.47, 372.33, 147.55], [462.08, 105.09, 493.74, 146.99],
      [277.11, 103.84, 292.44, 150.72]], [4, 1, 0, 0, 0, 0, 0]),
    ([[13.99, 2.87, 640.00, 421.52]], [5]),
]
PUBLISHED_DETECTIONS = [
    ([[258.15, 41.29, 606.41, 285.07]], [0.236], [4]),
    ([[61.00, 22.75, 565.00, 632.42], [12.66, 3.32, 281.26, 275.23]], [0.318, 0.726], [3, 2]),
    ([[87.87, 276.25, 384.29, 379.43], [0.00, 3.66, 142.15, 316.06], [296.55, 93.96, 314.97, 152.79],
      [328.94, 97.05, 342.49, 122.98], [356.62, 95.47, 372.33, 147.55], [464.08, 105.09, 495.74, 146.99],
      [276.11, 103.84, 291.44, 150.72]], [0.546, 0.3, 0.407, 0.611, 0.335, 0.805, 0.953], [4, 1, 0, 0, 0, 0, 0]),
    ([[0.00, 2.87, 601.00, 421.52]], [0.699], [5]),
]
IMAGE = (640, 640)


def published():
    truth = [GroundTruth(np.array(b), np.array(c), IMAGE) for b, c in PUBLISHED_TRUTH]
    found = [Detections(np.array(b), np.array(c), np.array(s)) for b, s, c in PUBLISHED_DETECTIONS]
    return truth, found


def cocoeval_stats(truth, found, image_ids=None) -> np.ndarray:
    """pycocotools run directly with its default parameters: COCO json dicts built here, other
    image and category ids than the library uses, evaluate, accumulate, summarize."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = image_ids or [1000 + 7 * i for i in range(len(truth))]
    classes = sorted({int(c) for t in truth for c in t.classes} | {int(c) for f in found for c in f.classes})
    dataset = {"images": [{"id": i} for i in ids], "categories": [{"id": 10 + c} for c in classes],
               "annotations": []}
    for image_id, t in zip(ids, truth):
        for (x0, y0, x1, y1), c in zip(t.boxes, t.classes):
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": image_id, "category_id": 10 + int(c),
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    results = [{"image_id": image_id, "category_id": 10 + int(c), "score": float(s),
                "bbox": [x0, y0, x1 - x0, y1 - y0]}
               for image_id, f in zip(ids, found) for (x0, y0, x1, y1), c, s in zip(f.boxes, f.classes, f.scores)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def synthetic_detections(n_images: int, seed: int, noise: float):
    """Images with 0-5 boxes of 3 classes, detections = the boxes jittered by ``noise`` pixels
    plus 0-2 false positives, random scores."""
    rng = np.random.default_rng(seed)
    truth, found = [], []
    for _ in range(n_images):
        k = int(rng.integers(0, 6))
        corner = rng.uniform(0, 200, (k, 2))
        boxes = np.concatenate([corner, np.minimum(corner + rng.uniform(10, 100, (k, 2)), 320)], axis=1)
        classes = rng.integers(0, 3, k)
        truth.append(GroundTruth(boxes, classes, (320, 320)))
        extra = int(rng.integers(0, 3))
        false = np.concatenate([rng.uniform(0, 150, (extra, 2)), rng.uniform(160, 310, (extra, 2))], axis=1)
        found.append(Detections(np.concatenate([boxes + rng.normal(0, noise, boxes.shape), false]),
                                np.concatenate([classes, rng.integers(0, 3, extra)]), rng.uniform(0, 1, k + extra)))
    return truth, found


def test_map_on_pycocotools_published_example_equals_cocoeval_and_its_published_figures():
    truth, found = published()
    map_50_95, map_50 = detection.mean_average_precision(truth, found)
    stats = cocoeval_stats(truth, found)
    assert map_50_95 == pytest.approx(stats[0], abs=1e-6)
    assert map_50 == pytest.approx(stats[1], abs=1e-6)
    assert (round(map_50_95, 3), round(map_50, 3)) == (0.706, 0.901)


def test_map_equals_cocoeval_on_a_larger_fixed_set():
    truth, found = synthetic_detections(40, seed=3, noise=5.0)
    stats = cocoeval_stats(truth, found)
    assert detection.mean_average_precision(truth, found) == pytest.approx((stats[0], stats[1]), abs=1e-6)


def test_map_hand_verifiable_cases():
    truth, _ = published()
    perfect = [Detections(t.boxes, t.classes, np.linspace(0.9, 0.5, len(t.classes))) for t in truth]
    assert detection.mean_average_precision(truth, perfect) == (1.0, 1.0)
    # every box moved 1000 pixels to the right, beyond the image: nothing overlaps any ground truth
    off = [Detections(np.array(t.boxes) + [1000.0, 0.0, 1000.0, 0.0], t.classes, np.full(len(t.classes), 0.9))
           for t in truth]
    assert detection.mean_average_precision(truth, off) == (0.0, 0.0)
    # torchmetrics' documented single-box example: IoU = 304/392 = 0.776, a match at the six
    # thresholds .50-.75 and none at .80-.95: AP@[.5:.95] = 6/10, AP@.5 = 1
    one = [GroundTruth(np.array([[214.0, 41.0, 562.0, 285.0]]), np.array([0]), IMAGE)]
    guess = [Detections(np.array([[258.0, 41.0, 606.0, 285.0]]), np.array([0]), np.array([0.536]))]
    assert detection.mean_average_precision(one, guess) == pytest.approx((0.6, 1.0), abs=1e-12)


def test_a_resample_reaccumulated_from_evalimgs_is_pycocotools_on_the_resampled_images():
    """The bootstrap's fast path: one resample (images drawn twice included) re-accumulated from
    the once-evaluated per-image results equals pycocotools run from scratch on a data set that
    holds the drawn images under fresh ids."""
    truth, found = synthetic_detections(30, seed=5, noise=6.0)
    evaluated = detection._coco(truth, found)
    for drawn in next(resample_indices(len(truth), 3, seed=11)):
        assert len(set(drawn.tolist())) < len(drawn)  # repeats are part of the check
        fast = detection._average_precision(evaluated, drawn)
        stats = cocoeval_stats([truth[i] for i in drawn], [found[i] for i in drawn])
        assert fast == pytest.approx(stats[:2], abs=1e-9)


def test_detection_compare_is_a_paired_bootstrap_over_images():
    truth, good = synthetic_detections(60, seed=8, noise=2.0)
    _, worse = synthetic_detections(60, seed=8, noise=9.0)  # same images, sloppier boxes
    results = detection.compare(truth, worse, good, n_resamples=200, seed=4)
    assert [r.metric for r in results] == ["map_50_95", "map_50"]
    coco = cocoeval_stats(truth, worse), cocoeval_stats(truth, good)
    for j, result in enumerate(results):
        assert result.method == "paired_bootstrap" and result.n_resamples == 200 and result.seed == 4
        assert (result.value, result.baseline_value) == pytest.approx((coco[0][j], coco[1][j]), abs=1e-6)
        assert result.ci_low <= result.metric_delta <= result.ci_high
    assert results[0].ci_high < 0  # 9-pixel jitter costs mAP@[.5:.95] beyond doubt
    again = detection.compare(truth, worse, good, n_resamples=200, seed=4)
    assert again == results


# --- segmentation ---------------------------------------------------------------------------

def test_miou_and_pixel_accuracy_equal_scikit_learn():
    from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score

    rng = np.random.default_rng(0)
    masks = rng.integers(0, 5, (12, 20, 24))
    masks[masks == 4] = 3  # class 4 never occurs in the labels...
    masks[0, :3] = 255  # ...and some pixels are void
    scores = rng.normal(size=(12, 20, 24, 6))
    scores[..., 5] -= 10  # ...and class 5 is never predicted: both are left out of the mean
    scores += 3 * np.eye(6)[np.minimum(masks, 5)]
    kept = masks != 255
    y_true, y_pred = masks[kept], np.argmax(scores, axis=-1)[kept]
    present = np.union1d(y_true, y_pred)
    assert segmentation.mean_iou(masks, scores) == pytest.approx(
        jaccard_score(y_true, y_pred, labels=present, average="macro"), abs=1e-6)
    assert segmentation.pixel_accuracy(masks, scores) == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-6)
    per_image = segmentation.confusions(masks, scores)
    assert per_image.shape == (12, 6, 6)
    assert np.array_equal(per_image.sum(axis=0), confusion_matrix(y_true, y_pred, labels=range(6)))
    # class-id outputs, classes first (NCHW scores) give the same
    assert segmentation.mean_iou(masks, np.argmax(scores, axis=-1), n_classes=6) == segmentation.mean_iou(
        masks, np.moveaxis(scores, -1, 1), class_axis=1)


def test_segmentation_compare_resamples_the_per_image_matrices():
    rng = np.random.default_rng(2)
    masks = rng.integers(0, 3, (30, 8, 8))
    base = rng.normal(size=(30, 8, 8, 3)) + 2 * np.eye(3)[masks]
    variant = base + rng.normal(0, 0.8, base.shape)
    results = segmentation.compare(masks, variant, base, n_resamples=300, seed=1)
    assert [r.metric for r in results] == ["miou", "pixel_accuracy"]
    assert results[0].value == pytest.approx(segmentation.mean_iou(masks, variant))
    assert results[0].baseline_value == pytest.approx(segmentation.mean_iou(masks, base))
    # the same resamples through the general engine (a resample's images gathered and pooled)
    def evaluate(drawn):
        drawn = slice(None) if drawn is None else drawn
        return np.array([[segmentation.mean_iou(masks[drawn], variant[drawn])],
                         [segmentation.mean_iou(masks[drawn], base[drawn])]])
    (general,) = paired_bootstrap(["miou"], evaluate, 30, higher_is_better=True, n_resamples=300, seed=1)
    assert (results[0].ci_low, results[0].ci_high) == pytest.approx((general.ci_low, general.ci_high), abs=1e-12)


C, SIDE, DIFFICULTY = 3, 8, np.array([0.05, 0.15, 0.3])


def simulate_segmentation(rng, n):
    """Paired masks from one generative model: each 8x8 image has a dominant class (60 % of its
    pixels) and a difficulty d in {0.05, 0.15, 0.3}; the baseline gets a pixel wrong with
    probability d (then one of the two other classes at random); the variant copies the
    baseline but turns 10 % of the right class-2 pixels into class 0 and repairs 5 % of the
    baseline's wrong pixels."""
    d = DIFFICULTY[rng.integers(0, 3, n)][:, None, None]
    dominant = rng.integers(0, C, n)[:, None, None]
    other = (dominant + 1 + rng.integers(0, 2, (n, SIDE, SIDE))) % C
    true = np.where(rng.random((n, SIDE, SIDE)) < 0.6, dominant, other)
    wrong = (true + 1 + rng.integers(0, 2, true.shape)) % C
    base_right = rng.random(true.shape) >= d
    base = np.where(base_right, true, wrong)
    u = rng.random(true.shape)
    variant = np.where(base_right & (true == 2) & (u < 0.1), 0, base)
    variant = np.where(~base_right & (u < 0.05), true, variant)
    return true, variant, base


def population_confusions():
    """The model's expected confusion matrices per pixel, [true, predicted], in closed form."""
    base, variant = np.zeros((C, C)), np.zeros((C, C))
    for d in DIFFICULTY:
        for t in range(C):
            for p in range(C):
                if p == t:
                    base[t, p] += (1 - d)
                    variant[t, p] += (1 - d) * (1 - 0.1 * (t == 2)) + d * 0.05
                else:
                    base[t, p] += d / 2
                    variant[t, p] += d * 0.95 / 2 + (1 - d) * 0.1 * (t == 2 and p == 0)
    return variant / (3 * C), base / (3 * C)


def test_bootstrap_ci_of_miou_covers_the_population_delta_at_its_nominal_rate():
    """200 simulated paired data sets of 200 images each; the nominal 95 % interval of the mIoU
    delta must cover the true delta in 93-97 % of them.

    mIoU is a ratio of pixel counts pooled over the whole set, not a mean of per-image values,
    so the "true delta" is not the expectation of a per-image statistic: it is the limit of the
    pooled-set mIoU as the set grows, i.e. the mIoU of the *expected* confusion matrix (counts
    scale out of IoU). That limit is computed here in closed form from the generative model, and
    checked against a pooled sample of 200,000 images (12.8 M pixels, delta error ~1e-4, about a
    hundredth of an interval's width). A finite set's expected mIoU differs from the limit by
    O(1/n), far inside the interval at n = 200.

    The data and the bootstrap seeds are fixed (data from seed 0, resamples seeded by the set's
    index), so the figure is reproducible; at 200 sets a perfectly calibrated interval would
    still land anywhere in 95 +/- 3 % by chance (binomial sd 1.5 pp). Measured: 190/200 = 95.0 %;
    over 2,000 sets (other seed) 94.3 %.
    """
    variant_population, base_population = population_confusions()
    true_delta = (segmentation.miou_of_sums(variant_population.reshape(1, -1))[0]
                  - segmentation.miou_of_sums(base_population.reshape(1, -1))[0])
    rng = np.random.default_rng(123)
    pooled = np.zeros((2, C * C))
    for _ in range(20):
        true, variant, base = simulate_segmentation(rng, 10_000)
        pooled += [segmentation.confusions(true, o, n_classes=C).sum(axis=0).ravel() for o in (variant, base)]
    sampled_delta = segmentation.miou_of_sums(pooled[:1])[0] - segmentation.miou_of_sums(pooled[1:])[0]
    assert sampled_delta == pytest.approx(true_delta, abs=5e-4)
    assert true_delta == pytest.approx(-0.0279, abs=1e-4)

    rng = np.random.default_rng(0)
    covered = 0
    for index in range(200):
        true, variant, base = simulate_segmentation(rng, 200)
        (result,) = segmentation.compare_confusions(
            segmentation.confusions(true, variant, n_classes=C), segmentation.confusions(true, base, n_classes=C),
            metrics=("miou",), n_resamples=1000, seed=index)
        covered += result.ci_low <= true_delta <= result.ci_high
    print(f"mIoU delta CI coverage: {covered}/200")
    assert 186 <= covered <= 194  # 93 % .. 97 %


# --- classification, regression, embedding --------------------------------------------------

def classification_pair(n=600, classes=10, seed=1):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    base = rng.normal(size=(n, classes))
    base[np.arange(n), labels] += 1.5
    return labels, base + rng.normal(0, 0.6, base.shape), base


def test_top1_comparison_is_the_existing_paired_statistics():
    labels, variant, base = classification_pair()
    (top1,) = classification.compare(labels, variant, base, seed=3)
    stats = paired_statistics(variant.argmax(1), base.argmax(1), labels, seed=3)
    assert top1.metric == "accuracy" and top1.method == "paired_per_sample" and top1.n_resamples == 2000
    assert (top1.ci_low, top1.ci_high) == (stats["accuracy_delta_ci_low"], stats["accuracy_delta_ci_high"])
    assert top1.details == {k: stats[k] for k in ("mcnemar_p", "flips_to_wrong", "flips_to_right")}
    shown = top1.as_metrics(primary=True)
    assert shown["accuracy_delta_ci_low"] == stats["accuracy_delta_ci_low"]
    assert shown["metric_delta"] == top1.metric_delta == top1.value - top1.baseline_value


def test_top_k_accuracy_equals_scikit_learn_and_breaks_ties_as_argmax():
    from sklearn.metrics import top_k_accuracy_score

    labels, variant, _ = classification_pair()
    for k in (1, 3, 5):
        assert classification.top_k_accuracy(labels, variant, k) == pytest.approx(
            top_k_accuracy_score(labels, variant, k=k, labels=range(10)), abs=1e-12)
    tied = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    assert classification.correct(np.array([0, 1]), tied, 1).tolist() == [True, False]  # as argmax
    assert classification.correct(np.array([0, 1]), tied, 2).tolist() == [True, True]


def test_per_sample_real_values_take_the_same_interval_rule_as_paired_statistics():
    """0/1 values cast to floats go through the real-valued path: the interval is identical."""
    labels, variant, base = classification_pair()
    as_bool = paired_per_sample("x", variant.argmax(1) == labels, base.argmax(1) == labels,
                                higher_is_better=True, seed=9)
    as_float = paired_per_sample("x", (variant.argmax(1) == labels).astype(float),
                                 (base.argmax(1) == labels).astype(float), higher_is_better=True, seed=9)
    assert (as_bool.ci_low, as_bool.ci_high) == (as_float.ci_low, as_float.ci_high)


def test_regression_errors_equal_scikit_learn_and_a_worse_variant_has_a_positive_delta():
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    rng = np.random.default_rng(4)
    y = rng.normal(size=(400, 2, 3))
    base, variant = y + rng.normal(0, 0.2, y.shape), y + rng.normal(0, 0.3, y.shape)
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    assert regression.mae(y, variant) == pytest.approx(mean_absolute_error(flat(y), flat(variant)), abs=1e-12)
    assert regression.rmse(y, variant) == pytest.approx(np.sqrt(mean_squared_error(flat(y), flat(variant))), abs=1e-12)
    mae, rmse = regression.compare(y, variant, base, n_resamples=500)
    assert (mae.method, rmse.method) == ("paired_per_sample", "paired_bootstrap")
    for result in (mae, rmse):
        assert not result.higher_is_better
        assert 0 < result.ci_low < result.metric_delta < result.ci_high  # worse: a positive delta
        assert result.gain == -result.metric_delta and result.gain_ci == (-result.ci_high, -result.ci_low)
    # RMSE through the general engine on the same resamples: the identical interval
    def evaluate(drawn):
        drawn = slice(None) if drawn is None else drawn
        return np.array([[regression.rmse(y[drawn], variant[drawn])], [regression.rmse(y[drawn], base[drawn])]])
    (general,) = paired_bootstrap(["rmse"], evaluate, 400, higher_is_better=False, n_resamples=500)
    assert (rmse.ci_low, rmse.ci_high) == pytest.approx((general.ci_low, general.ci_high), abs=1e-12)


def brute_force_recall(labels, embeddings, k):
    """Leave-one-out recall@k by sorting every query's cosine similarities (stable, so ties go
    to the lower index)."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    hits = []
    for q in range(len(labels)):
        if np.sum(labels == labels[q]) < 2:
            continue
        others = np.delete(np.arange(len(labels)), q)
        order = others[np.argsort(-(unit[others] @ unit[q]), kind="stable")]
        hits.append(np.any(labels[order[:k]] == labels[q]))
    return np.mean(hits)


def test_recall_at_k_equals_a_brute_force_search_and_a_hand_case():
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(30), 4)
    labels[-1] = 99  # an identity seen once: no answer, left out
    embeddings = rng.normal(size=(120, 16)) + 1.2 * rng.normal(size=(30, 16))[np.minimum(labels, 29)]
    for k in (1, 5):
        assert embedding.recall_at_k(labels, embeddings, k) == pytest.approx(brute_force_recall(labels, embeddings, k))
    # a fixed gallery: the first sample of each identity asks, the other three answer
    gallery = np.arange(120) % 4 != 0
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    nearest = np.flatnonzero(gallery)[np.argmax(unit[~gallery] @ unit[gallery].T, axis=1)]
    answerable = np.isin(labels[~gallery], labels[gallery])
    expected = np.mean((labels[nearest] == labels[~gallery])[answerable])
    assert embedding.recall_at_k(labels, embeddings, 1, gallery=gallery) == pytest.approx(expected)
    square = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert embedding.recall_at_k(np.array([0, 0, 1, 1]), square, 1) == 1.0
    # labels across the pairs: every query's nearest is the other label; at k=2 queries 1 and 3
    # reach their own label (cosine 0.22 beats 0.11), queries 0 and 2 do at k=3 only
    assert [embedding.recall_at_k(np.array([0, 1, 0, 1]), square, k) for k in (1, 2, 3)] == [0.0, 0.5, 1.0]
    noisy = embeddings + rng.normal(0, 0.8, embeddings.shape)
    r1, r5 = embedding.compare(labels, noisy, embeddings, k=(1, 5), n_resamples=500)
    assert (r1.metric, r5.metric, r1.method, r1.n_samples) == ("recall_at_1", "recall_at_5", "paired_per_sample", 119)


def test_a_variant_identical_to_the_baseline_has_delta_zero_and_a_point_interval_in_every_task():
    labels, _, base = classification_pair()
    y = np.random.default_rng(0).normal(size=(50, 3))
    masks = np.random.default_rng(1).integers(0, 3, (10, 4, 4))
    truth, found = synthetic_detections(12, seed=2, noise=3.0)
    results = [
        *classification.compare(labels, base, base, top_k=(1, 3)),
        *regression.compare(y, y + 0.1, y + 0.1),
        *segmentation.compare(masks, np.eye(3)[masks], np.eye(3)[masks]),
        *detection.compare(truth, found, found, n_resamples=50),
        *embedding.compare(np.repeat(np.arange(10), 5), y, y),
        *user.compare(labels, base.argmax(1), base.argmax(1), metric="sklearn.metrics.accuracy_score", n_resamples=50),
    ]
    for result in results:
        assert (result.metric_delta, result.ci_low, result.ci_high) == (0, 0, 0), result


# --- a user's metric --------------------------------------------------------------------------

def balanced_error(labels, outputs) -> float:
    """A user's metric: the mean over classes of the error rate within the class."""
    labels, outputs = np.asarray(labels), np.asarray(outputs)
    return float(np.mean([np.mean(outputs[labels == c] != c) for c in np.unique(labels)]))


def test_user_metric_from_a_target_is_compared_with_the_paired_bootstrap():
    labels, variant, base = classification_pair()
    (result,) = user.compare(labels, variant.argmax(1), base.argmax(1), metric=f"{__name__}.balanced_error",
                             higher_is_better=False, n_resamples=300, seed=2)
    assert result.metric == "balanced_error" and result.method == "paired_bootstrap"
    assert result.value == pytest.approx(balanced_error(labels, variant.argmax(1)))
    assert result.baseline_value == pytest.approx(balanced_error(labels, base.argmax(1)))
    assert result.ci_low <= result.metric_delta <= result.ci_high and result.n_resamples == 300
    # a mapping binds keyword arguments to a library function, as a config's _target_ does
    (f1,) = user.compare(labels, variant.argmax(1), base.argmax(1), n_resamples=100, name="macro_f1",
                         metric={"_target_": "sklearn.metrics.f1_score", "average": "macro"})
    from sklearn.metrics import f1_score

    assert f1.metric == "macro_f1" and f1.value == pytest.approx(f1_score(labels, variant.argmax(1), average="macro"))


@pytest.mark.parametrize("target", ["no_such_package_xyz.metrics.score", "numpy.no_such_function", "math"])
def test_a_target_that_cannot_be_imported_is_one_paragraph_naming_it_and_the_fix(target):
    labels, variant, base = classification_pair(n=20)
    with pytest.raises(UserInputError) as error:
        user.compare(labels, variant, base, metric={"_target_": target})
    message = one_paragraph(error)
    assert f"={target} cannot be loaded" in message and "check the spelling" in message


def test_a_user_metric_returning_an_array_is_refused():
    labels, variant, base = classification_pair(n=20)
    with pytest.raises(UserInputError) as error:
        user.compare(labels, variant.argmax(1), base.argmax(1), metric="numpy.subtract")
    assert "one number" in one_paragraph(error)


# --- labels that do not fit the outputs ---------------------------------------------------------

def test_segmentation_masks_of_another_size_than_the_output_are_refused():
    masks = np.zeros((4, 32, 32), np.uint8)
    with pytest.raises(UserInputError) as error:
        segmentation.compare(masks, np.zeros((4, 16, 16, 3)), np.zeros((4, 16, 16, 3)))
    message = one_paragraph(error)
    assert "32 x 32" in message and "16 x 16" in message and "nearest-neighbour" in message


def test_segmentation_mask_ids_beyond_the_models_classes_are_refused():
    masks = np.full((2, 4, 4), 7, np.uint8)
    with pytest.raises(UserInputError) as error:
        segmentation.mean_iou(masks, np.zeros((2, 4, 4, 3)))
    assert "[7]" in one_paragraph(error) and "ignore_index" in str(error.value)


@pytest.mark.parametrize("box, problem", [
    ([10.0, 10.0, 400.0, 50.0], "outside the 320 x 240 image"),
    ([-3.0, 10.0, 40.0, 50.0], "outside the 320 x 240 image"),
    ([50.0, 10.0, 40.0, 50.0], "negative width or height"),
    ([10.0, 60.0, 40.0, 50.0], "negative width or height"),
])
def test_ground_truth_boxes_out_of_the_image_or_inverted_are_refused(box, problem):
    truth = [GroundTruth(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([0]), (240, 320)),
             GroundTruth(np.array([[0.0, 0.0, 10.0, 10.0], box]), np.array([0, 1]), (240, 320))]
    found = [Detections(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0))] * 2
    with pytest.raises(UserInputError) as error:
        detection.compare(truth, found, found)
    message = one_paragraph(error)
    assert problem in message and "box 1 of image 1" in message and "box_format" in message


def test_normalised_yx_boxes_convert_to_pixels_and_then_fit():
    boxes = detection.to_xyxy_pixels(np.array([[0.1, 0.2, 0.5, 0.9]]), (240, 320), "yxyx", normalized=True)
    assert boxes.tolist() == [[64.0, 24.0, 288.0, 120.0]]
    detection.check([GroundTruth(boxes, np.array([0]), (240, 320))],
                    [Detections(boxes, np.array([0]), np.array([1.0]))])


def test_other_labels_that_do_not_fit_are_refused():
    labels, variant, _ = classification_pair(n=20, classes=4)
    with pytest.raises(UserInputError) as error:
        classification.compare(labels + 2, variant, variant)
    assert "outside the model's 4 classes" in one_paragraph(error)
    with pytest.raises(UserInputError) as error:
        regression.compare(np.zeros((20, 3)), np.zeros((20, 4)), np.zeros((20, 4)))
    assert "3 values per sample" in one_paragraph(error)
    truth, found = synthetic_detections(3, seed=0, noise=1.0)
    with pytest.raises(UserInputError) as error:
        detection.compare(truth, found[:2], found[:2])
    assert "3 images but the outputs 2" in one_paragraph(error)


def test_comparison_records_its_method_and_refuses_an_unknown_one():
    result = paired_bootstrap_sums("s", np.ones((5, 1)), np.ones((5, 1)), lambda s: s[:, 0], higher_is_better=True,
                                   n_resamples=10, seed=5)
    assert (result.method, result.n_resamples, result.seed, result.n_samples) == ("paired_bootstrap", 10, 5, 5)
    with pytest.raises(ValueError):
        MetricComparison("m", 1, 1, 0, 0, 0, True, "bca", 10, 0, 0.95, 5)
