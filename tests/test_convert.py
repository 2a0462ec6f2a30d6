"""Conversion: cached frontend equals a plain conversion; effective target; validity."""

from __future__ import annotations

import numpy as np
import pytest

from sweep_testing import compose


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    from precision_sweep.data.models import LoadedModel, _content_hash

    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    return LoadedModel("tiny", model, "image", (8, 8, 1), "probabilities", _content_hash(model))


def _io_and_ops(mlmodel):
    spec = mlmodel.get_spec()
    io = ([i.type.multiArrayType.dataType for i in spec.description.input],
          [o.type.multiArrayType.dataType for o in spec.description.output])
    from precision_sweep.emulator.program import load_program

    program, _ = load_program(mlmodel)
    return io, [op.op_type for op in program.functions["main"].operations if op.op_type != "const"]


def _weights(mlmodel) -> list[tuple[str, tuple, bytes]]:
    """Every constant of the program, in program order: dtype, shape and bytes."""
    from precision_sweep.emulator.program import load_program

    program, _ = load_program(mlmodel)
    consts = [np.asarray(op.outputs[0].val) for op in program.functions["main"].operations if op.op_type == "const"]
    return [(c.dtype.str, c.shape, c.tobytes()) for c in consts]


def _outputs(mlmodel, x) -> list[tuple[str, np.ndarray]]:
    from precision_sweep.emulator import Emulator

    emulator = Emulator(mlmodel, compute_units="cpu_only")
    out = emulator.predict({"image": x})
    return [(name, np.asarray(out[name])) for name in emulator.output_names]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("target", ["ios15", "ios16"])
def test_cached_frontend_variant_equals_plain_conversion(tiny_model, tmp_path, precision, target):
    import coremltools as ct

    from precision_sweep.convert import convert_variant
    from precision_sweep.convert.recipes import compute_precision

    cfg = compose([f"precision={precision}", f"target={target}"])
    converted = convert_variant(tiny_model, cfg.precision, cfg.target, tmp_path / "m.mlpackage")
    plain = ct.convert(
        tiny_model.keras_model,
        convert_to="mlprogram",
        compute_precision=compute_precision(cfg.precision),
        minimum_deployment_target=getattr(ct.target, cfg.target.coremltools_target),
        inputs=[ct.TensorType(name="image", shape=(ct.RangeDim(1, 1024, 1), 8, 8, 1))],
        skip_model_load=True,
    )
    ours = ct.models.MLModel(str(converted.path), skip_model_load=True)
    assert _io_and_ops(ours) == _io_and_ops(plain)
    # Bit for bit: every weight, and the outputs of both programs on the same inputs.
    weights = _weights(ours)
    assert len(weights) >= 4 and weights == _weights(plain)  # conv and dense kernels and biases, at least
    x = np.random.default_rng(0).standard_normal((5, 8, 8, 1)).astype(np.float32)
    ours_out, plain_out = _outputs(ours, x), _outputs(plain, x)
    assert [(n, v.dtype, v.shape) for n, v in ours_out] == [(n, v.dtype, v.shape) for n, v in plain_out]
    assert [v.tobytes() for _, v in ours_out] == [v.tobytes() for _, v in plain_out]
    assert converted.effective_target == cfg.target.coremltools_target


def test_quantizing_ios15_raises_the_spec_and_we_read_it_back(tiny_model, tmp_path):
    """coremltools silently raises an iOS15 program to iOS16 when it quantizes weights."""
    from precision_sweep.convert import convert_variant

    cfg = compose(["precision=int8", "target=ios15"])
    converted = convert_variant(tiny_model, cfg.precision, cfg.target, tmp_path / "m.mlpackage")
    assert converted.spec_version == 7
    assert converted.effective_target == "iOS16"


def test_validity_matrix():
    from precision_sweep.convert import invalid_reason

    for precision in ("fp32", "fp16", "int8"):
        for target in ("ios15", "ios16", "ios17", "ios18"):
            cfg = compose([f"precision={precision}", f"target={target}"])
            reason = invalid_reason(cfg.precision, cfg.target)
            if (precision, target) == ("int8", "ios15"):
                assert "iOS16" in reason
            else:
                assert reason is None


def test_int8_program_holds_compressed_weights_and_runs(tiny_model, tmp_path):
    from precision_sweep.convert import convert_variant
    from precision_sweep.emulator import Emulator

    for target, op in (("ios16", "constexpr_affine_dequantize"), ("ios18", "constexpr_blockwise_shift_scale")):
        cfg = compose(["precision=int8", f"target={target}"])
        converted = convert_variant(tiny_model, cfg.precision, cfg.target, tmp_path / f"{target}.mlpackage")
        emulator = Emulator(converted.path)
        assert op in set(emulator.plan.producers[name][0] for name in emulator.plan.producers)
        x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
        reference = tiny_model.keras_model.predict(x, verbose=0)
        out = emulator.predict({"image": x})[emulator.output_names[0]]
        np.testing.assert_allclose(out.astype(np.float32), reference, atol=0.02)
