"""Every precision recipe on the digits model: the program holds the expected ops, runs in the
emulator, agrees with TensorFlow, and reports its size against the fp32 package."""

from __future__ import annotations

import pytest

from sweep_testing import compose
from helpers import EXPECTED_OPS, convert_and_run, valid_cells


@pytest.fixture(scope="module")
def digits(shared_cache):
    from precision_sweep.data import load_inputs

    cfg = compose([])
    dataset, model = load_inputs(cfg.model, cfg.dataset, shared_cache)
    reference = model.keras_model.predict(dataset.x_test, verbose=0)
    return dataset, model, reference


@pytest.fixture(scope="module")
def convert_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("convert-cache")


# Minimum top-1 agreement with the TF model on the 450 test digits. Pruning 50% of the weights
# without fine-tuning moves 5-10% of the predictions, depending on the trained model (seen:
# 0.95 with the tensorflow-cpu wheel, 0.898 with the tensorflow wheel, same seed).
MIN_AGREEMENT = {"sparse": 0.85, "sparse_int8": 0.85, "sparse_palettize": 0.85}


@pytest.mark.parametrize("recipe,target", valid_cells())
def test_recipe_program_ops_emulation_and_sizes(digits, convert_cache, tmp_path, recipe, target):
    dataset, model, reference = digits
    calibration = dataset.x_calib
    converted, ops, outputs = convert_and_run(
        model, recipe, target, tmp_path, dataset.x_test, calibration=calibration, cache_dir=convert_cache
    )
    coremltools_target = compose([f"target={target}"]).target.coremltools_target
    assert converted.effective_target == coremltools_target
    assert EXPECTED_OPS[recipe].get(coremltools_target, set()) <= ops, sorted(ops)
    if recipe in ("fp32", "fp16", "fp16_mixed"):
        assert not any(op.startswith("constexpr") or op in ("quantize", "dequantize") for op in ops)
    agreement = (outputs.argmax(-1) == reference.argmax(-1)).mean()
    assert agreement >= MIN_AGREEMENT.get(recipe, 0.97), agreement
    # sizes: fp32 is the reference; fp16 halves the weights; 8-bit about a quarter, 4-bit an eighth
    bits = {"fp32": 32, "fp16": 16, "fp16_mixed": 16, "int8": 8.4, "int8_per_tensor": 8.2, "w8a8": 8.4,
            "int8_per_block": 9.6, "int4_per_block": 6.2, "palettize": 4.3, "palettize_grouped": 4.5}
    if recipe in bits:
        assert converted.bits_per_weight == pytest.approx(bits[recipe], abs=0.15)
    else:  # sparse: 50% zeros (bitmask + fp16 values, or + int8/LUT indices)
        assert converted.bits_per_weight < 10
    assert converted.weights_bytes > 0
    assert converted.compression_ratio == pytest.approx(converted.reference_size_bytes / converted.size_bytes)
    if recipe != "fp32":
        assert converted.compression_ratio > 1.8


def test_fp16_mixed_keeps_softmax_in_fp32(digits, convert_cache, tmp_path):
    from coremltools.converters.mil.mil import types

    from precision_sweep.emulator.program import load_program

    _, model, _ = digits
    dtypes = {}
    for recipe in ("fp16", "fp16_mixed"):
        converted, _, _ = convert_and_run(model, recipe, "ios16", tmp_path, digits[0].x_test[:4], cache_dir=convert_cache)
        program, _ = load_program(converted.path)
        ops = program.functions["main"].operations
        dtypes[recipe] = {op.op_type: op.outputs[0].dtype for op in ops if op.op_type in ("softmax", "conv")}
    assert dtypes["fp16"] == {"softmax": types.fp16, "conv": types.fp16}
    assert dtypes["fp16_mixed"] == {"softmax": types.fp32, "conv": types.fp16}


def test_fp16_mixed_op_names_from_config(digits, convert_cache, tmp_path):
    """An op kept in fp32 by name: precision.fp32_ops.op_names."""
    from coremltools.converters.mil.mil import types

    from precision_sweep.emulator.program import load_program

    _, model, _ = digits
    converted, _, _ = convert_and_run(model, "fp16", "ios16", tmp_path, digits[0].x_test[:2], cache_dir=convert_cache)
    program, _ = load_program(converted.path)
    # named as in the saved fp16 program (the "_cast_fp16" suffix is ignored)
    dense = [op.name for op in program.functions["main"].operations if op.op_type == "linear"][0]
    converted, _, _ = convert_and_run(
        model, "fp16_mixed", "ios16", tmp_path, digits[0].x_test[:2], cache_dir=convert_cache,
        overrides=["precision.fp32_ops.op_types=[]", f"precision.fp32_ops.op_names=[{dense}]"],
    )
    program, _ = load_program(converted.path)
    dtypes = {op.name: op.outputs[0].dtype for op in program.functions["main"].operations
              if op.op_type in ("linear", "softmax")}
    (kept,) = [name for name in dtypes if name.startswith(dense.removesuffix("_cast_fp16"))]
    assert dtypes.pop(kept) == types.fp32
    assert dtypes and set(dtypes.values()) == {types.fp16}  # the other dense layer and softmax


@pytest.mark.parametrize("nbits", [2, 6, 8])
def test_palettize_nbits_and_uniform_mode_override(digits, convert_cache, tmp_path, nbits):
    _, model, reference = digits
    x = digits[0].x_test
    converted, ops, outputs = convert_and_run(
        model, "palettize", "ios16", tmp_path, x, cache_dir=convert_cache,
        overrides=[f"precision.weight_palettization.nbits={nbits}", "precision.weight_palettization.mode=uniform"],
    )
    assert "constexpr_lut_to_dense" in ops
    assert converted.bits_per_weight == pytest.approx(nbits, abs=0.7)  # + the LUTs
    if nbits >= 6:
        assert (outputs.argmax(-1) == reference.argmax(-1)).mean() >= 0.97


def test_int4_weights_are_4_bit_in_the_program(digits, convert_cache, tmp_path):
    from coremltools.converters.mil.mil import types

    from precision_sweep.emulator.program import load_program

    _, model, _ = digits
    converted, _, _ = convert_and_run(model, "int4_per_block", "ios18", tmp_path, digits[0].x_test[:2], cache_dir=convert_cache)
    program, _ = load_program(converted.path)
    ops = [op for op in program.functions["main"].operations if op.op_type == "constexpr_blockwise_shift_scale"]
    assert ops and all(op.data.dtype == types.int4 for op in ops)


def test_w8a8_keeps_digits_accuracy_within_2pp(digits, convert_cache, tmp_path):
    dataset, model, reference = digits
    _, ops, outputs = convert_and_run(model, "w8a8", "ios17", tmp_path, dataset.x_test,
                                      calibration=dataset.x_calib, cache_dir=convert_cache)
    assert {"quantize", "dequantize"} <= ops
    accuracy = (outputs.argmax(-1) == dataset.y_test).mean()
    baseline = (reference.argmax(-1) == dataset.y_test).mean()
    assert accuracy >= baseline - 0.02, (accuracy, baseline)


def test_w8a8_program_is_what_coremltools_builds_from_the_same_statistics(digits, convert_cache, tmp_path, monkeypatch):
    """Only the statistics collection is ours: coremltools' own linear_quantize_activations,
    given our statistics in place of its Core ML run, builds the very same program."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto
    from coremltools.optimize.coreml import _post_training_quantization as ptq

    from precision_sweep.convert.calibration import activation_stats, quantize_activations
    from precision_sweep.convert.converter import base_package
    from precision_sweep.convert.recipes import compute_spec

    dataset, model, _ = digits
    cfg = compose(["precision=w8a8", "target=ios17"])
    base = ct.models.MLModel(str(base_package(model, "iOS17", compute_spec(cfg.precision), 1024, convert_cache)),
                             skip_model_load=True)
    samples = dataset.x_calib[:16]
    stats = activation_stats(base, samples)
    assert stats["image"] == {"rmin": float(samples.min()), "rmax": float(samples.max())}
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
    ours = quantize_activations(base, config, samples)
    monkeypatch.setattr(ptq, "_get_activation_calibration_stats", lambda *args, **kwargs: stats)
    theirs = cto.linear_quantize_activations(base, config, [{"image": s[None]} for s in samples])
    assert ours.get_spec().mlProgram == theirs.get_spec().mlProgram
    quantize_ops = [op for f in ours.get_spec().mlProgram.functions.values()
                    for b in f.block_specializations.values() for op in b.operations if op.type == "quantize"]
    assert len(quantize_ops) >= 3
