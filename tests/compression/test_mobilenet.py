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


# Random-weight MobileNetV2 has activations in its deep blocks so small that the int8 scale
# coremltools' insert_*_quantize_dequantize_pair passes compute from their range rounds to 0 in
# fp16, and its quantize op refuses it ("scale cannot be 0"). Same statistics on a Mac, same
# error: a coremltools limit on degenerate (untrained) activations, not of our calibration.
W8A8_DEGENERATE = pytest.mark.xfail(raises=ValueError, strict=True, reason="coremltools: quantize scale 0 on vanishing activations")


@pytest.mark.parametrize(
    "recipe,target",
    [pytest.param(r, t, marks=W8A8_DEGENERATE) if r == "w8a8" else (r, t) for r, t in valid_cells()],
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
