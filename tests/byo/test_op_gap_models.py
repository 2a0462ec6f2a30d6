"""Acceptance of issue 15: classifiers built around ``tf.image.crop_and_resize`` and
``tf.image.non_max_suppression`` run through a real sweep (fp32, fp16) to FINISHED runs.

Both models are ``tf.Module`` SavedModels (``model=saved_model``): their graphs are plain
TensorFlow ops, so the app loads them without any custom Keras layer class (a ``.keras`` file
with a custom layer would need the layer's class registered in the app's process).

* crop: every sample's channels are laid side by side on one image, ``crop_and_resize`` cuts
  fixed boxes out of it (one image, so box indices are zeros: the form coremltools converts
  with a flexible batch) and a dense head scores the crops. Converts to ``crop_resize`` at
  iOS17.
* NMS: each sample has four boxes (two overlapping pairs) scored from its pixels; sample *i*'s
  boxes are shifted by ``2 i`` so no box of one sample overlaps another's, and one
  ``non_max_suppression`` over the batch keeps the best box of each pair per sample. The kept
  boxes mask the features the dense head scores. Converts to ``non_maximum_suppression`` at
  iOS16 (the TF frontend passes ``score_threshold``, which iOS17's op no longer has).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from byo_helpers import random_samples, write_npz
from sweep_testing import mlflow_client, run_cli

H, W, C, CLASSES = 12, 12, 3, 3
N_SAMPLES = 24
# (y1, x1, y2, x2), normalized: what crop_and_resize cuts out of every sample.
CROP_BOXES = np.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 1.0, 1.0], [0.1, 0.5, 0.9, 0.95]], np.float32)
CROP_SIZE = (4, 4)
# Per sample: two pairs of overlapping boxes (IoU 0.875 and 0.8). Corners on a 1/8 grid stay
# exact in fp16 for the batch shifts used here (2 i < 64).
NMS_BOXES = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.125, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.625]],
                     np.float32)
# At least every box of the largest batch the sweep predicts (runtime.batch_size and the
# diagnosis/calibration batches are at most N_SAMPLES samples here).
MAX_KEPT = 256


def _image_signature():
    import tensorflow as tf

    return [tf.TensorSpec((None, H, W, C), tf.float32, name="image")]


def crop_classifier():
    """A ``tf.Module`` classifier that scores fixed crops of its input image."""
    import tensorflow as tf

    class CropClassifier(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            features = len(CROP_BOXES) * CROP_SIZE[0] * CROP_SIZE[1] * C
            self.w = tf.Variable(rng.normal(0, 0.3, (features, CLASSES)).astype(np.float32))
            self.b = tf.Variable(np.zeros(CLASSES, np.float32))

        @tf.function(input_signature=_image_signature())
        def __call__(self, x):
            n, k = tf.shape(x)[0], len(CROP_BOXES)
            side_by_side = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, H, W, -1])
            crops = tf.image.crop_and_resize(side_by_side, CROP_BOXES, tf.zeros([k], tf.int32), CROP_SIZE)
            crops = tf.transpose(tf.reshape(crops, [k, *CROP_SIZE, n, C]), [3, 0, 1, 2, 4])
            features = tf.reshape(crops, [n, k * CROP_SIZE[0] * CROP_SIZE[1] * C])
            return {"probs": tf.nn.softmax(tf.matmul(features, self.w) + self.b)}

    return CropClassifier()


def nms_classifier():
    """A ``tf.Module`` classifier whose features are masked by the boxes NMS keeps."""
    import tensorflow as tf

    class NmsClassifier(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(1)
            k = len(NMS_BOXES)
            self.score_w = tf.Variable(rng.normal(0, 0.5, (H * W * C, k)).astype(np.float32))
            self.feature_w = tf.Variable(rng.normal(0, 0.3, (H * W * C, k * 4)).astype(np.float32))
            self.w = tf.Variable(rng.normal(0, 0.3, (k * 4, CLASSES)).astype(np.float32))

        @tf.function(input_signature=_image_signature())
        def __call__(self, x):
            return {"probs": self.scores(x)[0]}

        def scores(self, x):
            n, k = tf.shape(x)[0], len(NMS_BOXES)
            flat = tf.reshape(x, [n, H * W * C])
            box_scores = tf.reshape(tf.sigmoid(tf.matmul(flat, self.score_w)), [-1])
            shift = tf.cast(tf.range(n) * 2, tf.float32)[:, None, None] * tf.constant([1.0, 0.0, 1.0, 0.0])
            boxes = tf.reshape(NMS_BOXES[None] + shift, [-1, 4])
            kept = tf.image.non_max_suppression(boxes, box_scores, MAX_KEPT, iou_threshold=0.5)
            mask = tf.reduce_max(tf.cast(tf.equal(tf.range(n * k)[:, None], kept[None, :]), tf.float32), axis=1)
            features = tf.reshape(tf.matmul(flat, self.feature_w), [n * k, 4]) * mask[:, None]
            return tf.nn.softmax(tf.matmul(tf.reshape(features, [n, k * 4]), self.w)), kept

    return NmsClassifier()


def _save(module, path: Path) -> Path:
    import tensorflow as tf

    tf.saved_model.save(module, str(path))
    return path


def _sweep(tmp_path: Path, model_dir: Path, target: str):
    x, y = random_samples(N_SAMPLES, (H, W, C), CLASSES)
    data = write_npz(tmp_path / "images.npz", x, y)
    result = run_cli(
        ["precision-sweep", "-m", "precision=fp32,fp16", f"target={target}", "runtime=emulator",
         "runtime.progress=false", "runtime.batch_size=16", "model=saved_model", f"model.path={model_dir}",
         "dataset=npz", f"dataset.path={data}", "dataset.test_size=1.0"],
        cwd=tmp_path,
    )
    client = mlflow_client(tmp_path / "outputs")
    experiment = client.get_experiment_by_name("precision-sweep")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    children = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    return result, client, children


def _assert_finished_with_op(result, client, children, op_type: str) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    by_precision = {r.data.params["precision"]: r for r in children}
    assert sorted(by_precision) == ["fp16", "fp32"], [r.data.tags for r in children]
    for precision, run in by_precision.items():
        assert run.info.status == "FINISHED", (precision, run.data.tags.get("error_message"))
        assert run.data.metrics["n_samples"] == N_SAMPLES
        placement = pd.read_csv(client.download_artifacts(run.info.run_id, "placement.csv"))
        assert op_type in set(placement["op_type"]), (precision, sorted(set(placement["op_type"])))
    assert by_precision["fp32"].data.metrics["agreement"] == 1.0
    assert by_precision["fp16"].data.metrics["agreement"] >= 0.9


@pytest.mark.slow
def test_crop_and_resize_classifier_sweeps_at_ios17(tmp_path):
    model_dir = _save(crop_classifier(), tmp_path / "crop_model")
    _assert_finished_with_op(*_sweep(tmp_path, model_dir, "ios17"), "crop_resize")


@pytest.mark.slow
def test_non_max_suppression_classifier_sweeps_at_ios16(tmp_path):
    import tensorflow as tf

    module = nms_classifier()
    x, _ = random_samples(5, (H, W, C), CLASSES)
    _, kept = module.scores(tf.constant(x, tf.float32))
    assert len(kept) == 2 * len(x)  # NMS really selects: one box of each overlapping pair per sample
    model_dir = _save(module, tmp_path / "nms_model")
    _assert_finished_with_op(*_sweep(tmp_path, model_dir, "ios16"), "non_maximum_suppression")
