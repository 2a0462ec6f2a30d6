"""Sums and contractions whose accumulation precision follows the operand dtype.

float32 operands accumulate in float32 (BLAS, split across threads by :mod:`._threads`).
float16 operands accumulate in float16, the way an fp16 multiply-accumulate array does
(compiled: :func:`._compiled.fp16_block_matmul`): the reduced axis is cut into short blocks, each
block's products are summed in fp32, in order, and rounded to fp16, and the running total is
kept in fp16, rounding after every block.

The fp16 running sums are computed on float32 values that are rounded to fp16 after every
addition. That is bit-identical to float16 addition: the exact sum of two fp16 numbers
rounded to fp32 and then to fp16 equals its direct rounding to fp16, because fp32 carries
more than 2 * 11 + 2 significant bits (double rounding is innocuous).
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops import _threads
from precision_sweep.emulator.ops._compiled import float16_to_float32, fp16_block_matmul
from precision_sweep.emulator.ops._compiled import float32_to_float16 as round_to_float16

FP16_BLOCK = 8


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with dtype-driven accumulation (see module docstring)."""
    if a.dtype != np.float16 and b.dtype != np.float16:
        return _threads.matmul(a, b)
    a32 = float16_to_float32(a) if a.dtype == np.float16 else a.astype(np.float32)
    b32 = float16_to_float32(b) if b.dtype == np.float16 else b.astype(np.float32)
    return round_to_float16(fp16_block_matmul(a32, b32, FP16_BLOCK))


def matmul_reference(a: np.ndarray, b: np.ndarray, block: int = FP16_BLOCK) -> np.ndarray:
    """Plain twin of the fp16 path of :func:`matmul` (tests only): each block's products
    summed in order in fp32 (from zero), rounded to fp16, added to a float16 running total."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    total = None
    with np.errstate(over="ignore"):
        for start in range(0, a.shape[-1], block):
            part = np.zeros(shape, np.float32)
            for k in range(start, min(a.shape[-1], start + block)):
                part = part + a32[..., :, k : k + 1] * b32[..., k : k + 1, :]
            part = part.astype(np.float16)
            total = part if total is None else total + part
    return total


def reduce_sum(x: np.ndarray, axes, keepdims: bool) -> np.ndarray:
    """Sum over ``axes`` with dtype-driven accumulation."""
    if x.dtype != np.float16:
        return np.sum(x, axis=axes, keepdims=keepdims)
    axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in np.atleast_1d(axes))
    keep = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, keep + list(axes))
    flat = float16_to_float32(moved.reshape(moved.shape[: len(keep)] + (-1,)))
    # the same blockwise sums as matmul: the products with ones are the values themselves
    ones = np.ones((flat.shape[-1], 1), dtype=np.float32)
    total = fp16_block_matmul(flat[..., None, :], ones, FP16_BLOCK)[..., 0, 0]
    total = round_to_float16(total)
    if keepdims:
        shape = [1 if a in axes else n for a, n in enumerate(x.shape)]
        total = total.reshape(shape)
    return total
