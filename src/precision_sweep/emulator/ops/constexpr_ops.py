"""Weight decompression ops (spec: ops/defs/iOS16/constexpr_ops.py, iOS18/compression.py).

They run once, when the program is compiled, because all their inputs are constants.

The iOS16 and iOS18 versions of ``constexpr_lut_to_dense`` and ``constexpr_sparse_to_dense``
share an op type string, so one kernel accepts both argument sets:

* iOS16 ``constexpr_lut_to_dense(indices, lut, shape)``: ``indices`` is a packed uint8 byte
  stream (LSB first), ``lut`` a vector of 2**nbits entries, ``shape`` the output shape.
* iOS18 ``constexpr_lut_to_dense(indices, lut, vector_axis)``: ``indices`` has the output's
  shape (the pymil loader hands sub-byte dtypes over already unpacked, one element per
  index), ``lut`` is ``[*blocks, NUM_PALETTES, VECTOR_SIZE]`` with one table per block.
* iOS16 ``constexpr_sparse_to_dense(nonzero_data, mask, shape)``: packed bit mask.
* iOS18 ``constexpr_sparse_to_dense(nonzero_data, mask)``: ``mask`` is an unpacked uint1
  tensor of the output's shape.

The sparse-to-sparse ops (``constexpr_lut_to_sparse``, ``constexpr_sparse_blockwise_shift_scale``)
return two outputs, ``(mask, nonzero_data)``.
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


def unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """First ``count`` ``nbits``-wide unsigned fields of an LSB-first packed byte stream."""
    bits = np.unpackbits(np.asarray(packed).astype(np.uint8).reshape(-1), bitorder="little")
    bits = bits[: count * nbits].reshape(count, nbits).astype(np.uint16)
    return (bits << np.arange(nbits, dtype=np.uint16)).sum(axis=1).astype(np.uint8)


def _repeat_blocks(values: np.ndarray, shape) -> np.ndarray:
    """Repeat each entry of ``values`` over its block so that the leading dims match ``shape``."""
    for axis, size in enumerate(shape):
        count = values.shape[axis]
        if count != size:
            values = np.repeat(values, size // count, axis=axis)
    return values


@kernel("constexpr_affine_dequantize")
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    """``scale * (quantized_data - zero_point)`` with vector scale/zero_point along ``axis``."""
    rank = quantized_data.ndim
    axis = int(axis)
    scale = _broadcast_along(scale, rank, axis).astype(np.float32)
    zero_point = _broadcast_along(zero_point, rank, axis).astype(np.float32)
    return (quantized_data.astype(np.float32) - zero_point) * scale


@kernel("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(data, scale, offset=None):
    """``scale * (data - offset)``; ``scale[i0, j0, ...]`` covers block ``data.shape / scale.shape``."""
    values = np.asarray(data).astype(np.float32)
    if offset is not None:
        values = values - _repeat_blocks(np.asarray(offset).astype(np.float32), values.shape)
    return _repeat_blocks(np.asarray(scale).astype(np.float32), values.shape) * values


def lut_lookup(indices: np.ndarray, lut: np.ndarray, vector_axis=None) -> np.ndarray:
    """iOS18 lookup: per-block tables ``lut[*blocks, NUM_PALETTES, VECTOR_SIZE]``.

    ``output_shape[vector_axis] = indices_shape[vector_axis] * VECTOR_SIZE``; each index is
    replaced by its vector, laid out contiguously along ``vector_axis``.
    """
    indices = np.asarray(indices).astype(np.intp)
    lut = np.asarray(lut)
    rank = indices.ndim
    palettes, vector_size = lut.shape[-2], lut.shape[-1]
    # Flat table number of every element: the index of its block in the lut's leading dims.
    block_ids = np.zeros(indices.shape, dtype=np.intp)
    for axis in range(rank):
        blocks = lut.shape[axis]
        position = np.arange(indices.shape[axis]) // (indices.shape[axis] // blocks)
        shape = [1] * rank
        shape[axis] = -1
        block_ids = block_ids * blocks + position.reshape(shape)
    tables = lut.reshape(-1, palettes, vector_size)
    values = tables[block_ids, indices]  # (*indices.shape, VECTOR_SIZE)
    if vector_size == 1:
        return values[..., 0]
    axis = int(vector_axis) % rank
    values = np.moveaxis(values, -1, axis + 1)  # vector right after its axis
    shape = list(indices.shape)
    shape[axis] *= vector_size
    return values.reshape(shape)


@kernel("constexpr_lut_to_dense")
def constexpr_lut_to_dense(indices, lut, shape=None, vector_axis=None):
    """Palettized weights; iOS16 (packed ``indices`` + ``shape``) or iOS18 (per-block LUTs)."""
    if shape is not None:  # iOS16 signature
        lut = np.asarray(lut).reshape(-1)
        shape = [int(s) for s in np.asarray(shape).reshape(-1)]
        nbits = int(np.log2(lut.size))
        count = int(np.prod(shape))
        return lut[unpack_bits(indices, nbits, count).astype(np.intp)].reshape(shape)
    return lut_lookup(indices, lut, vector_axis)


def _scatter_nonzero(nonzero_data, mask):
    mask = np.asarray(mask) != 0
    out = np.zeros(mask.shape, dtype=np.asarray(nonzero_data).dtype)
    out[mask] = np.asarray(nonzero_data).reshape(-1)
    return out


@kernel("constexpr_sparse_to_dense")
def constexpr_sparse_to_dense(nonzero_data, mask, shape=None):
    """Zeros except where the bit mask is set, filled in row-major order from ``nonzero_data``."""
    if shape is not None:  # iOS16 signature: packed mask bytes + explicit shape
        shape = [int(s) for s in np.asarray(shape).reshape(-1)]
        count = int(np.prod(shape))
        bits = np.unpackbits(np.asarray(mask).astype(np.uint8).reshape(-1), bitorder="little")[:count]
        return _scatter_nonzero(nonzero_data, bits.reshape(shape))
    return _scatter_nonzero(nonzero_data, mask)


@kernel("constexpr_lut_to_sparse")
def constexpr_lut_to_sparse(indices_mask, indices_nonzero_data, lut, vector_axis=None):
    """De-palettize only the nonzero entries; returns ``(mask, nonzero_data)``."""
    dense_indices = _scatter_nonzero(indices_nonzero_data, indices_mask)
    dense = lut_lookup(dense_indices, lut, vector_axis)
    mask = np.asarray(indices_mask)
    if vector_axis is not None and np.asarray(lut).shape[-1] > 1:
        mask = np.repeat(mask, np.asarray(lut).shape[-1], axis=int(vector_axis))
    return mask, dense[mask != 0].reshape(-1)


@kernel("constexpr_sparse_blockwise_shift_scale")
def constexpr_sparse_blockwise_shift_scale(data_mask, nonzero_data, scale, offset=None):
    """Shift-scale only the nonzero entries; returns ``(mask, nonzero_data)``."""
    dense = _scatter_nonzero(nonzero_data, data_mask)
    values = constexpr_blockwise_shift_scale(dense, scale, offset)
    mask = np.asarray(data_mask)
    return mask, values[mask != 0].reshape(-1)


@kernel("constexpr_cast")
def constexpr_cast(source_val, output_dtype):
    """fp16 -> fp32 (the executor casts to the declared output dtype)."""
    return np.asarray(source_val).astype(str(output_dtype).replace("fp", "float"))
