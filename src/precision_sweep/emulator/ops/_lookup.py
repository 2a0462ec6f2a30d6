"""Float16 lookup: an element-wise map given as its result for each of the 65,536 float16 bit
patterns, applied in one compiled parallel gather (numpy's ``table[x.view(uint16)]`` would
first widen every index to int64)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from precision_sweep.emulator.ops import _half  # noqa: F401  (how kernels compile: _compile_target)
from precision_sweep.emulator.ops._casts import PARALLEL_MIN_SIZE


@njit(cache=True, parallel=True)
def _gather(table, bits, out):
    for i in prange(bits.size):
        out[i] = table[bits[i]]


def lookup_float16(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``table[x.view(uint16)]`` as float16: ``table`` holds 65,536 float16 results, ``x`` is a
    float16 array of any shape and layout; the result is a new C-contiguous array of its shape."""
    bits = np.ascontiguousarray(x).view(np.uint16).reshape(-1)
    if bits.size < PARALLEL_MIN_SIZE:
        return table[bits].reshape(x.shape)
    out = np.empty(bits.size, dtype=np.uint16)
    _gather(table.view(np.uint16), bits, out)
    return out.view(np.float16).reshape(x.shape)
