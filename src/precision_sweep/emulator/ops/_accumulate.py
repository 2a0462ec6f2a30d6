"""Sums and contractions whose accumulation precision follows the operand dtype.

float32 operands accumulate in float32 (BLAS). float16 operands accumulate in float16, the
way an fp16 multiply-accumulate array does: the reduced axis is cut into short blocks, each
block's products are summed exactly enough (fp32) and rounded to fp16, and the running total
is kept in fp16, rounding after every block.
"""

from __future__ import annotations

import numpy as np

FP16_BLOCK = 8


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with dtype-driven accumulation (see module docstring)."""
    if a.dtype != np.float16 and b.dtype != np.float16:
        return np.matmul(a, b)
    a32 = a.astype(np.float32)
    b32 = b.astype(np.float32)
    k = a32.shape[-1]
    total = None
    for start in range(0, k, FP16_BLOCK):
        part = np.matmul(a32[..., start : start + FP16_BLOCK], b32[..., start : start + FP16_BLOCK, :])
        part = part.astype(np.float16)
        total = part if total is None else (total + part)
    return total


def reduce_sum(x: np.ndarray, axes, keepdims: bool) -> np.ndarray:
    """Sum over ``axes`` with dtype-driven accumulation."""
    if x.dtype != np.float16:
        return np.sum(x, axis=axes, keepdims=keepdims)
    axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in np.atleast_1d(axes))
    keep = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, keep + list(axes))
    flat = moved.reshape(moved.shape[: len(keep)] + (-1,)).astype(np.float32)
    total = np.zeros(flat.shape[:-1], dtype=np.float16)
    for start in range(0, flat.shape[-1], FP16_BLOCK):
        total = total + flat[..., start : start + FP16_BLOCK].sum(axis=-1).astype(np.float16)
    if keepdims:
        shape = [1 if a in axes else n for a, n in enumerate(x.shape)]
        total = total.reshape(shape)
    return total
