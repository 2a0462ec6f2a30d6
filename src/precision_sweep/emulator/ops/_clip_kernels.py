"""Compiled relu, relu6, clip and linear_activation (``activation.py``,
``elementwise_unary.py``): numpy's bits.

* :func:`clip_float16` is relu, relu6 and clip on a float16 array: the bits that computing
  them in float32 and rounding gives (numpy's float16 min/max run in software, and keep -0
  where its float32 ones give +0);
* :func:`clip_float32` is the same for float32 (numpy's runs on one core);
  :func:`offset_clip_float32` adds a per-row offset first, in the same pass (a conv's bias);
* :func:`linear_float16` is ``alpha * x + beta`` on a float16 array with numpy's float16
  arithmetic: the product rounded to fp16, then the sum (the NeuralNetwork format's relu6 is a
  chain of such layers).

Tested bit for bit against numpy (``tests/emulator/test_compiled.py``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from precision_sweep.emulator.ops._casts import (
    PARALLEL_MIN_SIZE,
    _cpu_half_bits,
    _cpu_half_float,
    _numpy_nan_bits,
    _round_half,
)
from precision_sweep.emulator.ops._half import _float_bits


@njit(cache=True, inline="always")
def _clip_choice(value, lo, hi, ties_to_bounds):
    """Which value clipping keeps: 0 the element, 1 ``lo``, 2 ``hi``.

    Max with lo, then min with hi, as the float32 computation does; NaN compares false
    everywhere and is kept, as numpy propagates it.
    """
    choice = 0
    if value < lo or (ties_to_bounds and value == lo):
        value = lo
        choice = 1
    if value > hi or (ties_to_bounds and value == hi):
        choice = 2
    return choice


@njit(cache=True, parallel=True)
def _clip_half(bits, lo, hi, lo_bits, hi_bits, ties_to_bounds, out):
    for i in prange(bits.size):
        choice = _clip_choice(_cpu_half_float(bits[i]), lo, hi, ties_to_bounds)
        out[i] = bits[i] if choice == 0 else (lo_bits if choice == 1 else hi_bits)


def clip_float16(x: np.ndarray, lo: float, hi: float, ties_to_bounds: bool, out: np.ndarray | None = None) -> np.ndarray:
    """A float16 ``x`` clipped to [lo, hi], with the bits the float32 computation rounds to.

    ``ties_to_bounds`` says what an element equal to a bound becomes, which matters only for
    signed zeros: the bound (``np.minimum(np.maximum(x, lo), hi)`` on float32 returns its
    second operand on ties) or the element itself (``np.clip``). ``lo`` and ``hi`` are taken
    as float16, the dtype they have in an fp16 program. ``out``, a C-contiguous float16 array of
    ``x``'s shape (``x`` itself included), receives the result.
    """
    x = np.asarray(x, dtype=np.float16)
    lo16, hi16 = np.float16(lo), np.float16(hi)
    bits = np.ascontiguousarray(x).reshape(-1).view(np.uint16)
    out = np.empty(x.size, dtype=np.uint16) if out is None else out.reshape(-1).view(np.uint16)
    lo_bits = np.array([lo16]).view(np.uint16)[0]
    hi_bits = np.array([hi16]).view(np.uint16)[0]
    _clip_half(bits, np.float32(lo16), np.float32(hi16), lo_bits, hi_bits, ties_to_bounds, out)
    return out.view(np.float16).reshape(x.shape)


@njit(cache=True, parallel=True)
def _clip_single(x, lo, hi, ties_to_bounds, out):
    for i in prange(x.size):
        choice = _clip_choice(x[i], lo, hi, ties_to_bounds)
        out[i] = x[i] if choice == 0 else (lo if choice == 1 else hi)


def clip_float32(x: np.ndarray, lo: float, hi: float, ties_to_bounds: bool, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`clip_float16` for a float32 ``x``: the same bits as numpy, on all cores.

    ``ties_to_bounds`` as there: ``np.minimum(np.maximum(x, lo), hi)`` (True) or ``np.clip``;
    ``out`` as there.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.size < PARALLEL_MIN_SIZE:
        if ties_to_bounds:
            return np.minimum(np.maximum(x, np.float32(lo)), np.float32(hi), out=out)
        return np.clip(x, np.float32(lo), np.float32(hi), out=out)
    flat = np.empty(x.size, dtype=np.float32) if out is None else out.reshape(-1)
    _clip_single(np.ascontiguousarray(x).reshape(-1), np.float32(lo), np.float32(hi), ties_to_bounds, flat)
    return flat.reshape(x.shape)


@njit(cache=True, parallel=True)
def _offset_clip_rows(rows, offsets, lo, hi, ties_to_bounds):
    for r in prange(rows.shape[0]):
        row = rows[r]
        offset = offsets[r]
        for j in range(row.size):
            value = row[j] + offset
            choice = _clip_choice(value, lo, hi, ties_to_bounds)
            row[j] = value if choice == 0 else (lo if choice == 1 else hi)


def offset_clip_float32(rows: np.ndarray, offsets: np.ndarray | None, lo: float, hi: float, ties_to_bounds: bool) -> None:
    """``rows = clip_float32(rows + offsets[:, None], ...)`` in place, one pass, on all cores:
    float32 ``rows`` (R, W) C-contiguous, ``offsets`` (R,) float32 or None (nothing added: an
    added 0.0 would turn -0.0 into +0.0). The bits of the add and then :func:`clip_float32`."""
    if offsets is None:
        clip_float32(rows, lo, hi, ties_to_bounds, out=rows)
    else:
        _offset_clip_rows(rows, np.ascontiguousarray(offsets, dtype=np.float32), np.float32(lo), np.float32(hi),
                          ties_to_bounds)


@njit(cache=True, parallel=True)
def _linear_half(bits, alpha, beta, out):
    for i in prange(bits.size):
        value = _round_half(_cpu_half_float(bits[i]) * alpha) + beta
        f = _float_bits(value)
        out[i] = _numpy_nan_bits(f) if (f & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else _cpu_half_bits(value)


def linear_float16(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """``alpha * x + beta`` for a float16 ``x`` as numpy's float16 arithmetic computes it (each
    of the two results rounded to fp16); ``alpha`` and ``beta`` are taken as float16."""
    bits = np.ascontiguousarray(x, dtype=np.float16).reshape(-1).view(np.uint16)
    out = np.empty(bits.size, dtype=np.uint16)
    _linear_half(bits, np.float32(np.float16(alpha)), np.float32(np.float16(beta)), out)
    return out.view(np.float16).reshape(np.shape(x))
