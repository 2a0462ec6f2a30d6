"""The executor: a plain ordered loop over the plan's steps with a dict of named values.

Dtype rules (the same under every profile):

* feeds are cast to the dtype each program input declares;
* every op's result is cast to the dtype its output declares, so fp16 tensors are stored as
  ``float16`` (overflow becomes +-inf, tiny values flush exactly as float16 rounding does);
* how fp16 ops compute in between is the compute-unit profile's business (:mod:`.numerics`).

Nested blocks (``while_loop``/``cond``) run through :func:`run_block`, the same loop over the
block's steps on a scope that sees the enclosing values; the same dtype rules hold there (block
inputs are cast to their declared dtypes, every op output to its own). A list value
(:class:`~precision_sweep.emulator.ops.control_flow.TensorList`) is cast element-wise.
"""

from __future__ import annotations

from collections import ChainMap
from typing import Any, Mapping

import numpy as np

from precision_sweep.emulator.numerics import (
    ACCUMULATING_OPS,
    SINGLE_ROUNDING_OPS,
    VALUE_EXACT_OPS,
    Profile,
)
from precision_sweep.emulator.ops._compiled import float16_to_float32, float32_to_float16
from precision_sweep.emulator.ops._threads import single_threaded_blas
from precision_sweep.emulator.ops.control_flow import TensorList
from precision_sweep.emulator.program import Block, Plan, Step

FLOAT16 = np.dtype(np.float16)
FLOAT32 = np.dtype(np.float32)


def _upcast(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype == FLOAT16:
        return float16_to_float32(value)
    if isinstance(value, list):
        return [_upcast(v) for v in value]
    return value


def _cast(value: Any, dtype: np.dtype) -> Any:
    if isinstance(value, TensorList):
        return value.astype(dtype)
    value = np.asarray(value)
    if dtype == FLOAT16 and value.dtype == FLOAT32:
        return float32_to_float16(value)  # numpy's cast, bit for bit, without its slow path
    return value.astype(dtype, copy=False)


def _wants_upcast(step: Step, profile: Profile | None) -> bool:
    if step.blocks:
        return False  # control flow computes nothing itself; its block ops decide
    if step.op_type in VALUE_EXACT_OPS or step.op_type in SINGLE_ROUNDING_OPS:
        return False  # the same bits either way (see numerics)
    if profile is None:
        return True
    if step.op_type in ACCUMULATING_OPS:
        return profile.upcast_accumulating
    return profile.upcast_elementwise


def run_block(block: Block, env: Mapping[str, Any], profile: Profile | None, *values: Any) -> tuple:
    """Run a nested block on ``values`` (its inputs, in order) and return its outputs.

    The block's own values live in a fresh scope chained to ``env``, so its ops see the
    enclosing block's values and nothing it computes leaks out.
    """
    if len(values) != len(block.inputs):
        raise RuntimeError(f"block takes {len(block.inputs)} inputs, got {len(values)}")
    scope: ChainMap = ChainMap({}, env)
    for (name, dtype), value in zip(block.inputs, values):
        scope[name] = _cast(value, dtype)
    for step in block.steps:
        run_step(step, scope, profile)
    return tuple(scope[name] for name in block.outputs)


def _block_callable(block: Block, env: Mapping[str, Any], profile: Profile | None):
    def call(*values: Any) -> tuple:
        return run_block(block, env, profile, *values)

    return call


def run_step(step: Step, env: dict[str, Any], profile: Profile | None) -> None:
    """Execute one step, reading its inputs from ``env`` and writing its outputs there."""
    kwargs = dict(step.const_kwargs)
    for arg, names in step.var_kwargs.items():
        kwargs[arg] = [env[n] for n in names] if isinstance(names, list) else env[names]
    for arg, block in step.blocks.items():
        kwargs[arg] = _block_callable(block, env, profile)
    if any(dtype == FLOAT16 for _, dtype in step.outputs) and _wants_upcast(step, profile):
        kwargs = {k: _upcast(v) for k, v in kwargs.items()}
    try:
        result = step.fn(**kwargs)
    except Exception as exc:  # add the op's identity to any kernel failure
        raise RuntimeError(f"MIL op {step.op_type!r} ({step.name!r}) failed: {exc}") from exc
    results = result if isinstance(result, tuple) else (result,)
    if len(results) != len(step.outputs):
        raise RuntimeError(
            f"kernel for {step.op_type!r} returned {len(results)} values, "
            f"the program declares {len(step.outputs)}"
        )
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for (name, dtype), value in zip(step.outputs, results):
            env[name] = _cast(value, dtype)


def execute(
    plan: Plan,
    feeds: dict[str, np.ndarray],
    profile: Profile,
    capture: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, np.ndarray]]]:
    """Run the plan on ``feeds``.

    Returns the program outputs and, if ``capture``, every top-level intermediate tensor keyed
    by MIL variable name as ``(op type, value)`` (list values and values inside nested blocks
    are not captured). Without ``capture``, each value is dropped after its last reader.
    """
    env: dict[str, Any] = dict(plan.constants)
    for name, (_, dtype) in plan.inputs.items():
        env[name] = np.asarray(feeds[name]).astype(dtype, copy=False)
    intermediates: dict[str, tuple[str, np.ndarray]] = {}
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"), single_threaded_blas():
        for step, released in zip(plan.steps, plan.releases):
            run_step(step, env, profile)
            if not capture:
                for name in released:
                    del env[name]
            else:
                for name, _ in step.outputs:
                    # Tensors only: a list value is not an array for calibration or drift to
                    # compare, and a loop's tensors are captured as the loop's outputs.
                    if not isinstance(env[name], TensorList):
                        intermediates[name] = (step.op_type, env[name])
    return {name: env[name] for name in plan.outputs}, intermediates
