"""Compiled (numba) fp16 <-> fp32 casts of the datapath (``executor``, ``_accumulate``).

Each function here computes exactly what a plain numpy cast computes, bit for bit, and is
tested against it (``tests/emulator/test_compiled.py``):

* :func:`float32_to_float16` is ``x.astype(np.float16)``. It follows numpy's own conversion
  (``npy_floatbits_to_halfbits``: round to nearest even, overflow to inf, NaN payload kept),
  but runs on all cores and has no slow path for fp16 subnormals, where numpy's cast costs
  tens of ns per element;
* :func:`float16_to_float32` is ``x.astype(np.float32)`` (a 65,536-entry table that numpy
  itself filled);
The OpenMP threads wait passively between kernels (``OMP_WAIT_POLICY``, see below).
Kernels are compiled on first use and cached on disk (numba ``cache=True``), so a new
process pays the compile time once per machine, not once per job.
"""

from __future__ import annotations

from precision_sweep.emulator.ops import _half  # noqa: F401  (sets OMP_WAIT_POLICY first)

import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import njit, prange, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402


_HALF_TO_FLOAT = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
# The same table with fp16 subnormals and -0 read as +0 (MAC operands on M1-class engines).
_HALF_TO_FLOAT_FLUSHED = np.where(np.abs(_HALF_TO_FLOAT) < np.float32(2.0**-14), np.float32(0.0), _HALF_TO_FLOAT)

# Below this many elements a plain numpy call is cheaper than entering a parallel kernel.
PARALLEL_MIN_SIZE = 1 << 14


@intrinsic
def _float_bits(typingctx, value):
    """The bits of a float32 as a uint32 (a bitcast, no conversion)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def _bits_float(typingctx, value):
    """The float32 whose bits are a uint32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@njit(cache=True, inline="always")
def _half_bits(f):
    """numpy's ``npy_floatbits_to_halfbits`` for one float32 bit pattern (uint32)."""
    h_sgn = np.uint16((f & np.uint32(0x80000000)) >> np.uint32(16))
    f_exp = f & np.uint32(0x7F800000)
    if f_exp >= np.uint32(0x47800000):
        if f_exp == np.uint32(0x7F800000):
            f_sig = f & np.uint32(0x007FFFFF)
            if f_sig != 0:
                ret = np.uint16(np.uint32(0x7C00) + (f_sig >> np.uint32(13)))
                if ret == np.uint16(0x7C00):
                    ret = np.uint16(ret + np.uint16(1))
                return np.uint16(h_sgn + ret)
        return np.uint16(h_sgn + np.uint16(0x7C00))
    if f_exp <= np.uint32(0x38000000):
        if f_exp < np.uint32(0x33000000):
            return h_sgn
        e = f_exp >> np.uint32(23)
        f_sig = np.uint32(0x00800000) + (f & np.uint32(0x007FFFFF))
        f_sig = f_sig >> (np.uint32(113) - e)
        if ((f_sig & np.uint32(0x3FFF)) != np.uint32(0x1000)) or ((f & np.uint32(0x7FF)) != 0):
            f_sig = f_sig + np.uint32(0x1000)
        return np.uint16(h_sgn + np.uint16(f_sig >> np.uint32(13)))
    h_exp = np.uint16((f_exp - np.uint32(0x38000000)) >> np.uint32(13))
    f_sig = f & np.uint32(0x007FFFFF)
    if (f_sig & np.uint32(0x3FFF)) != np.uint32(0x1000):
        f_sig = f_sig + np.uint32(0x1000)
    h_sig = np.uint16(np.uint16(f_sig >> np.uint32(13)) + h_exp)
    return np.uint16(h_sgn + h_sig)


@njit(cache=True, inline="always")
def _round_half(x):
    """float32 ``x`` rounded to the nearest float16 value, as float32 (numpy's bits).

    Written without branches so that loops over it vectorize: fp16-subnormal magnitudes round
    to a multiple of 2**-24 by adding and subtracting 0.5 (whose ulp is 2**-24); larger ones
    round their significand to 10 bits, ties to even, and become inf past 65504; NaN keeps
    the top 10 payload bits (at least one set), as numpy's cast does.
    """
    bits = _float_bits(x)
    magnitude_bits = bits & np.uint32(0x7FFFFFFF)
    sign = bits & np.uint32(0x80000000)
    magnitude = _bits_float(magnitude_bits)
    subnormal = _float_bits((magnitude + np.float32(0.5)) - np.float32(0.5))
    odd = (magnitude_bits >> np.uint32(13)) & np.uint32(1)
    normal = (magnitude_bits + np.uint32(0x0FFF) + odd) & np.uint32(0xFFFFE000)
    normal = np.uint32(0x7F800000) if normal >= np.uint32(0x47800000) else normal  # > 65504
    payload = (magnitude_bits & np.uint32(0x007FFFFF)) >> np.uint32(13)
    payload = np.uint32(1) if payload == np.uint32(0) else payload
    nan = np.uint32(0x7F800000) | (payload << np.uint32(13))
    rounded = subnormal if magnitude < np.float32(6.103515625e-05) else normal
    rounded = nan if magnitude_bits > np.uint32(0x7F800000) else rounded
    return _bits_float(rounded | sign)


@njit(cache=True, parallel=True)
def _to_half_bits(bits, out):
    for i in prange(bits.size):
        out[i] = _half_bits(bits[i])


@njit(cache=True, parallel=True)
def _to_half_bits_nan_zero(bits, out):
    for i in prange(bits.size):
        out[i] = np.uint16(0) if (bits[i] & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else _half_bits(bits[i])


@njit(cache=True, parallel=True)
def _half_nan_zero(bits):
    for i in prange(bits.size):
        if (bits[i] & np.uint16(0x7FFF)) > np.uint16(0x7C00):
            bits[i] = np.uint16(0)


@njit(cache=True, parallel=True)
def _round_in_float32(x, out):
    for i in prange(x.size):
        out[i] = _round_half(x[i])


@njit(cache=True, parallel=True)
def _from_half_bits(bits, table, out):
    for i in prange(bits.size):
        out[i] = table[bits[i]]


def float32_to_float16(x: np.ndarray) -> np.ndarray:
    """``x.astype(np.float16)`` for a float32 array, same bits (see module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    if x.size < PARALLEL_MIN_SIZE:
        with np.errstate(over="ignore", invalid="ignore"):
            return x.astype(np.float16)
    bits = np.ascontiguousarray(x).reshape(-1).view(np.uint32)
    out = np.empty(x.size, dtype=np.uint16)
    _to_half_bits(bits, out)
    return out.view(np.float16).reshape(x.shape)


def float32_to_float16_nan_zero(x: np.ndarray) -> np.ndarray:
    """:func:`float32_to_float16` with NaN becoming +0 (the Neural Engine's indeterminate forms)."""
    x = np.asarray(x, dtype=np.float32)
    bits = np.ascontiguousarray(x).reshape(-1).view(np.uint32)
    out = np.empty(x.size, dtype=np.uint16)
    _to_half_bits_nan_zero(bits, out)
    return out.view(np.float16).reshape(x.shape)


def float16_nan_to_zero(x: np.ndarray) -> np.ndarray:
    """A float16 array with its NaNs replaced by +0 (a copy; the input is left as it is)."""
    out = np.array(x, dtype=np.float16, order="C", copy=True)
    _half_nan_zero(out.reshape(-1).view(np.uint16))
    return out


def float16_to_float32(x: np.ndarray, flush: bool = False) -> np.ndarray:
    """``x.astype(np.float32)`` for a float16 array (exact); with ``flush``, fp16 subnormals
    and -0 become +0."""
    x = np.asarray(x, dtype=np.float16)
    table = _HALF_TO_FLOAT_FLUSHED if flush else _HALF_TO_FLOAT
    bits = np.ascontiguousarray(x).reshape(-1).view(np.uint16)
    if x.size < PARALLEL_MIN_SIZE:
        return table[bits].reshape(x.shape)
    out = np.empty(x.size, dtype=np.float32)
    _from_half_bits(bits, table, out)
    return out.reshape(x.shape)


def round_float16_in_float32(x: np.ndarray) -> np.ndarray:
    """``x.astype(np.float16).astype(np.float32)`` for a float32 array, in one pass."""
    x = np.asarray(x, dtype=np.float32)
    if x.size < PARALLEL_MIN_SIZE:
        with np.errstate(over="ignore", invalid="ignore"):
            return x.astype(np.float16).astype(np.float32)
    out = np.empty(x.size, dtype=np.float32)
    _round_in_float32(np.ascontiguousarray(x).reshape(-1), out)
    return out.reshape(x.shape)
