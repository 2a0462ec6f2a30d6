"""Reductions (spec: ops/defs/iOS15/reduction.py). ``axes=None`` reduces every axis.

Sums go through the op's accumulator (``_accumulate``); max, min, prod and arg reductions
are exact or not sums, and stay plain numpy.
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops._accumulate import FP32
from precision_sweep.emulator.registry import kernel


def _axes(x, axes):
    if axes is None:
        return tuple(range(x.ndim))
    return tuple(int(a) % x.ndim for a in np.asarray(axes).reshape(-1))


def _count(x, axes):
    return float(np.prod([x.shape[a] for a in axes]))


@kernel("reduce_sum")
def reduce_sum(x, axes=None, keep_dims=False, *, accumulator=FP32):
    return accumulator.sum(x, _axes(x, axes), bool(keep_dims))


@kernel("reduce_mean")
def reduce_mean(x, axes=None, keep_dims=False, *, accumulator=FP32):
    axes = _axes(x, axes)
    return accumulator.sum(x, axes, bool(keep_dims), scale=1.0 / _count(x, axes))


@kernel("reduce_prod")
def reduce_prod(x, axes=None, keep_dims=False):
    return np.prod(x, axis=_axes(x, axes), keepdims=bool(keep_dims))


@kernel("reduce_max")
def reduce_max(x, axes=None, keep_dims=False):
    return np.max(x, axis=_axes(x, axes), keepdims=bool(keep_dims))


@kernel("reduce_min")
def reduce_min(x, axes=None, keep_dims=False):
    return np.min(x, axis=_axes(x, axes), keepdims=bool(keep_dims))


@kernel("reduce_sum_square")
def reduce_sum_square(x, axes=None, keep_dims=False, *, accumulator=FP32):
    return accumulator.sum(x * x, _axes(x, axes), bool(keep_dims))


@kernel("reduce_l1_norm")
def reduce_l1_norm(x, axes=None, keep_dims=False, *, accumulator=FP32):
    return accumulator.sum(np.abs(x), _axes(x, axes), bool(keep_dims))


@kernel("reduce_l2_norm")
def reduce_l2_norm(x, axes=None, keep_dims=False, *, accumulator=FP32):
    return np.sqrt(accumulator.sum(x * x, _axes(x, axes), bool(keep_dims)))


@kernel("reduce_log_sum")
def reduce_log_sum(x, axes=None, keep_dims=False, *, accumulator=FP32):
    return np.log(accumulator.sum(x, _axes(x, axes), bool(keep_dims)))


@kernel("reduce_log_sum_exp")
def reduce_log_sum_exp(x, axes=None, keep_dims=False, *, accumulator=FP32):
    axes = _axes(x, axes)
    peak = np.max(x, axis=axes, keepdims=True)
    total = accumulator.sum(np.exp(x - peak), axes, True)
    out = np.log(total) + peak
    return out if keep_dims else np.squeeze(out, axis=axes)


@kernel("reduce_argmax")
def reduce_argmax(x, axis=-1, keep_dims=False, output_dtype="int32"):
    out = np.argmax(x, axis=int(axis))
    return np.expand_dims(out, int(axis)) if keep_dims else out


@kernel("reduce_argmin")
def reduce_argmin(x, axis=-1, keep_dims=False, output_dtype="int32"):
    out = np.argmin(x, axis=int(axis))
    return np.expand_dims(out, int(axis)) if keep_dims else out
