"""A detector's NMS inside the model, as a Keras layer registered for loading: what
``model.imports=[kept_boxes]`` imports before the detection tests' NMS-inside model loads.

Per image (the model's batch is fixed at 1, as TensorFlow's NMS takes one image), the best class
score of each candidate box goes through ``tf.image.non_max_suppression_with_scores``
(NonMaxSuppressionV5, which coremltools converts to MIL ``non_maximum_suppression``), and the
kept boxes, scores and classes are padded to ``max_boxes`` rows (score 0, class -1)."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="precision_sweep_tests")
class KeptBoxes(keras.layers.Layer):
    def __init__(self, max_boxes: int = 8, iou_threshold: float = 0.5, score_threshold: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.max_boxes, self.iou_threshold, self.score_threshold = max_boxes, iou_threshold, score_threshold

    def call(self, boxes, scores):
        candidates, class_scores = boxes[0], scores[0]
        best = tf.reduce_max(class_scores, axis=-1)
        classes = tf.cast(tf.argmax(class_scores, axis=-1), tf.float32)
        kept, kept_scores = tf.image.non_max_suppression_with_scores(
            candidates, best, self.max_boxes, iou_threshold=self.iou_threshold, score_threshold=self.score_threshold)
        padding = [[0, self.max_boxes - tf.shape(kept)[0]]]
        return (tf.pad(tf.gather(candidates, kept), padding + [[0, 0]])[None],
                tf.pad(kept_scores, padding)[None],
                tf.pad(tf.gather(classes, kept), padding, constant_values=-1.0)[None])

    def compute_output_shape(self, boxes_shape, scores_shape):
        return (1, self.max_boxes, 4), (1, self.max_boxes), (1, self.max_boxes)

    def get_config(self):
        return {**super().get_config(), "max_boxes": self.max_boxes, "iou_threshold": self.iou_threshold,
                "score_threshold": self.score_threshold}
