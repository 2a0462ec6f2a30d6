"""Compiled (numba) fp16 <-> fp32 casts of the datapath (``executor``, ``_accumulate``).

Each function here computes exactly what a plain numpy cast computes, bit for bit, and is
tested against it (``tests/emulator/test_compiled.py``):

* :func:`float32_to_float16` is ``x.astype(np.float16)``: the CPU's own conversion
  instruction (round to nearest even, subnormals kept, overflow to inf, as numpy's
  ``npy_floatbits_to_halfbits``), vectorized and on all cores, with NaNs given numpy's
  payload; numpy's cast has a slow path costing tens of ns per fp16-subnormal element;
* :func:`float16_to_float32` is ``x.astype(np.float32)``: the CPU's conversion with NaN
  payloads kept as numpy keeps them (small arrays read a 65,536-entry table numpy filled);
* :func:`round_float16_in_float32` is the fp16 rounding kept in float32, in one pass.

The OpenMP threads wait passively between kernels (``OMP_WAIT_POLICY``, see ``_compile_target``).
Kernels are compiled on first use and cached on disk (numba ``cache=True``), so a new
process pays the compile time once per machine, not once per job.
"""

from __future__ import annotations

from precision_sweep.emulator.ops._half import _bits_float, _float_bits  # (imported first: _compile_target)

import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import njit, prange, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402


_HALF_TO_FLOAT = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
# The same table with fp16 subnormals and -0 read as +0 (MAC operands on M1-class engines).
_HALF_TO_FLOAT_FLUSHED = np.where(np.abs(_HALF_TO_FLOAT) < np.float32(2.0**-14), np.float32(0.0), _HALF_TO_FLOAT)

# Below this many elements a plain numpy call is cheaper than entering a parallel kernel.
PARALLEL_MIN_SIZE = 1 << 14


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


@intrinsic
def _cpu_half_bits(typingctx, value):
    """The float16 bits of a float32 by the CPU's own conversion (LLVM ``fptrunc``; F16C's
    ``vcvtps2ph`` on x86): round to nearest even, subnormals kept, overflow to inf, which is
    numpy's rounding; vectorized with the loop around it. Only NaN payloads can differ (the
    CPU quiets a signalling NaN), so callers take NaNs from :func:`_numpy_nan_bits`."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


@intrinsic
def _cpu_half_float(typingctx, bits):
    """The float32 value of float16 bits by the CPU's own conversion (``fpext``; F16C's
    ``vcvtph2ps``), exact for every value; a signalling NaN comes back quieted."""

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@njit(cache=True, inline="always")
def _numpy_nan_bits(f):
    """numpy's float16 NaN for the float32 NaN bits ``f``: sign, the top 10 payload bits, and
    at least one payload bit set."""
    payload = (f & np.uint32(0x007FFFFF)) >> np.uint32(13)
    payload = payload | np.uint32(payload == np.uint32(0))
    return np.uint16(((f >> np.uint32(16)) & np.uint32(0x8000)) | np.uint32(0x7C00) | payload)


@njit(cache=True, parallel=True)
def _to_half_bits(bits, out):
    values = bits.view(np.float32)
    for i in prange(bits.size):
        nan = (bits[i] & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        out[i] = _numpy_nan_bits(bits[i]) if nan else _cpu_half_bits(values[i])


@njit(cache=True, parallel=True)
def _to_half_bits_nan_zero(bits, out):
    values = bits.view(np.float32)
    for i in prange(bits.size):
        nan = (bits[i] & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        out[i] = np.uint16(0) if nan else _cpu_half_bits(values[i])


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
def _from_half_bits(bits, flush, out):
    for i in prange(bits.size):
        h = np.uint32(bits[i])
        value = _cpu_half_float(bits[i])
        # numpy keeps a NaN's payload as it is (the CPU would quiet a signalling one)
        nan = _bits_float(((h & np.uint32(0x8000)) << np.uint32(16)) | np.uint32(0x7F800000)
                          | ((h & np.uint32(0x03FF)) << np.uint32(13)))
        value = nan if (h & np.uint32(0x7FFF)) > np.uint32(0x7C00) else value
        out[i] = np.float32(0.0) if flush and abs(value) < np.float32(2.0**-14) else value


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


@njit(cache=True, parallel=True)
def _half_nan_count(bits):
    count = 0
    for i in prange(bits.size):
        count += 1 if (bits[i] & np.uint16(0x7FFF)) > np.uint16(0x7C00) else 0
    return count


def float16_nan_to_zero(x: np.ndarray) -> np.ndarray:
    """A float16 array with its NaNs replaced by +0: ``x`` itself when it holds no NaN (one
    read-only pass), else a copy (the input is left as it is)."""
    x = np.asarray(x, dtype=np.float16)
    if x.size >= PARALLEL_MIN_SIZE and x.flags.c_contiguous and _half_nan_count(x.reshape(-1).view(np.uint16)) == 0:
        return x
    out = np.array(x, dtype=np.float16, order="C", copy=True)
    _half_nan_zero(out.reshape(-1).view(np.uint16))
    return out


def memory_order(x: np.ndarray) -> tuple[int, ...] | None:
    """The axes of ``x`` in the order its elements lie in memory: ``x.transpose(order)`` is
    C-contiguous (the identity for a C-contiguous ``x``; for a transpose op's view of one, the
    axes it moved back). None when no order is (a slice with gaps, a broadcast)."""
    if x.flags.c_contiguous:
        return tuple(range(x.ndim))
    order = tuple(sorted(range(x.ndim), key=lambda axis: (-abs(x.strides[axis]), axis)))
    return order if np.transpose(x, order).flags.c_contiguous else None


def float16_to_float32(x: np.ndarray, flush: bool = False) -> np.ndarray:
    """``x.astype(np.float32)`` for a float16 array (exact); with ``flush``, fp16 subnormals
    and -0 become +0. A view whose elements lie contiguous in another axis order (a transpose
    op's) is read in that order, and the result is the same view of its float32 copy: no
    transposing copy."""
    x = np.asarray(x, dtype=np.float16)
    order = None if x.flags.c_contiguous or x.size < PARALLEL_MIN_SIZE else memory_order(x)
    if order is not None:
        return np.transpose(float16_to_float32(np.transpose(x, order), flush), np.argsort(order))
    table = _HALF_TO_FLOAT_FLUSHED if flush else _HALF_TO_FLOAT
    bits = np.ascontiguousarray(x).reshape(-1).view(np.uint16)
    if x.size < PARALLEL_MIN_SIZE:
        return table[bits].reshape(x.shape)
    out = np.empty(x.size, dtype=np.float32)
    _from_half_bits(bits, flush, out)
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
