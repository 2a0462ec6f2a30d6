"""The Neural Engine's datapath rules, applied by the executor to ops placed on the ANE.

Kernels follow the MIL spec; where the engine departs from IEEE or from the op's definition,
a rule here adjusts the result. Each rule is a plain function registered by MIL op type and
implements one row of :data:`~precision_sweep.emulator.numerics.BEHAVIOURS` (its key is in
the docstring). Rules receive the op's inputs (float32, fp16 values), the kernel's result
and the op's accumulator; they return the engine's result, which the executor then scrubs
(NaN -> +0, ``ane.indeterminate``) and rounds to fp16.

Two rules apply to every ANE op and live in the executor's path: :func:`coerce_nan` on
values entering from another unit or the program inputs (``ane.nan``), and
:func:`indeterminate_to_zero` on every result (``ane.indeterminate``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# ane.exp_table: the first input whose exp is inf (M1); below it the table holds at 65504.
EXP_OVERFLOW = np.float32(11.094)
# ane.softplus_table: softplus collapses to 0 from here on (coremltools #2687).
SOFTPLUS_CLIFF = np.float32(10.408)
# ane.other_tables: the log table's value at +0.
LOG_ZERO = np.float32(-45440.0)
FP16_MAX = np.float32(65504.0)

RULES: dict[str, Callable] = {}


def rule(*op_types: str):
    def register(fn):
        for op_type in op_types:
            RULES[op_type] = fn
        return fn

    return register


def coerce_nan(value):
    """``ane.nan``: NaN entering the engine becomes +inf."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        nan = np.isnan(value)
        if nan.any():
            return np.where(nan, np.asarray(np.inf, dtype=value.dtype), value)
    return value


def indeterminate_to_zero(value):
    """``ane.indeterminate``: a NaN the engine computes is +0."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        nan = np.isnan(value)
        if nan.any():
            return np.where(nan, np.asarray(0.0, dtype=value.dtype), value)
    return value


def _exp_table(x):
    with np.errstate(over="ignore", invalid="ignore"):
        exact = np.exp(x)
    return np.where(x >= EXP_OVERFLOW, np.float32(np.inf), np.minimum(exact, FP16_MAX)).astype(np.float32)


def _log_table(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = np.log(x)
    return np.where(x == 0, LOG_ZERO, np.where(np.isposinf(x), np.float32(0.0), exact)).astype(np.float32)


@rule("exp")
def exp(inputs, result, model, accumulator):
    """``ane.exp_table``."""
    return _exp_table(inputs["x"])


@rule("softplus")
def softplus(inputs, result, model, accumulator):
    """``ane.softplus_table``: 0 from the cliff on (+inf included)."""
    return np.where(inputs["x"] >= SOFTPLUS_CLIFF, np.float32(0.0), result)


@rule("softsign")
def softsign(inputs, result, model, accumulator):
    """``ane.other_tables``: softsign(+inf) = +0."""
    return np.where(np.isposinf(inputs["x"]), np.float32(0.0), result)


@rule("log")
def log(inputs, result, model, accumulator):
    """``ane.other_tables``: log(+0) = -45440, log(+inf) = 0; log of a negative is NaN -> +0."""
    x = inputs["x"] + np.float32(inputs.get("epsilon", 0.0) or 0.0)
    return _log_table(x)


@rule("inverse", "rsqrt")
def reciprocal_of_zero(inputs, result, model, accumulator):
    """``ane.signed_zero``: the sign of a zero is dropped before the reciprocal: 1/(-0) = +inf."""
    denominator = inputs["x"] + np.float32(inputs.get("epsilon", 0.0) or 0.0)
    return np.where(denominator == 0, np.float32(np.inf), result)


@rule("sqrt")
def sqrt(inputs, result, model, accumulator):
    """``ane.signed_zero``: sqrt(-0) = +0."""
    return np.where(inputs["x"] == 0, np.float32(0.0), result)


@rule("softmax")
def softmax(inputs, result, model, accumulator):
    """``ane.nan`` / ``ane.indeterminate`` inside softmax: inf - inf is +0, so a lane that
    came in as NaN (now +inf) takes all the mass."""
    x = inputs["x"]
    if np.isfinite(x).all():
        return result
    axis = int(inputs.get("axis", -1))
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = x - np.max(x, axis=axis, keepdims=True)
        shifted = np.where(np.isnan(shifted), np.float32(0.0), shifted)
        e = np.exp(shifted)
        return e / accumulator.sum(e, (axis,), keepdims=True)


@rule("reduce_log_sum_exp")
def reduce_log_sum_exp(inputs, result, model, accumulator):
    """``ane.logsumexp``: no max shift: exp table, the reduction path's sum (inf past the fp16
    range), then the log table (log(+inf) = 0)."""
    x = inputs["x"]
    axes = inputs.get("axes")
    axes = tuple(range(x.ndim)) if axes is None else tuple(int(a) % x.ndim for a in np.asarray(axes).reshape(-1))
    e = _exp_table(x).astype(np.float16).astype(np.float32)
    return _log_table(accumulator.sum(e, axes, keepdims=bool(inputs.get("keep_dims", False))))


@rule("reduce_sum_square")
def reduce_sum_square(inputs, result, model, accumulator):
    """``ane.reduce_sum_square``: on M1 each square is rounded to fp16 before the sum."""
    if not model.rounded_squares:
        return result
    x = inputs["x"]
    axes = inputs.get("axes")
    axes = tuple(range(x.ndim)) if axes is None else tuple(int(a) % x.ndim for a in np.asarray(axes).reshape(-1))
    with np.errstate(over="ignore"):
        squares = (x * x).astype(np.float16).astype(np.float32)
    return accumulator.sum(squares, axes, keepdims=bool(inputs.get("keep_dims", False)))


def _last_axis_begin(inputs, op_type: str, rank: int, width: int) -> int:
    begin = np.asarray(inputs["begin"]).reshape(-1)
    if len(begin) < rank:
        return 0
    start = int(begin[rank - 1])
    if op_type == "slice_by_index":
        mask = inputs.get("begin_mask")
        if mask is not None and bool(np.asarray(mask).reshape(-1)[rank - 1]):
            return 0
        stride = inputs.get("stride")
        if stride is not None and int(np.asarray(stride).reshape(-1)[rank - 1]) < 0:
            return 1  # a reversed slice reads from the end: an offset copy
    return start + width if start < 0 else start


@rule("slice_by_index", "slice_by_size")
def width_slice(inputs, result, model, accumulator):
    """``ane.width_slice_gain``: a nonzero last-axis begin routes the copy through a x gain
    fixed-point DMA that overflows past 65504 / gain."""
    gain = model.width_slice_gain
    x = inputs["x"]
    if not gain or x.ndim == 0 or _last_axis_begin(inputs, "slice_by_index" if "end" in inputs else "slice_by_size", x.ndim, x.shape[-1]) == 0:
        return result
    result = np.asarray(result, dtype=np.float32)
    limit = FP16_MAX / np.float32(gain)
    return np.where(np.abs(result) > limit, np.copysign(np.float32(np.inf), result), result)
