"""Compiled float16 add, sub and mul (``elementwise_binary.py``): the float32 result of two
float16 operands rounded once to float16, in one compiled pass instead of three casts and a
numpy call. Tested bit for bit against numpy (``tests/emulator/test_compiled.py``).

The float32 result of one of these operations on two float16 values rounds to the same float16
as the exact result (float32 has more than 2 * 11 + 2 significant bits), and that is what
numpy's float16 loop and the executor's fp32 copies compute. Operands of the same shape, or
one of them broadcast per plane (a bias or a squeeze-excite scale per channel, a scalar: read
once per plane of the other) or per row (a channels-last scale, a bias over tokens).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from precision_sweep.emulator.ops._casts import _cpu_half_bits, _cpu_half_float, _numpy_nan_bits
from precision_sweep.emulator.ops._half import _float_bits

# The operations, by the code the kernels take.
OPERATIONS = {"add": 0, "sub": 1, "mul": 2}
# Fewer planes than this leave cores idle: the planes are split along the broadcast axes.
_MIN_PLANES = 64
# Shorter planes than this (a value per element of the last axis) are computed from fp32
# copies: a scalar read per few elements would cost more than it saves.
_MIN_PLANE_LENGTH = 16
# Rows shorter than this are joined (the row vector repeated) for a longer inner loop.
_MIN_ROW_WIDTH = 256


@njit(cache=True, inline="always")
def _apply(code, u, v):
    """``u OP v`` with x86's NaN rule (numpy's bits): a NaN operand is the result, the first
    one if both are (the operands come quieted from the fp16 conversion). Said explicitly,
    because LLVM may swap the operands of a commutative operation."""
    if code == 0:
        result = u + v
    elif code == 1:
        result = u - v
    else:
        result = u * v
    result = v if v != v else result
    return u if u != u else result


@njit(cache=True, inline="always")
def _half_bits(f):
    """numpy's float16 bits of the float32 ``f``."""
    bits = _float_bits(f)
    return _numpy_nan_bits(bits) if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else _cpu_half_bits(f)


@njit(cache=True, parallel=True)
def _same_shape(code, a, b, out):
    for i in prange(a.size):
        out[i] = _half_bits(_apply(code, _cpu_half_float(a[i]), _cpu_half_float(b[i])))


@njit(cache=True, parallel=True)
def _per_plane(code, planes, scalars, scalar_first, out):
    for p in prange(planes.shape[0]):
        v = _cpu_half_float(scalars[p])
        if scalar_first:  # the operation's first operand is the broadcast one
            for i in range(planes.shape[1]):
                out[p, i] = _half_bits(_apply(code, v, _cpu_half_float(planes[p, i])))
        else:
            for i in range(planes.shape[1]):
                out[p, i] = _half_bits(_apply(code, _cpu_half_float(planes[p, i]), v))


@njit(cache=True, parallel=True)
def _per_row(code, rows, vector, vector_first, out):
    for r in prange(rows.shape[0]):
        if vector_first:
            for i in range(rows.shape[1]):
                out[r, i] = _half_bits(_apply(code, _cpu_half_float(vector[i]), _cpu_half_float(rows[r, i])))
        else:
            for i in range(rows.shape[1]):
                out[r, i] = _half_bits(_apply(code, _cpu_half_float(rows[r, i]), _cpu_half_float(vector[i])))


def _row_split(full: tuple, small: tuple) -> int | None:
    """How many leading axes of ``full`` index the rows when ``small`` is one row repeated
    (its shape is ``full``'s trailing axes, after axes of 1): a per-channel scale of a
    channels-last image, a layer's bias over tokens; None when it is not."""
    small = (1,) * (len(full) - len(small)) + tuple(small)
    if len(small) != len(full):
        return None
    lead = next((i for i, s in enumerate(small) if s != 1), len(full))
    if small[lead:] != full[lead:] or any(s != 1 for s in small[:lead]):
        return None
    return lead


def _first_divisor(number: int, low: int, high: int) -> int:
    """The smallest divisor of ``number`` in ``[low, high]``, else 1."""
    return next((d for d in range(max(low, 1), high + 1) if number % d == 0), 1)


def _rows_joined(rows: int, width: int) -> int:
    """How many short rows (3 channels of an image) to treat as one, with the row vector
    repeated, so that the inner loop is long enough to vectorize."""
    if width >= _MIN_ROW_WIDTH:
        return 1
    return _first_divisor(rows, -(-_MIN_ROW_WIDTH // width), rows // _MIN_PLANES)


def _plane_split(full: tuple, small: tuple) -> int | None:
    """How many leading axes of ``full`` index the planes when ``small`` broadcasts against it
    per plane (every axis after them is 1 in ``small``); None when ``small`` does not, or its
    planes would be shorter than ``_MIN_PLANE_LENGTH``."""
    small = (1,) * (len(full) - len(small)) + tuple(small)
    if len(small) != len(full) or any(s not in (1, f) for s, f in zip(small, full)):
        return None
    lead = max((i + 1 for i, s in enumerate(small) if s != 1), default=0)
    if int(np.prod(full[lead:], dtype=np.int64)) < _MIN_PLANE_LENGTH:
        return None
    return lead


def _pieces(planes: int, length: int) -> int:
    """Into how many equal pieces to cut each of ``planes`` planes of ``length`` elements, so
    that there are enough for every core (a scalar broadcast over a whole tensor is one plane)."""
    if planes >= _MIN_PLANES:
        return 1
    return _first_divisor(length, -(-_MIN_PLANES // planes), length // _MIN_PLANE_LENGTH)


def binary_float16(op_type: str, x: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray | None:
    """``op(x.astype(f32), y.astype(f32)).astype(f16)`` for float16 ``x`` and ``y`` of the same
    shape, or one of them broadcast per plane or per row of the other; None for other
    broadcasts (the caller computes those from fp32 copies). ``out``, a C-contiguous float16
    array of the result's shape (``x`` itself included), receives the result."""
    code = OPERATIONS[op_type]
    if x.size == 0 or y.size == 0:
        return None
    if x.shape == y.shape:
        result = np.empty(x.shape, np.float16) if out is None else out
        _same_shape(code, np.ascontiguousarray(x).reshape(-1).view(np.uint16),
                    np.ascontiguousarray(y).reshape(-1).view(np.uint16), result.reshape(-1).view(np.uint16))
        return result
    shape = np.broadcast_shapes(x.shape, y.shape)
    broadcast_first = y.shape == shape
    full, small = (y, x) if broadcast_first else (x, y)
    if full.shape != shape:
        return None
    lead = _plane_split(full.shape, small.shape)
    if lead is not None:
        return _by_planes(code, full, small, lead, broadcast_first, out)
    if not _row_split(full.shape, small.shape):  # None, or 0: the shapes differ only by leading 1s
        return None
    return _by_rows(code, full, small, broadcast_first, out)


def _by_planes(code: int, full, small, lead: int, small_first: bool, out):
    """``full`` as planes indexed by its ``lead`` leading axes, ``small`` one value per plane."""
    small = small.reshape((1,) * (full.ndim - small.ndim) + small.shape)
    scalars = np.broadcast_to(small[(slice(None),) * lead + (0,) * (full.ndim - lead)], full.shape[:lead]).reshape(-1)
    pieces = _pieces(scalars.size, full.size // scalars.size)
    scalars = np.ascontiguousarray(np.repeat(scalars, pieces) if pieces > 1 else scalars)
    result = np.empty(full.shape, np.float16) if out is None else out
    _per_plane(code, np.ascontiguousarray(full).reshape(scalars.size, -1).view(np.uint16), scalars.view(np.uint16),
               small_first, result.reshape(scalars.size, -1).view(np.uint16))
    return result


def _by_rows(code: int, full, small, small_first: bool, out):
    """``full`` as rows of ``small``'s size, ``small`` the same row vector for each."""
    vector = np.ascontiguousarray(small).reshape(-1)
    joined = _rows_joined(full.size // vector.size, vector.size)
    vector = np.tile(vector, joined) if joined > 1 else vector
    result = np.empty(full.shape, np.float16) if out is None else out
    _per_row(code, np.ascontiguousarray(full).reshape(-1, vector.size).view(np.uint16), vector.view(np.uint16),
             small_first, result.reshape(-1, vector.size).view(np.uint16))
    return result
