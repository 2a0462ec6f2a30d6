"""Normalization ops (spec: ops/defs/iOS15/normalization.py, iOS17/normalization.py).

Means and sums of squares go through the op's accumulator (``_accumulate``); batch_norm
(inference: a per-channel affine map) sums nothing.
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops._accumulate import FP32
from precision_sweep.emulator.registry import kernel


def _channel(values, rank):
    return values.reshape((1, -1) + (1,) * (rank - 2))


def _mean(x, axes, accumulator):
    count = float(np.prod([x.shape[a] for a in axes]))
    return accumulator.sum(x, axes, True, scale=1.0 / count)


@kernel("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    rank = x.ndim
    y = (x - _channel(mean, rank)) / np.sqrt(_channel(variance, rank) + epsilon)
    if gamma is not None:
        y = y * _channel(gamma, rank)
    if beta is not None:
        y = y + _channel(beta, rank)
    return y


@kernel("instance_norm")
def instance_norm(x, gamma=None, beta=None, epsilon=1e-5, *, accumulator=FP32):
    axes = tuple(range(2, x.ndim))
    mean = _mean(x, axes, accumulator)
    var = _mean((x - mean) ** 2, axes, accumulator)
    y = (x - mean) / np.sqrt(var + epsilon)
    if gamma is not None:
        y = y * _channel(gamma, x.ndim)
    if beta is not None:
        y = y + _channel(beta, x.ndim)
    return y


def _over_axes(values, shape, axes):
    """``gamma``/``beta`` of shape ``x.shape[axes]`` (axes in increasing order) reshaped to
    broadcast against ``x``: the normalized dims kept, 1 elsewhere."""
    return np.reshape(values, [dim if i in axes else 1 for i, dim in enumerate(shape)])


@kernel("layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5, *, accumulator=FP32):
    """``gamma * (x - E[x]) / sqrt(Var[x] + epsilon) + beta`` over ``axes`` (spec: iOS15/iOS17
    ``normalization.py``, ``layer_norm``); ``gamma`` and ``beta`` have the shape of the
    normalized dims, which need not be the trailing ones."""
    axes = tuple(range(x.ndim)) if axes is None else tuple(int(a) % x.ndim for a in np.asarray(axes).reshape(-1))
    mean = _mean(x, axes, accumulator)
    var = _mean((x - mean) ** 2, axes, accumulator)
    y = (x - mean) / np.sqrt(var + epsilon)
    if gamma is not None:
        y = y * _over_axes(gamma, x.shape, axes)
    if beta is not None:
        y = y + _over_axes(beta, x.shape, axes)
    return y


@kernel("l2_norm")
def l2_norm(x, axes=None, epsilon=1e-6, *, accumulator=FP32):
    axes = tuple(range(1, x.ndim)) if axes is None else tuple(int(a) % x.ndim for a in np.asarray(axes).reshape(-1))
    norm = np.sqrt(np.maximum(accumulator.sum(x * x, axes, True), epsilon))
    return x / norm


@kernel("local_response_norm")
def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0, *, accumulator=FP32):
    size = int(size)
    sq = (x * x).astype(np.float32)
    half = (size - 1) // 2
    padded = np.pad(sq, [(0, 0), (half, size - 1 - half)] + [(0, 0)] * (x.ndim - 2))
    window = accumulator.sum_terms([padded[:, i : i + x.shape[1]] for i in range(size)])
    return x / (k + alpha / size * window) ** beta
