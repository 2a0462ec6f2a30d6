"""Float16 element-wise steps run as lookup tables (executor.run_step, numerics.TABULATED_OPS):
the same bits as the step's own computation, on every unit model, for every float16 value; and
the GPU's one-operation ops, computed from fp32 copies, as numpy's float16 arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

import precision_sweep.emulator.ops  # noqa: F401  (registers the kernels)
from precision_sweep.emulator import executor
from precision_sweep.emulator.devices import get_generation
from precision_sweep.emulator.numerics import ONE_OPERATION_OPS, TABULATED_OPS, ane_model, cpu_model, gpu_model
from precision_sweep.emulator.placement import Placement
from precision_sweep.emulator.plan import Step
from precision_sweep.emulator.registry import KERNELS

F16 = np.dtype(np.float16)

MODELS = {
    "none": None,
    "cpu": cpu_model(),
    "gpu": gpu_model(),
    "ane-m1": ane_model(get_generation("m1")),
    "ane-m5": ane_model(get_generation("m5")),
}

# Scalar constants an op takes in converted programs (the rest run with the kernel's defaults).
CONSTANTS = {
    "leaky_relu": {"alpha": np.float16(0.3)},
    "elu": {"alpha": np.float16(1.0)},
    "sigmoid_hard": {"alpha": np.float16(0.2), "beta": np.float16(0.5)},
    "scaled_tanh": {"alpha": np.float16(1.7), "beta": np.float16(0.66)},
    "linear_activation": {"alpha": np.float16(0.125), "beta": np.float16(-3.0)},
    "thresholded_relu": {"alpha": np.float16(0.5)},
    "clamped_relu": {"alpha": np.float16(0.1), "beta": np.float16(6.0)},
    "gelu": {"mode": "TANH_APPROXIMATION"},
    "inverse": {"epsilon": np.float16(1e-4)},
    "log": {"epsilon": np.float16(1e-4)},
    "rsqrt": {"epsilon": np.float16(1e-4)},
    "threshold": {"alpha": np.float16(-2.0)},
}


def _step(op_type: str, model, constants: dict) -> Step:
    placement = None if model is None else Placement(model, "test")
    return Step(op_type, f"{op_type}_0", KERNELS[op_type], dict(constants), {"x": "x"}, [("y", F16)],
                placement=placement, coerce=("x",) if model is not None and model.ane_datapath else ())


def _values(rng) -> np.ndarray:
    """Random float16 bit patterns (NaNs with payloads, infinities, zeros, subnormals among
    them) in a 4-D activation's shape, then seen through a transpose (a strided layout)."""
    bits = rng.integers(0, 1 << 16, size=(2, 24, 24, 8), dtype=np.uint16)
    bits.reshape(-1)[:6] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x7E01]
    return bits.view(np.float16)


@pytest.mark.parametrize("unit", list(MODELS))
@pytest.mark.parametrize("op_type", sorted(TABULATED_OPS))
def test_a_tabulated_step_gives_the_bits_of_its_own_computation(op_type, unit):
    step = _step(op_type, MODELS[unit], CONSTANTS.get(op_type, {}))
    rng = np.random.default_rng(sorted(TABULATED_OPS).index(op_type))
    for x in (_values(rng), _values(rng).transpose(0, 3, 1, 2)):
        looked_up, computed = {"x": x}, {"x": x}
        with np.errstate(all="ignore"):
            executor.run_step(step, looked_up)
            executor._compute_step(step, computed)
        assert looked_up["y"].shape == computed["y"].shape == x.shape
        assert looked_up["y"].dtype == F16
        got, want = looked_up["y"], np.asarray(computed["y"])
        # NaN is NaN: its payload is numpy's accident (above 256 KiB a temporary is reused in
        # place, so ``x * sigmoid(x)`` keeps the other operand's payload)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        numbers = ~np.isnan(want)
        np.testing.assert_array_equal(got[numbers].view(np.uint16), want[numbers].view(np.uint16))


def test_every_tabulated_op_has_a_kernel_and_the_lookup_is_taken():
    assert TABULATED_OPS <= set(KERNELS)
    executor._HALF_TABLES.clear()
    step = _step("silu", MODELS["gpu"], {})
    executor.run_step(step, {"x": np.linspace(-8, 8, 4096, dtype=np.float16).reshape(64, 64)})
    assert len(executor._HALF_TABLES) == 1  # built once ...
    executor.run_step(step, {"x": np.zeros((3, 5), dtype=np.float16)})
    assert len(executor._HALF_TABLES) == 1  # ... and reused


def test_a_step_with_an_array_constant_or_float32_values_is_not_tabulated():
    executor._HALF_TABLES.clear()
    per_channel = Step("leaky_relu", "l", KERNELS["leaky_relu"], {"alpha": np.full(4, 0.2, np.float16)},
                       {"x": "x"}, [("y", F16)], placement=Placement(MODELS["gpu"], "test"))
    executor.run_step(per_channel, {"x": np.ones((2, 4), dtype=np.float16)})
    fp32 = Step("sigmoid", "s", KERNELS["sigmoid"], {}, {"x": "x"}, [("y", np.dtype(np.float32))])
    executor.run_step(fp32, {"x": np.ones((2, 4), dtype=np.float32)})
    assert executor._HALF_TABLES == {}


@pytest.mark.parametrize("op_type", sorted(ONE_OPERATION_OPS))
def test_a_one_operation_op_on_the_gpu_gives_the_bits_of_numpys_float16_arithmetic(op_type):
    """The GPU model rounds every intermediate to fp16; for one IEEE operation the executor
    computes from fp32 copies, which must be numpy's float16 result bit for bit."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 1 << 16, size=(2, 16, 12, 12), dtype=np.uint16).view(np.float16)
    for y in (rng.integers(0, 1 << 16, size=x.shape, dtype=np.uint16).view(np.float16),
              rng.normal(0, 3, size=(2, 16, 1, 1)).astype(np.float16)):  # squeeze-excite's broadcast
        step = Step(op_type, op_type, KERNELS[op_type], {}, {"x": "x", "y": "y"}, [("z", F16)],
                    placement=Placement(MODELS["gpu"], "test"))
        env = {"x": x, "y": y}
        with np.errstate(all="ignore"):
            executor.run_step(step, env)
            want = KERNELS[op_type](x, y)
        assert want.dtype == F16 and env["z"].dtype == F16
        np.testing.assert_array_equal(np.isnan(env["z"]), np.isnan(want))
        numbers = ~np.isnan(want)
        np.testing.assert_array_equal(env["z"][numbers].view(np.uint16), want[numbers].view(np.uint16))
