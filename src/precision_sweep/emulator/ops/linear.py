"""linear, matmul, einsum (spec: ops/defs/iOS15/linear.py, iOS17/linear.py)."""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops import _accumulate
from precision_sweep.emulator.registry import kernel


@kernel("linear")
def linear(x, weight, bias=None):
    # weight is (D_out, D_in): y = x @ weight.T + bias
    y = _accumulate.matmul(x, np.swapaxes(weight, -1, -2))
    return y if bias is None else y + bias


@kernel("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    # Rank-1 operands follow numpy/MIL broadcasting rules.
    if transpose_x and x.ndim > 1:
        x = np.swapaxes(x, -1, -2)
    if transpose_y and y.ndim > 1:
        y = np.swapaxes(y, -1, -2)
    if x.ndim == 1 or y.ndim == 1:
        return np.matmul(x, y)
    return _accumulate.matmul(x, y)


@kernel("einsum")
def einsum(values, equation):
    return np.einsum(str(equation), *values)
