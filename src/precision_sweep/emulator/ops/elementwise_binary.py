"""Elementwise binary ops with numpy broadcasting (spec: ops/defs/iOS15/elementwise_binary.py).

As in the spec, the shared behaviour (broadcasting ``x`` against ``y``) lives once; each op
only names its numpy function.
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.registry import kernel


def _real_div(x, y):
    return np.true_divide(x, y)


def _floor_div(x, y):
    return np.floor_divide(x, y)


def _mod(x, y):
    return np.mod(x, y)


_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
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
