"""Per-op weight settings (convert/per_op.py): a recipe that gives each weight-bearing op its own
compression, built with coremltools' per-op configs, on a real conversion."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from sweep_testing import compose


def _model():
    import keras

    from precision_sweep.data.models import LoadedModel, _content_hash

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="wide")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name="per_op")
    return LoadedModel("per_op", model, "image", (8, 8, 1), "probabilities", _content_hash(model))


def _recipe(ops: dict, target: str = "ios18"):
    from precision_sweep.convert.schema import PerOpWeightsConfig

    cfg = compose(["precision=fp16", f"target={target}"])
    cfg.precision.name = "per_op_test"
    cfg.precision.per_op_weights = OmegaConf.structured(PerOpWeightsConfig(ops=ops))
    return cfg


def test_each_op_gets_its_own_setting(tmp_path):
    from precision_sweep.convert import convert_variant, invalid_reason
    from precision_sweep.convert.per_op import weight_ops
    from precision_sweep.emulator import Emulator

    model = _model()
    fp16 = convert_variant(model, compose(["precision=fp16", "target=ios18"]).precision,
                           compose(["target=ios18"]).target, tmp_path / "fp16.mlpackage")
    ops = weight_ops(fp16.path)
    assert [op.op_type for op in ops] == ["conv", "matmul", "matmul"]  # Keras 3 Dense: matmul + add
    assert [op.weights for op in ops] == [144, 36 * 16 * 64, 640]
    conv, wide, head = (op.name for op in ops)
    cfg = _recipe({wide: "pal2", head: "int8", conv: "int4_block16"})
    assert invalid_reason(cfg.precision, cfg.target) is None
    mixed = convert_variant(model, cfg.precision, cfg.target, tmp_path / "mixed.mlpackage")
    emulator = Emulator(mixed.path, "cpu_only")
    producers = {name: op_type for name, (op_type, *_) in emulator.plan.producers.items()}
    compressed = sorted(op_type for op_type in producers.values() if op_type.startswith("constexpr_"))
    # the wide layer's weight is a 2-bit table; the head's int8; the conv's 144 weights stay
    # fp16 by the threshold only if below it: 144 >= 128, so an int4 per-block weight
    assert "constexpr_lut_to_dense" in compressed and "constexpr_blockwise_shift_scale" in compressed
    assert mixed.size_bytes < 0.25 * fp16.size_bytes  # the wide layer is nearly all of it, at 2 of 16 bits
    x = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    out = emulator.predict({emulator.input_names[0]: x})[emulator.output_names[0]]
    assert out.shape == (16, 10) and np.isfinite(out).all()


def test_a_setting_the_target_cannot_hold_is_refused():
    from precision_sweep.convert import invalid_reason

    cfg = _recipe({"any_op": "int4_block32", "other": "pal4"}, target="ios16")
    reason = invalid_reason(cfg.precision, cfg.target)
    assert reason is not None and "int4_block32" in reason and "iOS18" in reason
    assert invalid_reason(_recipe({"any_op": "pal4"}, target="ios16").precision, cfg.target) is None
    nn = _recipe({"any_op": "pal4"}, target="ios14")
    assert "per-op" in invalid_reason(nn.precision, nn.target)


@pytest.mark.parametrize("label", ["pal5", "int4", "int4_block0", "sparse100", "fp8", ""])
def test_an_unknown_setting_names_the_forms(label):
    from precision_sweep.convert.per_op import UnknownChoiceError, parse_choice

    with pytest.raises(UnknownChoiceError, match="pal|block|sparsity|palettizes"):
        parse_choice(label)
