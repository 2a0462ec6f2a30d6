"""Compiled float16 add (``elementwise_binary.py``): the float32 sum of two float16 arrays
rounded to float16, in two compiled passes instead of three casts and an add. Tested bit for
bit against numpy (``tests/emulator/test_compiled.py``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from precision_sweep.emulator.ops._casts import _cpu_half_float, _to_half_bits


@njit(cache=True, parallel=True)
def _add_half(a, b, out):
    for i in prange(a.size):
        # a quieted signalling NaN adds to the same NaN as numpy's (addition quiets it too)
        out[i] = _cpu_half_float(a[i]) + _cpu_half_float(b[i])


def add_float16(x: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``(x.astype(f32) + y.astype(f32)).astype(f16)`` for same-shape float16 arrays.

    The same bits as numpy's float16 add: the float32 sum of two float16 values rounds to the
    same float16 as their exact sum (float32 has more than 2 * 11 + 2 significant bits).
    ``out``, a C-contiguous float16 array of their shape (``x`` itself included), receives the
    result.
    """
    sums = np.empty(x.size, dtype=np.float32)
    a = np.ascontiguousarray(x).reshape(-1).view(np.uint16)
    b = np.ascontiguousarray(y).reshape(-1).view(np.uint16)
    _add_half(a, b, sums)
    bits = np.empty(x.size, dtype=np.uint16) if out is None else out.reshape(-1).view(np.uint16)
    _to_half_bits(sums.view(np.uint32), bits)
    return bits.view(np.float16).reshape(x.shape)
