"""A tiny detector built (not trained) for the detection tests: 16x16 grayscale images holding up
to three 4x4 squares on a 4x4 grid, class 0 bright (1.0), class 1 grey (0.5).

Each grid cell is one candidate: its per-class scores come from the cell's mean intensity
(sigmoid of a two-unit ReLU feature, so 1.0 and 0.5 separate), its box is the cell's anchor
plus a small offset from the pooled image (a Dense layer whose bias holds the anchors), so boxes
are close to, not exactly, the labels and fp16 or int8 weights move them. The NMS runs outside
the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE, CELL, CELLS = 16, 4, 16


def anchors() -> np.ndarray:
    rows, cols = np.divmod(np.arange(CELLS), SIZE // CELL)
    return np.stack([cols * CELL, rows * CELL, cols * CELL + CELL, rows * CELL + CELL], axis=1).astype(np.float32)


def images_and_boxes(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 16, 16, 1) and labels (n, 3, 5): rows (class, x_min, y_min, x_max, y_max), class -1 padding."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.05, size=(n, SIZE, SIZE, 1)).astype(np.float32)
    y = np.full((n, 3, 5), -1.0, np.float32)
    boxes = anchors()
    for i in range(n):
        for k, cell in enumerate(rng.choice(CELLS, size=rng.integers(1, 4), replace=False)):
            label = int(rng.integers(0, 2))
            x0, y0, x1, y1 = boxes[cell].astype(int)
            x[i, y0:y1, x0:x1, 0] = 1.0 if label == 0 else 0.5
            y[i, k] = [label, x0, y0, x1, y1]
    return x, y


def detector():
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 1), name="image")
    pooled = keras.layers.AveragePooling2D(CELL)(image)  # (4, 4, 1): each cell's mean
    levels = keras.layers.Conv2D(2, 1, activation="relu", name="levels")(pooled)  # relu(m - .5), relu(.5 - m)
    logits = keras.layers.Conv2D(2, 1, activation="sigmoid", name="class_scores")(levels)
    scores = keras.layers.Reshape((CELLS, 2), name="scores")(logits)
    offsets = keras.layers.Dense(CELLS * 4, name="box_head")(keras.layers.Flatten()(pooled))
    boxes = keras.layers.Reshape((CELLS, 4), name="boxes")(offsets)
    model = keras.Model(image, [boxes, scores])
    model.get_layer("levels").set_weights([np.array([[[[1.0, -1.0]]]], np.float32), np.array([-0.5, 0.5], np.float32)])
    model.get_layer("class_scores").set_weights([np.array([[[[40.0, -40.0], [-40.0, -40.0]]]], np.float32),
                                                 np.array([-17.0, 3.0], np.float32)])
    rng = np.random.default_rng(1)
    model.get_layer("box_head").set_weights([rng.normal(0, 0.15, size=(CELLS, CELLS * 4)).astype(np.float32),
                                             anchors().reshape(-1)])
    return model


def save(root: Path, n: int = 60, nms_inside: bool = False) -> tuple[Path, Path]:
    """The detector (:func:`detector_with_nms` with ``nms_inside``) saved as .keras, and an npz of
    ``n`` labelled images."""
    model_path, data_path = root / ("detector_nms.keras" if nms_inside else "detector.keras"), root / "boxes.npz"
    (detector_with_nms() if nms_inside else detector()).save(model_path)
    x, y = images_and_boxes(n)
    np.savez(data_path, x=x, y=y)
    return model_path, data_path


def detector_with_nms(max_boxes: int = 8):
    """:func:`detector` with its NMS inside (:class:`kept_boxes.KeptBoxes`), batch 1: outputs
    ``boxes`` (1, max_boxes, 4), ``scores`` (1, max_boxes) and ``classes`` (1, max_boxes)."""
    import keras
    from kept_boxes import KeptBoxes

    image = keras.Input((SIZE, SIZE, 1), batch_size=1, name="image")
    boxes, scores = detector()(image)
    kept = KeptBoxes(max_boxes, name="kept")(boxes, scores)
    names = ("boxes", "scores", "classes")
    return keras.Model(image, [keras.layers.Identity(name=name)(tensor) for name, tensor in zip(names, kept)])

