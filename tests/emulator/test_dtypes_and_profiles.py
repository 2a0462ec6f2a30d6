"""Declared dtypes, fp16 overflow, and the error ordering of the compute-unit models."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
ct = pytest.importorskip("coremltools")

import _emu_helpers as H  # noqa: E402


def _overflow_model():
    import keras

    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, kernel_initializer=keras.initializers.Constant(300.0), bias_initializer="zeros"),
            keras.layers.Dense(3, kernel_initializer=keras.initializers.Constant(0.001)),
        ]
    )


def test_fp16_overflow_gives_inf_and_fp32_stays_finite():
    from precision_sweep.emulator import Emulator

    model = _overflow_model()
    x = np.full((2, 8), 40.0, np.float32)  # first layer: 8 * 40 * 300 = 96000 > 65504
    want = H.keras_reference(model, {"input_0": x})[0]
    fp32 = Emulator(H.convert(model, [(2, 8)], precision="fp32")).predict({"input_0": x})
    (out32,) = fp32.values()
    assert np.all(np.isfinite(out32))
    np.testing.assert_allclose(out32, want, rtol=1e-5)
    for units in ("cpu_only", "cpu_and_gpu", "cpu_and_ne"):
        emu = Emulator(H.convert(model, [(2, 8)], precision="fp16"), compute_units=units, device="m5")
        outputs, inter = emu.predict({"input_0": x}, capture=True)
        (out16,) = outputs.values()
        assert np.all(np.isinf(out16)), units
        big = [v for op_type, v in inter.values() if op_type in ("linear", "matmul")]
        assert big and np.all(np.isinf(big[0])), "the first Dense must overflow to inf"


@pytest.mark.slow
def test_every_op_yields_its_declared_dtype():
    import keras

    from precision_sweep.emulator import Emulator

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    for precision in ("fp16", "fp32"):
        emu = Emulator(H.convert(model, [(2, 32, 32, 3)], precision=precision), compute_units="cpu_and_ne")
        _, inter = emu.predict({"input_0": x}, capture=True)
        for step in emu.plan.steps:
            for name, dtype in step.outputs:
                assert inter[name][1].dtype == dtype, (step.op_type, name, inter[name][1].dtype, dtype)
        if precision == "fp16":
            assert any(dtype == np.float16 for s in emu.plan.steps for _, dtype in s.outputs)


def _deep_model(depth=20, width=64):
    import keras

    L = keras.layers
    keras.utils.set_random_seed(3)
    layers = [keras.Input((8, 8, 8)), L.Conv2D(width, 3, padding="same", activation="tanh")]
    for i in range(depth // 2 - 1):
        layers.append(L.Conv2D(width, 3, padding="same", activation="tanh"))
    layers.append(L.Flatten())
    for i in range(depth // 2):
        layers.append(L.Dense(width * 4, activation="tanh"))
    layers.append(L.Dense(10))
    return keras.Sequential(layers)


def test_error_ordering_follows_the_accumulators_on_long_sums():
    """coremltools #2625 (ResNet18, M4): CPU_ONLY is further from fp32 than ALL. In the models,
    the CPU's fp16 running sums lose more than the ANE's wide accumulator, and the GPU's fp32
    sums least."""
    from precision_sweep.emulator import Emulator

    model = _deep_model()
    shape = (16, 8, 8, 8)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    reference = H.keras_reference(model, {"input_0": x})[0].astype(np.float64)
    (ref32,), _ = H.emulate(H.convert(model, [shape], precision="fp32"), {"input_0": x})
    H.assert_matches_tf(ref32, reference, rtol=1e-4, top1=False)
    fp16 = H.convert(model, [shape], precision="fp16")
    errors = {}
    for units in ("cpu_only", "cpu_and_gpu", "all"):
        out = Emulator(fp16, compute_units=units, device="m1").predict({"input_0": x})
        (got,) = out.values()
        assert got.dtype == np.float16
        errors[units] = float(np.mean(np.abs(got.astype(np.float64) - reference)))
    assert errors["cpu_and_gpu"] <= errors["all"] < errors["cpu_only"], errors
