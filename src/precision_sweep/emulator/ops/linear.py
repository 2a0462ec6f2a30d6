"""linear, matmul, einsum (spec: ops/defs/iOS15/linear.py, iOS17/linear.py).

Every contraction goes through the op's accumulator (``_accumulate``), so the same kernels
give fp32 sums, fp16 running sums or the Neural Engine's tiles, as the unit model says.
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops._accumulate import FP32
from precision_sweep.emulator.registry import kernel


@kernel("linear")
def linear(x, weight, bias=None, *, accumulator=FP32):
    # weight is (D_out, D_in): y = x @ weight.T + bias
    y = accumulator.matmul(x, np.swapaxes(weight, -1, -2))
    return accumulator.add_bias(y, bias)


@kernel("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False, *, accumulator=FP32):
    # Rank-1 operands follow numpy/MIL broadcasting rules.
    if transpose_x and x.ndim > 1:
        x = np.swapaxes(x, -1, -2)
    if transpose_y and y.ndim > 1:
        y = np.swapaxes(y, -1, -2)
    return accumulator.matmul(x, y)


def _einsum_as_matmul(equation: str, a: np.ndarray, b: np.ndarray, contract):
    """A two-operand einsum as one batched matmul: batch indices (in both operands and the
    output), free indices of each operand, contracted indices (in both, not in the output)."""
    inputs, output = equation.replace(" ", "").split("->")
    left, right = inputs.split(",")
    size = {**dict(zip(left, a.shape)), **dict(zip(right, b.shape))}
    batch = [c for c in output if c in left and c in right]
    free_a = [c for c in left if c not in right and c in output]
    free_b = [c for c in right if c not in left and c in output]
    summed = [c for c in left if c in right and c not in output]
    # Indices of one operand that appear nowhere else are summed out first (rare).
    a = np.einsum(f"{left}->{''.join(batch + free_a + summed)}", a)
    b = np.einsum(f"{right}->{''.join(batch + summed + free_b)}", b)
    n_batch = [size[c] for c in batch]
    a = a.reshape(n_batch + [int(np.prod([size[c] for c in free_a], dtype=np.int64)), int(np.prod([size[c] for c in summed], dtype=np.int64))])
    b = b.reshape(n_batch + [int(np.prod([size[c] for c in summed], dtype=np.int64)), int(np.prod([size[c] for c in free_b], dtype=np.int64))])
    y = contract(a, b).reshape(n_batch + [size[c] for c in free_a + free_b])
    return np.einsum(f"{''.join(batch + free_a + free_b)}->{output}", y)


@kernel("einsum")
def einsum(values, equation, *, accumulator=FP32):
    if len(values) == 2 and "->" in str(equation):
        return _einsum_as_matmul(str(equation), values[0], values[1], accumulator.matmul)
    return np.einsum(str(equation), *values)
