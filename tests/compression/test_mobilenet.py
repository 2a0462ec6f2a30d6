"""Every recipe on a small MobileNetV2 (alpha 0.35, 32x32, random weights): expected ops,
emulation, agreement with TensorFlow (probabilities and top-1) and sizes. Slow (about a minute
per target).

Random weights alone make a network whose activations vanish (1e-12 at the last block) and
whose probabilities are all 0.1: any program agrees with that. Each BatchNormalization's scale
is therefore set so that its output has unit RMS on the test images (one factor per layer, so
the network's shape of computation is unchanged): the probabilities then range 0.008-0.44 and
top-1 means something.
"""

from __future__ import annotations

import numpy as np
import pytest

from sweep_testing import compose
from helpers import EXPECTED_OPS, convert_and_run, mobilenet, valid_cells

pytestmark = pytest.mark.slow


# Per recipe: the largest |probability - TF's| allowed and how many of the 16 images must keep
# TF's top-1: about twice the measured error (fp16 0.0067, int8 0.014, int8_per_block 0.006,
# int8_per_tensor 0.010; all 16 kept), and where the error reaches the closest top-2 gaps
# (0.008), what was kept with two images of margin (w8a8 0.05 keeping 13-16, int4_per_block 0.16
# keeping 12, palettize 0.14 keeping 11, palettize_grouped 0.18 keeping 13).
AGREEMENT = {
    "fp32": (1e-4, 16), "fp16": (0.015, 16), "fp16_mixed": (0.015, 16),
    "int8": (0.03, 16), "int8_per_block": (0.015, 16), "int8_per_tensor": (0.025, 16), "w8a8": (0.1, 11),
    "int4_per_block": (0.3, 10), "palettize": (0.3, 9), "palettize_grouped": (0.35, 11),
}
# Pruning half of a random network's weights leaves nothing of TF's answer (0 of 16 top-1 kept,
# errors 0.34): those recipes are checked for valid probabilities only.
PRUNED = {"sparse", "sparse_int8", "sparse_palettize"}


def _unit_rms_batch_norms(keras_model, x) -> None:
    """Scale each BatchNormalization's gamma so that its output has unit RMS on ``x``, in order."""
    import keras

    for layer in keras_model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            inputs = keras.Model(keras_model.input, layer.input).predict(x, verbose=0).astype(np.float64)
            gamma, beta, mean, variance = layer.get_weights()
            rms = np.sqrt(np.mean(inputs ** 2))
            layer.set_weights([gamma * np.sqrt(variance + layer.epsilon) / rms, beta, mean, variance])


@pytest.fixture(scope="module")
def model_and_data():
    from precision_sweep.data.models import LoadedModel, _content_hash

    model, x = mobilenet(size=32, n=48)
    _unit_rms_batch_norms(model.keras_model, x)
    model = LoadedModel(model.name, model.keras_model, model.input_name, model.input_shape, model.outputs_are,
                        _content_hash(model.keras_model))  # new weights: a new key for the converter's caches
    reference = model.keras_model.predict(x[:16], verbose=0)
    assert reference.max() > 0.3 and reference.min() < 0.02  # far from uniform
    return model, x, reference


@pytest.fixture(scope="module")
def convert_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mobilenet-cache")


@pytest.mark.parametrize(
    "recipe,target",
    valid_cells(),
)
def test_mobilenet_recipe(model_and_data, convert_cache, tmp_path, recipe, target):
    model, x, reference = model_and_data
    converted, ops, outputs = convert_and_run(model, recipe, target, tmp_path, x[:16], calibration=x[16:],
                                              cache_dir=convert_cache)
    coremltools_target = compose([f"target={target}"]).target.coremltools_target
    assert converted.effective_target == coremltools_target
    assert EXPECTED_OPS[recipe].get(coremltools_target, set()) <= ops, sorted(ops)
    assert np.isfinite(outputs).all()
    np.testing.assert_allclose(outputs.sum(axis=1), 1, atol=1e-2)
    if recipe not in PRUNED:
        tolerance, kept = AGREEMENT[recipe]
        error = np.abs(outputs - reference).max()
        same_top1 = int((outputs.argmax(axis=1) == reference.argmax(axis=1)).sum())
        assert error < tolerance and same_top1 >= kept, (error, same_top1)
    if recipe != "fp32":
        assert converted.compression_ratio > 1.5
        assert converted.bits_per_weight < 17
