"""Compressed weights: the emulator's output on a ``coremltools.optimize.coreml`` model equals
its output on the same model after ``decompress_weights`` (every ``constexpr_*`` op)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
ct = pytest.importorskip("coremltools")

import _emu_helpers as H  # noqa: E402

_BASE: dict = {}


def _base_model(target_name, precision):
    key = (target_name, precision)
    if key not in _BASE:
        import keras

        L = keras.layers
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((6, 6, 16)),
                L.Conv2D(32, 3, padding="same", activation="relu"),
                L.Flatten(),
                L.Dense(48),
            ]
        )
        target = getattr(ct.target, target_name)
        _BASE[key] = H.convert(model, [(2, 6, 6, 16)], precision=precision, target=target)
    return _BASE[key]


def _configs():
    import coremltools.optimize.coreml as cto

    def cfg(op_config):
        return cto.OptimizationConfig(global_config=op_config)

    lin = cto.OpLinearQuantizerConfig
    pal = cto.OpPalettizerConfig
    prune = cto.OpMagnitudePrunerConfig
    q, p, s = cto.linear_quantize_weights, cto.palettize_weights, cto.prune_weights
    out = {
        # iOS16 ops
        "ios16_int8_per_channel": ("iOS16", [(q, cfg(lin(mode="linear", weight_threshold=0)))], {"constexpr_affine_dequantize"}),
        "ios16_int8_symmetric": ("iOS16", [(q, cfg(lin(mode="linear_symmetric", dtype="uint8", weight_threshold=0)))], {"constexpr_affine_dequantize"}),
        "ios16_prune": ("iOS16", [(s, cfg(prune(target_sparsity=0.6, weight_threshold=0)))], {"constexpr_sparse_to_dense"}),
        # iOS18 ops
        "ios18_int8_per_channel": ("iOS18", [(q, cfg(lin(mode="linear", weight_threshold=0)))], {"constexpr_blockwise_shift_scale"}),
        "ios18_int4_per_block": ("iOS18", [(q, cfg(lin(mode="linear", dtype="int4", granularity="per_block", block_size=8, weight_threshold=0)))], {"constexpr_blockwise_shift_scale"}),
        "ios18_uint4_symmetric_per_block": ("iOS18", [(q, cfg(lin(mode="linear_symmetric", dtype="uint4", granularity="per_block", block_size=4, weight_threshold=0)))], {"constexpr_blockwise_shift_scale"}),
        "ios18_grouped_channel_pal4": ("iOS18", [(p, cfg(pal(mode="kmeans", nbits=4, granularity="per_grouped_channel", group_size=8, weight_threshold=0)))], {"constexpr_lut_to_dense"}),
        "ios18_grouped_channel_pal3": ("iOS18", [(p, cfg(pal(mode="uniform", nbits=3, granularity="per_grouped_channel", group_size=16, weight_threshold=0)))], {"constexpr_lut_to_dense"}),
        "ios18_vector_pal": ("iOS18", [(p, cfg(pal(mode="kmeans", nbits=2, cluster_dim=2, weight_threshold=0)))], {"constexpr_lut_to_dense"}),
        "ios18_pal_per_channel_scale": ("iOS18", [(p, cfg(pal(mode="kmeans", nbits=4, enable_per_channel_scale=True, weight_threshold=0)))], {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"}),
        "ios18_palettize_then_quantize_lut": ("iOS18", [(p, cfg(pal(mode="kmeans", nbits=4, weight_threshold=0))), (q, "joint_q8")], {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"}),
        "ios18_prune": ("iOS18", [(s, cfg(prune(target_sparsity=0.5, weight_threshold=0)))], {"constexpr_sparse_to_dense"}),
        "ios18_prune_then_palettize": ("iOS18", [(s, cfg(prune(target_sparsity=0.5, weight_threshold=0))), (p, "joint_pal")], {"constexpr_lut_to_sparse", "constexpr_sparse_to_dense"}),
        "ios18_prune_then_quantize": ("iOS18", [(s, cfg(prune(target_sparsity=0.5, weight_threshold=0))), (q, "joint_q")], {"constexpr_sparse_blockwise_shift_scale", "constexpr_sparse_to_dense"}),
    }
    for nbits in (1, 2, 4, 6, 8):
        out[f"ios16_kmeans_pal{nbits}"] = ("iOS16", [(p, cfg(pal(mode="kmeans", nbits=nbits, weight_threshold=0)))], {"constexpr_lut_to_dense"})
    for nbits in (2, 4, 6, 8):
        out[f"ios16_uniform_pal{nbits}"] = ("iOS16", [(p, cfg(pal(mode="uniform", nbits=nbits, weight_threshold=0)))], {"constexpr_lut_to_dense"})
    return out


CONFIGS = _configs()


def _apply(mlmodel, steps):
    import coremltools.optimize.coreml as cto

    for fn, config in steps:
        if config == "joint_pal":
            config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=4, weight_threshold=0))
            mlmodel = fn(mlmodel, config, joint_compression=True)
        elif config == "joint_q8":
            config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_tensor", weight_threshold=0))
            mlmodel = fn(mlmodel, config, joint_compression=True)
        elif config == "joint_q":
            config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_channel", weight_threshold=0))
            mlmodel = fn(mlmodel, config, joint_compression=True)
        else:
            mlmodel = fn(mlmodel, config)
    return mlmodel


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_compressed_equals_decompressed(name, precision, tmp_path):
    import coremltools.optimize.coreml as cto
    from precision_sweep.emulator import Emulator
    from precision_sweep.emulator.program import load_program

    target, steps, expected_ops = CONFIGS[name]
    compressed = _apply(_base_model(target, precision), steps)
    compressed.save(str(tmp_path / "c.mlpackage"))
    dense = cto.decompress_weights(compressed)
    dense.save(str(tmp_path / "d.mlpackage"))

    program, _ = load_program(str(tmp_path / "c.mlpackage"))
    op_types = {op.op_type for op in program.functions["main"].operations}
    assert expected_ops <= op_types, op_types
    dense_program, _ = load_program(str(tmp_path / "d.mlpackage"))
    assert not any(op.op_type.startswith("constexpr_") for op in dense_program.functions["main"].operations)

    x = np.random.default_rng(0).standard_normal((2, 6, 6, 16)).astype(np.float32)
    for units in ("cpu_only", "cpu_and_ne"):
        got = Emulator(str(tmp_path / "c.mlpackage"), compute_units=units).predict({"input_0": x})
        want = Emulator(str(tmp_path / "d.mlpackage"), compute_units=units).predict({"input_0": x})
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
