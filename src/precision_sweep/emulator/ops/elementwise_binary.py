"""Elementwise binary ops with numpy broadcasting (spec: ops/defs/iOS15/elementwise_binary.py).

As in the spec, the shared behaviour (broadcasting ``x`` against ``y``) lives once; each op
only names its numpy function.
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops._binary_kernels import binary_float16
from precision_sweep.emulator.ops._casts import float16_to_float32
from precision_sweep.emulator.registry import kernel


def _real_div(x, y):
    return np.true_divide(x, y)


def _floor_div(x, y):
    return np.floor_divide(x, y)


def _mod(x, y):
    return np.mod(x, y)


_BINARY = {
    "real_div": _real_div,
    "floor_div": _floor_div,
    "mod": _mod,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


def _make(fn):
    def binary(x, y):
        return fn(x, y)

    binary.__name__ = fn.__name__
    return binary


for _op_type, _fn in _BINARY.items():
    kernel(_op_type)(_make(_fn))


def _float32_copy(value):
    """A float16 array as its exact float32 copy; anything else (a Python scalar stays one, so
    numpy's weak-scalar rule keeps an fp32 operation in fp32) as it is."""
    return float16_to_float32(value) if isinstance(value, np.ndarray) and value.dtype == np.float16 else value


def _rounded_once(fn, op_type: str):
    def binary(x, y, *, out=None):
        """``x OP y``. float16 operands come as they are under every profile (numerics
        ``SINGLE_ROUNDING_OPS``): the result is their float32 result rounded to float16, in one
        compiled pass when they share a shape or one is broadcast per plane or per row of the
        other (else from fp32 copies, which the executor rounds). ``out`` (``x``'s buffer, see
        the registry) is used when the result has its shape and dtype."""
        if out is not None and out.shape != np.broadcast_shapes(np.shape(x), np.shape(y)):
            out = None
        if isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == y.dtype == np.float16:
            result = binary_float16(op_type, x, y, out=out)
            return result if result is not None else fn(float16_to_float32(x), float16_to_float32(y))
        x, y = _float32_copy(x), _float32_copy(y)
        if out is not None and np.result_type(x, y) != out.dtype:
            out = None
        return fn(x, y, out=out)

    binary.__name__ = op_type
    return binary


for _op_type, _fn in {"add": np.add, "sub": np.subtract, "mul": np.multiply}.items():
    kernel(_op_type)(_rounded_once(_fn, _op_type))
