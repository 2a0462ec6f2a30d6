"""Elementwise unary ops and cast (spec: ops/defs/iOS15/elementwise_unary.py, iOS17/...)."""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops.activation import _erf_array
from precision_sweep.emulator.ops._casts import float16_to_float32
from precision_sweep.emulator.ops._clip_kernels import clip_float16, clip_float32
from precision_sweep.emulator.registry import kernel


def _unary(op_type, fn):
    def unary(x):
        return fn(x)

    unary.__name__ = op_type
    kernel(op_type)(unary)


for _op_type, _fn in {
    "abs": np.abs,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "logical_not": np.logical_not,
    "round": np.round,
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
    "erf": _erf_array,
}.items():
    if _op_type != "tanh":  # tanh is registered by the activation family
        _unary(_op_type, _fn)


@kernel("clip")
def clip(x, alpha, beta, *, out=None):
    """``min(max(x, alpha), beta)`` as the MIL definition states (a tie returns the bound, which
    matters for signed zeros); scalar bounds run in one parallel pass, bit for bit numpy's."""
    scalar_bounds = np.ndim(alpha) == 0 and np.ndim(beta) == 0
    if x.dtype == np.float16 and scalar_bounds:
        return clip_float16(x, alpha, beta, ties_to_bounds=True, out=out)
    if x.dtype == np.float32 and scalar_bounds and np.result_type(x, alpha, beta) == np.float32:
        return clip_float32(x, alpha, beta, ties_to_bounds=True, out=out)
    if out is not None and np.result_type(x, alpha, beta) != out.dtype:
        out = None  # a float32 bound on a float16 x computes in float32: no buffer to share
    return np.minimum(np.maximum(x, alpha), beta, out=out)


@kernel("inverse")
def inverse(x, epsilon=1e-4):
    return 1.0 / (x + epsilon)


@kernel("log")
def log(x, epsilon=1e-45):
    return np.log(x + epsilon)


@kernel("rsqrt")
def rsqrt(x, epsilon=1e-12):
    return 1.0 / np.sqrt(x + epsilon)


@kernel("threshold")
def threshold(x, alpha):
    if isinstance(x, np.ndarray) and x.dtype == np.float16:
        # numpy's float16 maximum, which is slow: x unless it is below alpha (so NaN and an
        # equal zero of the other sign stay x), compared in float32
        alpha16 = np.float16(alpha)
        return np.where(float16_to_float32(x) < np.float32(alpha16), alpha16, x)
    return np.maximum(x, alpha)


@kernel("cast")
def cast(x, dtype):
    # The executor casts to the declared output dtype; bool->number and float->int need care.
    if str(dtype).startswith(("int", "uint")) and np.issubdtype(np.asarray(x).dtype, np.floating):
        return np.trunc(x)
    return x
