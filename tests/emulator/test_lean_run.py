"""A run that keeps no intermediates (``capture=False``) executes the plan's lean steps: zero
pads folded into their 2-D convs, activations written into their input's buffer when nothing
else reads it. It must give exactly the bits of the full steps (``capture=True``), under every
compute-unit model, and it must need less memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from _emu_helpers import mil_program

from precision_sweep.emulator import Emulator

RNG = np.random.default_rng(7)
PROFILES = ["cpu_only", "cpu_and_gpu", "all"]


def _padded_convs(dtype):
    """zero pad -> depthwise 3x3 -> relu6 -> zero pad -> 3x3 conv -> relu, and a -0.0 pad and
    a reflect pad that must not be folded; constants in ``dtype``."""

    def build(x):
        from coremltools.converters.mil import Builder as mb

        depthwise = RNG.standard_normal((4, 1, 3, 3)).astype(dtype)
        dense = RNG.standard_normal((6, 4, 3, 3)).astype(dtype)
        ones = np.ones((6, 1, 3, 3), dtype=dtype)
        zero = dtype(0.0)
        y = mb.pad(x=x, pad=np.array([0, 1, 2, 0], dtype=np.int32), mode="constant", constant_val=zero)
        y = mb.conv(x=y, weight=depthwise, strides=[2, 2], pad_type="valid", groups=4)
        y = mb.relu6(x=y)
        y = mb.pad(x=y, pad=np.array([0, 0, 0, 0, 2, 1, 0, 1], dtype=np.int32), mode="constant", constant_val=zero)
        y = mb.conv(x=y, weight=dense, pad_type="valid")
        y = mb.relu(x=y)
        negative = mb.pad(x=y, pad=np.array([1, 1, 1, 1], dtype=np.int32), mode="constant", constant_val=-zero)
        negative = mb.conv(x=negative, weight=ones, groups=6, pad_type="valid")
        reflect = mb.pad(x=y, pad=np.array([1, 1, 1, 1], dtype=np.int32), mode="reflect")
        reflect = mb.conv(x=reflect, weight=ones, groups=6, pad_type="valid")
        return mb.add(x=negative, y=reflect)

    return build


def _program(dtype):
    x = RNG.standard_normal((3, 4, 12, 11)).astype(dtype)
    x[0, 0, 0, :3] = [-0.0, np.nan, 70000 if dtype == np.float32 else 60000]
    return mil_program(_padded_convs(dtype), {"x": x}, None), x


@pytest.mark.parametrize("units", PROFILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_lean_steps_give_the_bits_of_the_full_steps(units, dtype):
    program, x = _program(dtype)
    emulator = Emulator(program, compute_units=units)
    plan = emulator.plan
    folded = [s for s in plan.lean_steps if s.op_type == "conv" and str(s.const_kwargs.get("pad_type")) == "custom"]
    assert len(folded) == 2, "the two +0.0 pads fold; the -0.0 and the reflect pads stay"
    assert sum(s.op_type == "pad" for s in plan.lean_steps) == 2
    assert sum(s.op_type == "pad" for s in plan.steps) == 4  # what reports and captures see
    name = emulator.input_names[0]
    lean = emulator.predict({name: x})
    full = emulator.predict({name: x}, capture=True)
    full = full[0] if isinstance(full, tuple) else full
    for key in lean:
        assert lean[key].dtype == full[key].dtype
        assert np.array_equal(lean[key].view(np.uint8), full[key].view(np.uint8)), key


def _residual(dtype):
    def build(x):
        from coremltools.converters.mil import Builder as mb

        y = mb.conv(x=x, weight=RNG.standard_normal((8, 8, 1, 1)).astype(dtype), pad_type="valid")
        return mb.relu(x=mb.add(x=y, y=x))  # the conv's output is free after the add

    return build


@pytest.mark.parametrize("units", PROFILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_residual_add_written_into_its_input_gives_the_bits_of_the_full_steps(units, dtype):
    x = RNG.standard_normal((2, 8, 9, 9)).astype(dtype)
    emulator = Emulator(mil_program(_residual(dtype), {"x": x}, None), compute_units=units)
    name = emulator.input_names[0]
    lean = next(iter(emulator.predict({name: x}).values()))
    full = emulator.predict({name: x}, capture=True)
    full = next(iter((full[0] if isinstance(full, tuple) else full).values()))
    assert lean.dtype == full.dtype and np.array_equal(lean.view(np.uint8), full.view(np.uint8))
    assert "add" in [s.op_type for s in emulator.plan.lean_steps if s.reuses]


def _activation_after_product(x):
    from coremltools.converters.mil import Builder as mb

    product = mb.mul(x=x, y=np.float32(2.0))
    view = mb.reshape(x=product, shape=[-1])
    activated = mb.relu(x=view)  # the view's last reader, but product is read again below
    again = mb.relu6(x=mb.mul(x=x, y=np.float32(3.0)))  # may write into its input
    return mb.add(x=mb.reshape(x=activated, shape=list(x.shape)), y=mb.add(x=product, y=again))


def test_an_activation_never_writes_into_memory_another_value_still_reads():
    x = RNG.standard_normal((2, 3, 64, 64)).astype(np.float32)
    emulator = Emulator(mil_program(_activation_after_product, {"x": x}, None))
    got = emulator.predict({emulator.input_names[0]: x})
    expected = np.maximum(2 * x, 0) + (2 * x + np.clip(3 * x, 0, 6))
    np.testing.assert_array_equal(next(iter(got.values())), expected)
    # marked at compile time; whether a buffer is free is decided at run time (the first relu
    # reads a view of a product that is read again, so it must not write into it)
    assert [s.op_type for s in emulator.plan.lean_steps if s.reuses] == ["relu", "relu6", "add", "add"]


def _conv_then_activations(x):
    from coremltools.converters.mil import Builder as mb

    y = mb.conv(x=x, weight=np.ones((16, 16, 1, 1), dtype=np.float32), pad_type="valid")
    return mb.relu6(x=mb.relu(x=y))


def test_activations_after_a_conv_need_no_buffer_of_their_own():
    x = RNG.standard_normal((8, 16, 64, 64)).astype(np.float32)  # 2 MiB per tensor
    emulator = Emulator(mil_program(_conv_then_activations, {"x": x}, None))
    feeds = {emulator.input_names[0]: x}
    emulator.predict(feeds)  # warm-up: kernels compiled, scratch buffers grown

    def peak(capture):
        tracemalloc.start()
        emulator.predict(feeds, capture=capture)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    # the full run holds conv, relu and relu6 outputs; the lean run one buffer for all three
    assert peak(capture=True) - peak(capture=False) >= 1.9 * x.nbytes


def _convs_then_activations(dtype):
    """conv+bias -> silu, depthwise+bias -> relu6, conv -> relu (each the conv's only reader),
    and a conv read by a relu and by the add: that one must not fold."""

    def build(x):
        from coremltools.converters.mil import Builder as mb

        def weights(*shape):
            return RNG.standard_normal(shape).astype(dtype)

        y = mb.silu(x=mb.conv(x=x, weight=weights(6, 4, 3, 3), bias=weights(6), pad_type="same"))
        y = mb.relu6(x=mb.conv(x=y, weight=weights(6, 1, 3, 3), bias=weights(6), groups=6, pad_type="same"))
        y = mb.relu(x=mb.conv(x=y, weight=weights(6, 6, 1, 1), pad_type="valid"))
        shared = mb.conv(x=y, weight=weights(6, 6, 1, 1), bias=weights(6), pad_type="valid")
        return mb.add(x=mb.relu(x=shared), y=shared)

    return build


@pytest.mark.parametrize("units", PROFILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_float32_activation_folded_into_its_conv_gives_the_bits_of_the_two_steps(units, dtype):
    # planes of 37x29 = 1,073 elements: blocks of many planes, shared out over the workers
    x = (4 * RNG.standard_normal((5, 4, 37, 29))).astype(dtype)
    x[0, 0, 0, :4] = [-0.0, np.nan, np.inf, -np.inf]
    x[1, 1, 5, :2] = [60000, -60000]
    emulator = Emulator(mil_program(_convs_then_activations(dtype), {"x": x}, None), compute_units=units)
    folded = [s.const_kwargs.get("activation") for s in emulator.plan.lean_steps if s.op_type == "conv"]
    if dtype == np.float32:  # an fp16 conv's output is rounded before its activation: no fold
        assert folded == ["silu", "relu6", "relu", None]
        assert [s.op_type for s in emulator.plan.lean_steps].count("relu") == 1  # the shared conv's
    else:
        assert folded == [None] * 4
    assert [s.op_type for s in emulator.plan.steps].count("relu") == 2  # what reports and captures see
    name = emulator.input_names[0]
    lean = next(iter(emulator.predict({name: x}).values()))
    full = emulator.predict({name: x}, capture=True)
    full = next(iter((full[0] if isinstance(full, tuple) else full).values()))
    assert lean.dtype == full.dtype and np.array_equal(lean.view(np.uint8), full.view(np.uint8))
    assert np.isfinite(lean).sum() > 0.9 * lean.size and (np.isnan(lean).any() or units == "all")
