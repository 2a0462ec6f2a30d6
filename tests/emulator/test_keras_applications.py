"""Keras Applications (random weights, smallest input each allows): FP32 emulator vs TF.

The models end in logits (``classifier_activation=None``) so that the top-1 check is
meaningful. MobileNet and MobileNetV2 run by default; the bigger ones are marked slow.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("coremltools")

import _emu_helpers as H  # noqa: E402

# name -> (smallest input side with weights=None, slow?)
APPLICATIONS = {
    "MobileNet": (32, False),
    "MobileNetV2": (32, False),
    "MobileNetV3Small": (32, True),
    "MobileNetV3Large": (32, True),
    "EfficientNetB0": (32, True),
    "EfficientNetV2B0": (32, True),
    "ResNet50": (32, True),
    "ResNet50V2": (32, True),
    "DenseNet121": (32, True),
    "InceptionV3": (75, True),
    "Xception": (71, True),
    "NASNetMobile": (32, True),
    "VGG16": (32, True),
}


def _params():
    for name, (side, slow) in APPLICATIONS.items():
        marks = [pytest.mark.slow] if slow else []
        yield pytest.param(name, side, marks=marks, id=name)


@pytest.mark.parametrize("name,side", list(_params()))
def test_application_matches_tf(name, side):
    import keras

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(side, side, 3), classes=10, classifier_activation=None
    )
    batch = 4
    mlmodel = H.convert(model, [(batch, side, side, 3)])
    # Preprocessing-included models (MobileNetV3, EfficientNet) expect 0..255 pixels.
    x = np.random.default_rng(0).uniform(0, 255, (batch, side, side, 3)).astype(np.float32)
    if name not in ("MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "EfficientNetV2B0"):
        x = x / 127.5 - 1.0
    ref = H.keras_reference(model, {"input_0": x})[0]
    (got,), _ = H.emulate(mlmodel, {"input_0": x})
    H.assert_matches_tf(got, ref, rtol=1e-4, top1=True)
