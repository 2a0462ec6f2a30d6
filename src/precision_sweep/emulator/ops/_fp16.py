"""Fast, bit-exact float32 -> float16 rounding.

numpy's float32 -> float16 cast takes a scalar slow path for results in the fp16 subnormal
range (|x| < 2**-14), tens of ns per element; activations of fp16 programs are often full
of them. These helpers give the same bits (IEEE round-to-nearest-even, overflow to inf,
NaN kept) with a few vectorized passes. Those passes cost more than numpy's slow path when
few elements are subnormal, so the plain cast is used unless at least
``SUBNORMAL_SHARE`` of the elements would be subnormal.
"""

from __future__ import annotations

import numpy as np

_SMALLEST_NORMAL = np.float32(2.0**-14)
_SUBNORMAL_STEP_INV = np.float32(2.0**24)
_SUBNORMAL_STEP = np.float32(2.0**-24)
SUBNORMAL_SHARE = 0.1


def _mostly_normal(small: np.ndarray) -> bool:
    return np.count_nonzero(small) < SUBNORMAL_SHARE * small.size


def round_to_float16(x: np.ndarray) -> np.ndarray:
    """``x.astype(np.float16)`` for float32 ``x``, same bits, fast for subnormal results."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x)
    small = a < _SMALLEST_NORMAL
    if _mostly_normal(small):
        with np.errstate(over="ignore", invalid="ignore"):
            return x.astype(np.float16)
    with np.errstate(over="ignore", invalid="ignore"):
        normal = np.where(small, np.float32(0), x).astype(np.float16).view(np.uint16)
        # 0..1024 (1024 encodes 2**-14); NaN/large entries are masked out below.
        sub = np.rint(np.where(small, a, 0) * _SUBNORMAL_STEP_INV).astype(np.uint16)
    sub |= np.signbit(x).astype(np.uint16) << np.uint16(15)
    return np.where(small, sub, normal).view(np.float16)


def round_float16_in_float32(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest float16 value, kept as float32."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x)
    small = a < _SMALLEST_NORMAL
    if _mostly_normal(small):
        with np.errstate(over="ignore", invalid="ignore"):
            return x.astype(np.float16).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        normal = np.where(small, np.float32(0), x).astype(np.float16).astype(np.float32)
    sub = np.rint(x * _SUBNORMAL_STEP_INV) * _SUBNORMAL_STEP
    return np.where(small, sub, normal)
