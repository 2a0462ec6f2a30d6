"""Every recipe on a small MobileNetV2 (alpha 0.35, 32x32, random weights): expected ops,
emulation, agreement with TensorFlow and sizes. Slow (about a minute per target)."""

from __future__ import annotations

import numpy as np
import pytest

from sweep_testing import compose
from helpers import EXPECTED_OPS, convert_and_run, mobilenet, valid_cells

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_and_data():
    model, x = mobilenet(size=32, n=48)
    reference = model.keras_model.predict(x[:16], verbose=0)
    return model, x, reference


@pytest.fixture(scope="module")
def convert_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mobilenet-cache")


@pytest.mark.parametrize(
    "recipe,target",
    # w8a8 included: random-weight MobileNetV2 has vanishing activations in its deep blocks,
    # whose ranges calibration widens to MIN_RANGE (convert/calibration.py).
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
    # Random weights give near-uniform probabilities: compare the outputs, not only top-1.
    tolerance = {"fp32": 1e-4, "fp16": 2e-3, "fp16_mixed": 2e-3}.get(recipe, 0.05)
    assert np.abs(outputs - reference).max() < tolerance, np.abs(outputs - reference).max()
    if recipe != "fp32":
        assert converted.compression_ratio > 1.5
        assert converted.bits_per_weight < 17
