"""Compiled (numba) twins of the emulator's hottest numpy paths.

Each function here computes exactly what a plain numpy function elsewhere computes, bit for
bit, and is tested against it (``tests/emulator/test_compiled.py``):

* :func:`float32_to_float16` is ``x.astype(np.float16)``. It follows numpy's own conversion
  (``npy_floatbits_to_halfbits``: round to nearest even, overflow to inf, NaN payload kept),
  but runs on all cores and has no slow path for fp16 subnormals, where numpy's cast costs
  tens of ns per element;
* :func:`float16_to_float32` is ``x.astype(np.float32)`` (a 65,536-entry table that numpy
  itself filled);
* :func:`clip_float16` is relu, relu6 and clip on a float16 array: the bits that computing
  them in float32 and rounding gives (numpy's float16 min/max run in software, and keep -0
  where its float32 ones give +0);
* :func:`clip_float32` is the same for float32 (numpy's runs on one core);
* :func:`fp16_block_matmul` is the fp16-accumulating matmul and sum of ``_accumulate``
  (its reference twin is the plain numpy loop in the tests), with the float32 -> nearest
  float16 rounding done in bit arithmetic in registers (``_round_half``);
* :func:`im2col2d` is ``conv._columns`` for 2-D convs (one parallel copy, no padded tensor);
* :func:`add_channel_bias` is a conv's ``y += bias`` on all cores;
* :func:`add_float16` is the float32 sum of two float16 arrays rounded to float16, in two
  compiled passes instead of three casts and an add;
* :func:`depthwise_conv2d` is the 2-D depthwise convolution of ``conv.conv_reference`` with
  fp32 accumulation, taps summed in the same row-major order as the numpy per-tap path. Each
  (image, channel) plane is padded in a small per-task buffer, so no padded copy of the whole
  tensor is made.

The OpenMP threads wait passively between kernels (``OMP_WAIT_POLICY``, see below).
Kernels are compiled on first use and cached on disk (numba ``cache=True``), so a new
process pays the compile time once per machine, not once per job.
"""

from __future__ import annotations

import os

# numba's parallel kernels run on OpenMP threads that by default spin after each kernel,
# taking the cores from the BLAS thread pool (ops/_threads.py): ResNet50 ran 1.35x slower.
# Passive waiting must be asked for before OpenMP starts, i.e. before the first kernel runs;
# a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import njit, prange, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

_HALF_TO_FLOAT = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)

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
def _fp16_block_matmul(a, b, out, block):
    batches, m, k = out.shape[0], a.shape[1], a.shape[2]
    n = b.shape[2]
    for task in prange(batches * m):
        batch = task // m
        i = task % m
        rows_a = a[min(batch, a.shape[0] - 1), i]
        rows_b = b[min(batch, b.shape[0] - 1)]
        total = out[batch, i]
        part = np.empty(n, dtype=np.float32)
        for start in range(0, k, block):
            part[:] = 0.0
            for kk in range(start, min(k, start + block)):
                weight = rows_a[kk]
                row = rows_b[kk]
                for j in range(n):
                    part[j] += weight * row[j]
            if start == 0:
                for j in range(n):
                    total[j] = _round_half(part[j])
            else:
                for j in range(n):
                    total[j] = _round_half(total[j] + _round_half(part[j]))


def fp16_block_matmul(a: np.ndarray, b: np.ndarray, block: int) -> np.ndarray:
    """``a @ b`` with fp16 accumulation, for float32 operands holding the fp16 values.

    The reduced axis is cut into blocks of ``block``; each block's products are summed in
    float32 in order, rounded to fp16, and added to an fp16 running total (rounded after
    every block). Batch dimensions broadcast as in ``np.matmul``. Returns float32 holding
    fp16 values.
    """
    if b.shape[-1] < a.shape[-2]:
        # Few columns, many rows: compute the transpose, so the vectorized inner loop runs
        # along the longer side (the same products, summed in the same order).
        return np.swapaxes(fp16_block_matmul(np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2), block), -1, -2)
    batch_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m, n = a.shape[-2], b.shape[-1]

    def flat(operand):
        if all(d == 1 for d in operand.shape[:-2]):
            return np.ascontiguousarray(operand, dtype=np.float32).reshape((1,) + operand.shape[-2:])
        full = np.broadcast_to(operand, batch_shape + operand.shape[-2:])
        return np.ascontiguousarray(full, dtype=np.float32).reshape((-1,) + operand.shape[-2:])

    out = np.empty((int(np.prod(batch_shape, dtype=np.int64)), m, n), dtype=np.float32)
    _fp16_block_matmul(flat(a), flat(b), out, block)
    return out.reshape(batch_shape + (m, n))


@njit(cache=True, parallel=True)
def _to_half_bits(bits, out):
    for i in prange(bits.size):
        out[i] = _half_bits(bits[i])


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


def float16_to_float32(x: np.ndarray) -> np.ndarray:
    """``x.astype(np.float32)`` for a float16 array (exact)."""
    x = np.asarray(x, dtype=np.float16)
    if x.size < PARALLEL_MIN_SIZE:
        return x.astype(np.float32)
    bits = np.ascontiguousarray(x).reshape(-1).view(np.uint16)
    out = np.empty(x.size, dtype=np.float32)
    _from_half_bits(bits, _HALF_TO_FLOAT, out)
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
def _clip_half(bits, table, lo, hi, lo_bits, hi_bits, ties_to_bounds, out):
    for i in prange(bits.size):
        choice = _clip_choice(table[bits[i]], lo, hi, ties_to_bounds)
        out[i] = bits[i] if choice == 0 else (lo_bits if choice == 1 else hi_bits)


def clip_float16(x: np.ndarray, lo: float, hi: float, ties_to_bounds: bool) -> np.ndarray:
    """A float16 ``x`` clipped to [lo, hi], with the bits the float32 computation rounds to.

    ``ties_to_bounds`` says what an element equal to a bound becomes, which matters only for
    signed zeros: the bound (``np.minimum(np.maximum(x, lo), hi)`` on float32 returns its
    second operand on ties) or the element itself (``np.clip``). ``lo`` and ``hi`` are taken
    as float16, the dtype they have in an fp16 program.
    """
    x = np.asarray(x, dtype=np.float16)
    lo16, hi16 = np.float16(lo), np.float16(hi)
    bits = np.ascontiguousarray(x).reshape(-1).view(np.uint16)
    out = np.empty(x.size, dtype=np.uint16)
    lo_bits = np.array([lo16]).view(np.uint16)[0]
    hi_bits = np.array([hi16]).view(np.uint16)[0]
    _clip_half(bits, _HALF_TO_FLOAT, np.float32(lo16), np.float32(hi16), lo_bits, hi_bits, ties_to_bounds, out)
    return out.view(np.float16).reshape(x.shape)


@njit(cache=True, parallel=True)
def _clip_single(x, lo, hi, ties_to_bounds, out):
    for i in prange(x.size):
        choice = _clip_choice(x[i], lo, hi, ties_to_bounds)
        out[i] = x[i] if choice == 0 else (lo if choice == 1 else hi)


def clip_float32(x: np.ndarray, lo: float, hi: float, ties_to_bounds: bool) -> np.ndarray:
    """:func:`clip_float16` for a float32 ``x``: the same bits as numpy, on all cores.

    ``ties_to_bounds`` as there: ``np.minimum(np.maximum(x, lo), hi)`` (True) or ``np.clip``.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.size < PARALLEL_MIN_SIZE:
        if ties_to_bounds:
            return np.minimum(np.maximum(x, np.float32(lo)), np.float32(hi))
        return np.clip(x, np.float32(lo), np.float32(hi))
    out = np.empty(x.size, dtype=np.float32)
    _clip_single(np.ascontiguousarray(x).reshape(-1), np.float32(lo), np.float32(hi), ties_to_bounds, out)
    return out.reshape(x.shape)


@njit(cache=True, parallel=True)
def _add_channel_bias(planes, bias):
    n_c, size = planes.shape
    channels = bias.size
    for plane in prange(n_c):
        value = bias[plane % channels]
        row = planes[plane]
        for j in range(size):
            row[j] += value


def add_channel_bias(y: np.ndarray, bias: np.ndarray) -> None:
    """``y += bias.reshape(C, 1, ...)`` in place for a C-contiguous float32 ``y`` (N, C, ...)."""
    if y.size < PARALLEL_MIN_SIZE or not y.flags.c_contiguous:
        y += bias.reshape((-1,) + (1,) * (y.ndim - 2)).astype(y.dtype, copy=False)
        return
    planes = y.reshape(y.shape[0] * y.shape[1], -1)
    _add_channel_bias(planes, np.ascontiguousarray(bias, dtype=np.float32).reshape(-1))


@njit(cache=True, parallel=True)
def _add_half(a, b, table, out):
    for i in prange(a.size):
        out[i] = table[a[i]] + table[b[i]]


def add_float16(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(x.astype(f32) + y.astype(f32)).astype(f16)`` for same-shape float16 arrays.

    The same bits as numpy's float16 add: the float32 sum of two float16 values rounds to the
    same float16 as their exact sum (float32 has more than 2 * 11 + 2 significant bits).
    """
    sums = np.empty(x.size, dtype=np.float32)
    a = np.ascontiguousarray(x).reshape(-1).view(np.uint16)
    b = np.ascontiguousarray(y).reshape(-1).view(np.uint16)
    _add_half(a, b, _HALF_TO_FLOAT, sums)
    out = np.empty(x.size, dtype=np.uint16)
    _to_half_bits(sums.view(np.uint32), out)
    return out.view(np.float16).reshape(x.shape)


@njit(cache=True, parallel=True)
def _depthwise2d(x, w, out, mult, sh, sw, dh, dw, pt, pl, hp, wp, block):
    """One (image, channel) plane per task: copy it into a zero-padded flat buffer, then each
    tap is one contiguous multiply-add of the buffer shifted by the tap's offset, over every
    column of the rows the outputs read; the output positions are picked out at the end."""
    n, c_in, h, wd = x.shape
    c_out, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    span = ((oh - 1) * sh + 1) * wp
    size = hp * wp + (kw - 1) * dw  # slack: the last tap's shift runs past the grid's end
    for task in prange(n * c_out):
        i = task // c_out
        co = task % c_out
        plane = x[i, co // mult]
        grid = np.zeros(size, dtype=np.float32)
        for y in range(h):
            dst = grid[(y + pt) * wp + pl : (y + pt) * wp + pl + wd]
            src = plane[y]
            for j in range(wd):
                dst[j] = src[j]
        acc = np.zeros(span, dtype=np.float32)
        total = np.zeros(span if block > 0 else 0, dtype=np.float32)
        for ky in range(kh):
            for kx in range(kw):
                weight = w[co, ky, kx]
                shifted = grid[ky * dh * wp + kx * dw : ky * dh * wp + kx * dw + span]
                for j in range(span):
                    acc[j] += shifted[j] * weight
                tap = ky * kw + kx + 1
                if block > 0 and (tap % block == 0 or tap == kh * kw):
                    # fp16 accumulation: the block's fp32 sum, rounded, joins the fp16 total
                    if tap <= block:
                        for j in range(span):
                            total[j] = _round_half(acc[j])
                    else:
                        for j in range(span):
                            total[j] = _round_half(total[j] + _round_half(acc[j]))
                    acc[:] = 0.0
        if block > 0:
            acc = total
        for oy in range(oh):
            row = out[i, co, oy]
            picked = acc[oy * sh * wp : oy * sh * wp + (ow - 1) * sw + 1]
            if sw == 1:
                for ox in range(ow):
                    row[ox] = picked[ox]
            else:
                for ox in range(ow):
                    row[ox] = picked[ox * sw]


def depthwise_conv2d(x, weight, strides, dilations, pads, fp16_block: int = 0) -> np.ndarray:
    """Depthwise 2-D conv of float32 ``x`` (N, C, H, W); ``weight`` (C*mult, 1, KH, KW).

    ``pads`` is ``[(top, bottom), (left, right)]``; padded positions read as zero. Returns
    float32 (N, C*mult, OH, OW) without bias. With ``fp16_block`` > 0 the taps are summed in
    blocks of that many (fp32 within a block, rounded to fp16, added to an fp16 running
    total), as ``conv._depthwise`` does for fp16 operands; the result holds fp16 values.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    w = np.ascontiguousarray(weight.reshape(weight.shape[0], *weight.shape[2:]), dtype=np.float32)
    (pt, pb), (pl, pr) = pads
    (sh, sw), (dh, dw) = strides, dilations
    kh, kw = w.shape[1:]
    hp, wp = x.shape[2] + pt + pb, x.shape[3] + pl + pr
    oh = (hp - ((kh - 1) * dh + 1)) // sh + 1
    ow = (wp - ((kw - 1) * dw + 1)) // sw + 1
    out = np.empty((x.shape[0], w.shape[0], oh, ow), dtype=np.float32)
    _depthwise2d(x, w, out, w.shape[0] // x.shape[1], sh, sw, dh, dw, pt, pl, hp, wp, fp16_block)
    return out


@njit(cache=True, parallel=True)
def _im2col2d(x, out, kh, kw, sh, sw, dh, dw, pt, pl, hp, wp):
    """x (N, C, H, W) into out (N, C, KH*KW, OH, OW), both viewed as same-width integers."""
    n, c, h, wd = x.shape
    oh, ow = out.shape[3], out.shape[4]
    for task in prange(n * c):
        i = task // c
        ch = task % c
        plane = x[i, ch]
        grid = np.zeros(hp * wp, dtype=x.dtype)
        for y in range(h):
            dst = grid[(y + pt) * wp + pl : (y + pt) * wp + pl + wd]
            src = plane[y]
            for j in range(wd):
                dst[j] = src[j]
        for ky in range(kh):
            for kx in range(kw):
                tap = out[i, ch, ky * kw + kx]
                for oy in range(oh):
                    start = (oy * sh + ky * dh) * wp + kx * dw
                    row = tap[oy]
                    if sw == 1:
                        src_row = grid[start : start + ow]
                        for ox in range(ow):
                            row[ox] = src_row[ox]
                    else:
                        for ox in range(ow):
                            row[ox] = grid[start + ox * sw]


def im2col2d(x, kernel_shape, strides, dilations, pads, out) -> np.ndarray:
    """Fill ``out`` (N, C, KH*KW, OH, OW) with the 2-D conv columns of ``x`` (N, C, H, W).

    The compiled twin of ``conv._columns`` (a pure copy, so any 2- or 4-byte dtype): padded
    positions are zero, row index ci*K + tap. Returns ``out``.
    """
    bits = {2: np.uint16, 4: np.uint32}[x.dtype.itemsize]
    (pt, pb), (pl, pr) = pads
    (sh, sw), (dh, dw) = strides, dilations
    hp, wp = x.shape[2] + pt + pb, x.shape[3] + pl + pr
    source = np.ascontiguousarray(x).view(bits)
    _im2col2d(source, out.view(bits), kernel_shape[0], kernel_shape[1], sh, sw, dh, dw, pt, pl, hp, wp)
    return out
