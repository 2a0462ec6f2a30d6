"""Compiled twin of the float16 2-D ``max_pool`` (the plain kernel is ``pool.max_pool``).

numpy's float16 ``maximum`` over strided window views costs about 5 ns an element per tap; this
kernel reads each window once, on all cores. It keeps numpy's semantics bit for bit, as the
plain kernel reduces the taps (row by row, ``out = maximum(out, tap)``): the running value is
kept when it is greater or equal (so on a tie of +0 and -0 the earlier tap wins) or NaN, and a
NaN tap replaces it. Comparisons run on the values widened to float32 (exact).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from precision_sweep.emulator.ops._casts import _cpu_half_float


# float16 -inf: what the plain kernel pads with
_NEG_INF_BITS = np.uint16(0xFC00)


@njit(cache=True, parallel=True)
def _max_pool_2d_half(bits, kh, kw, sh, sw, top_pad, left_pad, out):
    planes, height, width = bits.shape
    rows, cols = out.shape[1], out.shape[2]
    for p in prange(planes):
        for i in range(rows):
            top = i * sh - top_pad
            for j in range(cols):
                left = j * sw - left_pad
                best = _NEG_INF_BITS
                first = True
                best_value = np.float32(0)
                for a in range(kh):
                    r = top + a
                    for b in range(kw):
                        c = left + b
                        tap = bits[p, r, c] if 0 <= r < height and 0 <= c < width else _NEG_INF_BITS
                        value = _cpu_half_float(tap)
                        if first:
                            best, best_value, first = tap, value, False
                        elif not (best_value >= value or best_value != best_value):
                            best, best_value = tap, value
                out[p, i, j] = best


def max_pool_2d_float16(x: np.ndarray, kernel_sizes, strides, pads) -> np.ndarray:
    """Max over each (kh, kw) window at (sh, sw) strides of a float16 ``x`` (N, C, H, W), padded
    by ``pads`` ((top, bottom), (left, right)) with -inf: the result of ``pool.max_pool``'s tap
    reduction on the padded input, bit for bit, without building it."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel_sizes, strides
    (top, bottom), (left, right) = pads
    rows, cols = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    bits = np.ascontiguousarray(x).reshape(n * c, h, w).view(np.uint16)
    out = np.empty((n * c, rows, cols), dtype=np.uint16)
    _max_pool_2d_half(bits, int(kh), int(kw), int(sh), int(sw), int(top), int(left), out)
    return out.view(np.float16).reshape(n, c, rows, cols)
