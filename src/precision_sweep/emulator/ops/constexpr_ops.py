"""Weight decompression ops (spec: ops/defs/iOS16/constexpr_ops.py, iOS18/compression.py).

They run once, when the program is compiled, because all their inputs are constants.
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.registry import kernel


def _broadcast_along(vector: np.ndarray, rank: int, axis: int) -> np.ndarray:
    vector = np.asarray(vector)
    if vector.ndim == 0 or vector.size == 1:
        return vector.reshape(())
    shape = [1] * rank
    shape[axis % rank] = vector.size
    return vector.reshape(shape)


@kernel("constexpr_affine_dequantize")
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    """``scale * (quantized_data - zero_point)`` with vector scale/zero_point along ``axis``."""
    rank = quantized_data.ndim
    axis = int(axis)
    scale = _broadcast_along(scale, rank, axis)
    zero_point = _broadcast_along(zero_point, rank, axis).astype(np.float32)
    return scale * (quantized_data.astype(np.float32) - zero_point)


def _repeat_blocks(values: np.ndarray, shape) -> np.ndarray:
    for axis, (size, count) in enumerate(zip(shape, values.shape)):
        if count != size:
            values = np.repeat(values, size // count, axis=axis)
    return values


@kernel("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(data, scale, offset=None):
    """``scale * (data - offset)`` where each scale entry covers a block of ``data``."""
    values = data.astype(np.float32)
    if offset is not None:
        values = values - _repeat_blocks(np.asarray(offset, dtype=np.float32), data.shape)
    return _repeat_blocks(np.asarray(scale), data.shape) * values


@kernel("constexpr_cast")
def constexpr_cast(source_val, output_dtype):
    return source_val  # the executor casts to the declared output dtype
