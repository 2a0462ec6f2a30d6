"""The emulator's public face: Emulator(path, compute_units).predict(feeds), any batch size."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    import coremltools as ct
    import keras

    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    root = tmp_path_factory.mktemp("pkgs")
    paths = {}
    for name, precision in (("fp32", ct.precision.FLOAT32), ("fp16", ct.precision.FLOAT16)):
        mlmodel = ct.convert(
            model,
            convert_to="mlprogram",
            compute_precision=precision,
            minimum_deployment_target=ct.target.iOS16,
            inputs=[ct.TensorType(name="image", shape=(ct.RangeDim(1, 64, 1), 8, 8, 1))],
        )
        paths[name] = root / f"{name}.mlpackage"
        mlmodel.save(str(paths[name]))
    return model, paths


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_any_batch_size_matches_tensorflow_in_fp32(packages, batch):
    from precision_sweep.emulator import Emulator

    model, paths = packages
    x = np.random.default_rng(batch).random((batch, 8, 8, 1), dtype=np.float32)
    out = Emulator(paths["fp32"]).predict({"image": x})
    (value,) = out.values()
    assert value.dtype == np.float32 and value.shape == (batch, 5)
    np.testing.assert_allclose(value, model.predict(x, verbose=0), atol=1e-5)


def test_fp16_program_values_really_are_float16(packages):
    from precision_sweep.emulator import Emulator

    _, paths = packages
    emulator = Emulator(paths["fp16"], compute_units="cpu_only")
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    outputs, intermediates = emulator.predict({"image": x}, capture=True)
    assert all(value.dtype == np.float16 for _, value in intermediates.values())
    assert {op_type for op_type, _ in intermediates.values()} >= {"conv", "relu", "max_pool", "softmax"}
    (value,) = outputs.values()
    assert value.dtype == np.float16


def test_unknown_op_is_refused_at_load_naming_the_op(packages, monkeypatch):
    from precision_sweep.emulator import Emulator, UnsupportedOpError
    from precision_sweep.emulator.registry import KERNELS

    import precision_sweep.emulator.ops  # noqa: F401

    monkeypatch.delitem(KERNELS, "max_pool")
    with pytest.raises(UnsupportedOpError) as info:
        Emulator(packages[1]["fp32"])
    message = str(info.value)
    assert "max_pool" in message and "Supported op types" in message and "conv" in message


def test_missing_feed_is_named(packages):
    from precision_sweep.emulator import Emulator

    with pytest.raises(KeyError, match="image"):
        Emulator(packages[1]["fp32"]).predict({"x": np.zeros((1, 8, 8, 1), np.float32)})


def test_unknown_compute_units_is_refused(packages):
    from precision_sweep.emulator import Emulator

    with pytest.raises(ValueError, match="cpu_only"):
        Emulator(packages[1]["fp32"], compute_units="gpu_only")
