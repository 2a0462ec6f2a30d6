"""Pooling (spec: ops/defs/iOS15/pool.py): max_pool, avg_pool, l2_pool, channels-first."""

from __future__ import annotations

import itertools

import numpy as np

from precision_sweep.emulator.ops._accumulate import FP32
from precision_sweep.emulator.ops._pool_kernels import max_pool_2d_float16
from precision_sweep.emulator.ops._spatial import pad_amounts, windows
from precision_sweep.emulator.registry import kernel


def _pool_padding(x, kernel_sizes, strides, pad_type, pad, ceil_mode):
    nd = len(kernel_sizes)
    ones = [1] * nd
    pads = pad_amounts(pad_type, x.shape[2:], kernel_sizes, strides, ones, pad)
    if ceil_mode and str(pad_type) in ("valid", "custom"):
        # Spec (ops/defs/_utils.py spatial_dimensions_out_shape): with ceil_mode,
        # out = floor((in + before + after - k + s - 1) / s) + 1, minus one if the last
        # window would start in the end padding and there is padding at all; the extra
        # rows needed by the last window are added as end padding.
        grown = []
        for (before, after), size, k, s in zip(pads, x.shape[2:], kernel_sizes, strides):
            out = (size + before + after - k + s - 1) // s + 1
            if (out - 1) * s >= size + before and (before > 0 or after > 0):
                out -= 1
            grown.append((before, max(after, (out - 1) * s + k - size - before)))
        pads = grown
    return pads


def _geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode):
    """``(kernel sizes, strides, pads)`` of a pooling op, as lists of ints and pairs."""
    kernel_sizes = [int(k) for k in np.asarray(kernel_sizes).reshape(-1)]
    strides = [int(s) for s in np.asarray(strides).reshape(-1)]
    return kernel_sizes, strides, _pool_padding(x, kernel_sizes, strides, pad_type, pad, bool(ceil_mode))


def _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, fill):
    kernel_sizes, strides, pads = _geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads, constant_values=fill)
    win = windows(xp, kernel_sizes, strides, [1] * len(kernel_sizes))
    return win, pads, kernel_sizes, strides


def _window_axes(nd):
    return tuple(range(-nd, 0))


def _reduce_taps(win, nd, ufunc):
    """Reduce the window axes tap by tap: one vectorized ufunc call per kernel position.

    Much faster than reducing over the (tiny, strided) trailing window axes of the view.
    """
    taps = itertools.product(*[range(k) for k in win.shape[-nd:]])
    out = np.array(win[(Ellipsis,) + next(taps)])
    for tap in taps:
        ufunc(out, win[(Ellipsis,) + tap], out=out)
    return out


@kernel("max_pool")
def max_pool(x, kernel_sizes, strides, pad_type, pad=None, ceil_mode=False):
    if x.dtype == np.float16 and x.ndim == 4:  # the compiled twin: the same bits, one pass
        return max_pool_2d_float16(x, *_geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode))
    win, _, ks, _ = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, -np.inf)
    return _reduce_taps(win, len(ks), np.maximum)


def max_pool_reference(x, kernel_sizes, strides, pad_type, pad=None, ceil_mode=False):
    """Plain twin of :func:`max_pool`: the max over each window's axes (tests only)."""
    win, _, ks, _ = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, -np.inf)
    return win.max(axis=_window_axes(len(ks)))


def _window_taps(win, nd):
    return [win[(Ellipsis,) + tap] for tap in itertools.product(*[range(k) for k in win.shape[-nd:]])]


@kernel("avg_pool")
def avg_pool(x, kernel_sizes, strides, pad_type, pad=None, exclude_padding_from_average=False, ceil_mode=False,
             *, accumulator=FP32):
    win, pads, ks, st = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, 0)
    axes = _window_axes(len(ks))
    if accumulator.rounds_to_fp16:  # the order of the taps matters: the model's sum of them
        total = accumulator.sum_terms(_window_taps(win, len(ks)))
    else:
        total = _reduce_taps(win, len(ks), np.add)
    if exclude_padding_from_average:
        mask = np.pad(np.ones((1, 1) + x.shape[2:], dtype=np.float32), [(0, 0), (0, 0)] + pads)
        counts = windows(mask, ks, st, [1] * len(ks)).sum(axis=axes)
    else:
        counts = float(np.prod(ks))
    return total / counts


@kernel("l2_pool")
def l2_pool(x, kernel_sizes, strides, pad_type, pad=None, ceil_mode=False, *, accumulator=FP32):
    win, _, ks, _ = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, 0)
    return np.sqrt(accumulator.sum_terms([t * t for t in _window_taps(win, len(ks))]))
