"""Tensor-building ops (spec: ops/defs/iOS15/tensor_operation.py and its iOS16/17 updates)."""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops._accumulate import FP32
from precision_sweep.emulator.registry import kernel


def _ints(values):
    return [int(v) for v in np.asarray(values).reshape(-1)]


@kernel("concat")
def concat(values, axis, interleave=False):
    """Join ``values`` along ``axis``; 0-D values (all of them, ranks must agree) give a 1-D
    tensor of one element each, as the spec's type and value inference do."""
    axis = int(axis)
    if all(np.ndim(v) == 0 for v in values):
        return np.stack(values, axis=0)
    if not interleave:
        return np.concatenate(values, axis=axis)
    stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
    shape = list(values[0].shape)
    shape[axis] = sum(v.shape[axis] for v in values)
    return stacked.reshape(shape)


@kernel("stack")
def stack(values, axis):
    return np.stack(values, axis=int(axis))


@kernel("split")
def split(x, axis, num_splits=None, split_sizes=None):
    axis = int(axis)
    if split_sizes is not None:
        return tuple(np.split(x, np.cumsum(_ints(split_sizes))[:-1], axis=axis))
    return tuple(np.split(x, int(num_splits), axis=axis))


@kernel("tile")
def tile(x, reps):
    return np.tile(x, _ints(reps))


@kernel("pad")
def pad(x, pad, mode="constant", constant_val=0.0):
    amounts = _ints(pad)
    pairs = [(0, 0)] * (x.ndim - len(amounts) // 2)
    pairs += [(amounts[2 * i], amounts[2 * i + 1]) for i in range(len(amounts) // 2)]
    mode = str(mode)
    if mode == "constant":
        return np.pad(x, pairs, mode="constant", constant_values=constant_val)
    return np.pad(x, pairs, mode={"reflect": "reflect", "replicate": "edge"}[mode])


@kernel("fill")
def fill(shape, value=0.0):
    return np.full(_ints(shape), value)


@kernel("fill_like")
def fill_like(ref_tensor, value=0.0):
    return np.full(ref_tensor.shape, value)


@kernel("shape")
def shape(x):
    return np.asarray(x.shape, dtype=np.int32)


@kernel("range_1d")
def range_1d(end, start, step):
    return np.arange(start, end, step)


@kernel("identity")
def identity(x):
    return x


@kernel("select")
def select(cond, a, b):
    return np.where(cond, a, b)


@kernel("argsort")
def argsort(x, axis=-1, ascending=False):
    order = np.argsort(x if ascending else -x, axis=int(axis), kind="stable")
    return order


@kernel("topk")
def topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True):
    axis = int(axis)
    order = argsort(x, axis, ascending)
    index = np.take(order, np.arange(int(k)), axis=axis)
    return np.take_along_axis(x, index, axis=axis), index.astype(np.int32)


@kernel("one_hot")
def one_hot(indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0):
    eye = np.arange(int(one_hot_vector_size))
    hot = np.expand_dims(indices, -1) == eye
    out = np.where(hot, on_value, off_value)
    return np.moveaxis(out, -1, int(axis)) if int(axis) != -1 else out


@kernel("cumsum")
def cumsum(x, axis=0, exclusive=False, reverse=False, *, accumulator=FP32):
    """Cumulative sum; ``exclusive`` shifts in a zero, ``reverse`` sums from the end."""
    axis = int(axis)
    data = np.flip(x, axis=axis) if reverse else x
    out = accumulator.cumsum(data, axis).astype(x.dtype, copy=False)
    if exclusive:
        zero = np.zeros_like(np.take(out, [0], axis=axis))
        out = np.concatenate([zero, np.delete(out, -1, axis=axis)], axis=axis)
    return np.flip(out, axis=axis) if reverse else out


@kernel("band_part")
def band_part(x, lower=-1, upper=-1):
    """Zero everything outside the band ``(m - n) <= lower`` and ``(n - m) <= upper``."""
    m = np.arange(x.shape[-2]).reshape(-1, 1)
    n = np.arange(x.shape[-1]).reshape(1, -1)
    lower, upper = int(lower), int(upper)
    keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    return np.where(keep, x, np.zeros((), dtype=x.dtype))
