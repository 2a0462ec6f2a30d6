"""Models and files as an app ships them, for the image-input, classifier and
``precision-compare`` tests: a tiny RGB classifier of colourised 8x8 digits, trained here,
and Core ML files converted from it with ``ct.convert`` as a user would (right or wrong).

The images' channels differ (R = the digit, G = half of it, B = its negative), so a swapped
channel order changes the predictions; the core network is trained on inputs in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASS_NAMES = [f"digit_{i}" for i in range(10)]


def rgb_digits() -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (N, 8, 8, 3), labels) of the embedded digits, coloured per channel."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = digits.images * (255.0 / 16.0)
    pixels = np.stack([gray, gray * 0.5, 255.0 - gray], axis=-1)
    return np.round(pixels).astype(np.uint8), digits.target.astype(np.int64)


def save_npz(path: Path) -> Path:
    pixels, labels = rgb_digits()
    np.savez(path, x=pixels, y=labels, class_names=np.array(CLASS_NAMES))
    return path


def train_core(seed: int = 0):
    """A small CNN trained on the digits pixels mapped to [-1, 1] (pixel / 127.5 - 1)."""
    import keras

    keras.utils.set_random_seed(seed)
    pixels, labels = rgb_digits()
    x = pixels.astype(np.float32) / 127.5 - 1.0
    inputs = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(12, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(16, 3, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    core = keras.Model(inputs, outputs, name="rgb_digits")
    core.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    core.fit(x, labels, epochs=12, batch_size=64, verbose=0)
    return core


def with_rescaling(core):
    """The core behind its own ``Rescaling(1/127.5, offset=-1)``: a model fed raw pixels."""
    import keras

    inputs = keras.Input((8, 8, 3), name="image")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    return keras.Model(inputs, core(scaled), name="rgb_digits_rescaling")


def convert_file(model, path: Path, scale: float, bias, color_layout: str = "RGB", target: str = "iOS16",
                 classifier: bool = True) -> Path:
    """A Core ML package as an app converts it: ImageType + ClassifierConfig (ct.convert)."""
    import coremltools as ct

    mlmodel = ct.convert(
        model,
        inputs=[ct.ImageType(name="image", shape=(1, 8, 8, 3), scale=scale, bias=list(bias),
                             color_layout=getattr(ct.colorlayout, color_layout))],
        classifier_config=ct.ClassifierConfig(CLASS_NAMES) if classifier else None,
        minimum_deployment_target=getattr(ct.target, target),
        compute_precision=ct.precision.FLOAT32,
        skip_model_load=True,
    )
    mlmodel.save(str(path))
    return path
