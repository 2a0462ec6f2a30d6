"""Compiled (numba) twins of the conv kernels' hot paths (``conv.py``).

* :func:`depthwise_conv2d` is the 2-D depthwise convolution of ``conv._depthwise``: its taps
  summed in row-major order in fp32, as an fp16 running sum, or in the Neural Engine's tiles
  with the output port (``_accumulate_kernels._port``). Each (image, channel) plane is padded
  in a small per-task buffer, so no padded copy of the whole tensor is made;
* :func:`im2col2d` is ``conv._columns`` for 2-D convs (one parallel copy, no padded tensor),
  channel-major or tap-major;
* :func:`add_channel_bias` is a conv's ``y += bias`` on all cores.

All are tested bit for bit against the numpy paths (tests/emulator/test_accumulate.py,
test_compiled.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from precision_sweep.emulator.ops._accumulate_kernels import _port
from precision_sweep.emulator.ops._casts import PARALLEL_MIN_SIZE
from precision_sweep.emulator.ops._half import round_half


@njit(cache=True, parallel=True)
def _depthwise2d(x, w, out, mult, sh, sw, dh, dw, pt, pl, hp, wp, mode, tile, ceiling, flush, away):
    """One (image, channel) plane per task: copy it into a zero-padded flat buffer, then each
    tap is one contiguous multiply-add of the buffer shifted by the tap's offset, over every
    column of the rows the outputs read; the output positions are picked out at the end.

    ``mode`` 0 sums the taps in float32 (row-major tap order); 1 keeps an fp16 running sum
    (rounded after every tap); 2 is the Neural Engine's tiles: ``tile`` taps added in order in
    fp16, each tile's result added to a float32 accumulator, whose partials and output go
    through the port (ceiling, flush, ties away when ``away``). No fused multiply-adds: in
    mode 0 the operands are any float32, whose products round."""
    n, c_in, h, wd = x.shape
    c_out, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    span = ((oh - 1) * sh + 1) * wp
    size = hp * wp + (kw - 1) * dw  # slack: the last tap's shift runs past the grid's end
    taps = kh * kw
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
        part = np.zeros(span if mode == 2 else 0, dtype=np.float32)
        hi = np.zeros(span if mode == 2 else 0, dtype=np.float32)
        lo = np.zeros(span if mode == 2 else 0, dtype=np.float32)
        for ky in range(kh):
            for kx in range(kw):
                weight = w[co, ky, kx]
                shifted = grid[ky * dh * wp + kx * dw : ky * dh * wp + kx * dw + span]
                index = ky * kw + kx
                if mode == 0:
                    for j in range(span):
                        acc[j] += shifted[j] * weight
                elif mode == 1:
                    for j in range(span):
                        acc[j] = round_half(acc[j] + shifted[j] * weight)
                else:
                    if index % tile == 0:
                        for j in range(span):
                            part[j] = shifted[j] * weight
                    else:
                        for j in range(span):
                            part[j] = round_half(part[j] + shifted[j] * weight)
                    if index % tile == tile - 1 or index == taps - 1:
                        for j in range(span):
                            acc[j] += round_half(part[j])
                            hi[j] = max(hi[j], acc[j])
                            lo[j] = min(lo[j], acc[j])
        for oy in range(oh):
            row = out[i, co, oy]
            start = oy * sh * wp
            if mode == 2 and sw == 1:  # contiguous: the port's loop vectorizes
                src_acc = acc[start : start + ow]
                src_hi = hi[start : start + ow]
                src_lo = lo[start : start + ow]
                for ox in range(ow):
                    row[ox] = _port(src_acc[ox], src_hi[ox], src_lo[ox], ceiling, flush, away)
                continue
            for ox in range(ow):
                k = start + ox * sw
                if mode == 2:
                    row[ox] = _port(acc[k], hi[k], lo[k], ceiling, flush, away)
                else:
                    row[ox] = acc[k]


def depthwise_conv2d(x, weight, strides, dilations, pads, mode: int = 0, tile: int = 4, ceiling: float = 0.0,
                     flush: bool = False, away: bool = False) -> np.ndarray:
    """Depthwise 2-D conv of float32 ``x`` (N, C, H, W); ``weight`` (C*mult, 1, KH, KW).

    ``pads`` is ``[(top, bottom), (left, right)]``; padded positions read as zero. Returns
    float32 (N, C*mult, OH, OW) without bias, summed as ``mode`` says (see ``_depthwise2d``:
    0 fp32, 1 fp16 running sum, 2 the ANE's tiles through the port).
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
    _depthwise2d(x, w, out, w.shape[0] // x.shape[1], sh, sw, dh, dw, pt, pl, hp, wp, mode, tile,
                 np.float32(ceiling), flush, away)
    return out


@njit(cache=True, parallel=True)
def _im2col2d(x, out, kh, kw, sh, sw, dh, dw, pt, pl, hp, wp, tap_major):
    """x (N, C, H, W) into out (N, C, KH*KW, OH, OW), or (N, KH*KW, C, OH, OW) when
    ``tap_major``, both viewed as same-width integers."""
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
                tap = out[i, ky * kw + kx, ch] if tap_major else out[i, ch, ky * kw + kx]
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


def im2col2d(x, kernel_shape, strides, dilations, pads, out, tap_major: bool = False) -> np.ndarray:
    """Fill ``out`` (N, C, KH*KW, OH, OW) with the 2-D conv columns of ``x`` (N, C, H, W).

    The compiled twin of ``conv._columns`` (a pure copy, so any 2- or 4-byte dtype): padded
    positions are zero, row index ci*K + tap; with ``tap_major``, ``out`` is (N, KH*KW, C, OH,
    OW) and the row index tap*C + ci. Returns ``out``.
    """
    bits = {2: np.uint16, 4: np.uint32}[x.dtype.itemsize]
    (pt, pb), (pl, pr) = pads
    (sh, sw), (dh, dw) = strides, dilations
    hp, wp = x.shape[2] + pt + pb, x.shape[3] + pl + pr
    source = np.ascontiguousarray(x).view(bits)
    _im2col2d(source, out.view(bits), kernel_shape[0], kernel_shape[1], sh, sw, dh, dw, pt, pl, hp, wp, tap_major)
    return out


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
