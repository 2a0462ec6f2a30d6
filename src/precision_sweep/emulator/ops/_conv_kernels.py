"""Compiled (numba) twins of the conv kernels' hot paths (``conv.py``).

* :func:`depthwise_conv2d` is the 2-D depthwise convolution of ``conv._depthwise``: its taps
  summed in row-major order in fp32 (3x3 kernels in one pass, ``_depthwise2d_nine_taps``; 5
  taps wide, one pass per kernel row), as
  an fp16 running sum, or in the Neural Engine's tiles with the output port
  (``_accumulate_kernels._port``). Each (image, channel) plane is padded in a small per-task
  buffer, so no padded copy of the whole tensor is made;
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
from precision_sweep.emulator.ops._casts import PARALLEL_MIN_SIZE, _cpu_half_float
from precision_sweep.emulator.ops._half import round_half

FP16_TINY = np.float32(2.0**-14)
CHUNKS = 256  # parallel tasks of a depthwise conv: planes share their buffers within one
# A strided 3x3 fp32 depthwise conv with output rows this wide or wider sums row by row
# (``_depthwise2d_nine_taps``; MobileNetV2 224²'s 112² strided layer, 56-wide rows: 0.40x the
# pass-per-tap kernel); narrower rows leave too few columns per pass for the vector loop.
WIDE_STRIDED_ROWS = 32
# A 3x3 depthwise conv in the Neural Engine's tiles with output rows narrower than this sums
# over the whole padded plane in one pass (``_nine_taps_tiles``): row by row, a vector loop over
# a row of 7 to 28 outputs ran 1.3-2.2x slower (MobileNetV2 224²'s 28², 14² and 7² layers);
# rows of 48 to 112 outputs ran 1.1-1.4x faster row by row (the plane's sums outgrow L1).
WIDE_TILES_ROWS = 32


@njit(cache=True, inline="always")
def _fill_grid(grid, plane, pt, pl, wp):
    """Copy one (H, W) plane into the interior of the flat zero-padded ``grid`` (row width
    ``wp``, ``pt`` rows and ``pl`` columns of padding before it); the border is not touched."""
    h, wd = plane.shape
    for y in range(h):
        dst = grid[(y + pt) * wp + pl : (y + pt) * wp + pl + wd]
        src = plane[y]
        for j in range(wd):
            dst[j] = src[j]


@njit(cache=True, inline="always")
def _phases(sh, sw, dh, dw):
    """Whether a depthwise conv in the tiles reads its plane as four phases
    (:func:`_fill_phases`): stride 2, no dilation. (The fp32 kernel does not: bound by its
    loads, it ran 0.92-1.48x its time per stride-2 layer of MobileNetV2, in all 0.99x at 224²
    and 1.07x at 96².)"""
    return sh == 2 and sw == 2 and dh == 1 and dw == 1


@njit(cache=True, inline="always")
def _phase_rows(oh, kh):
    """Rows of each phase plane (:func:`_fill_phases`) of a stride-2 conv with ``oh`` output
    rows and a kernel ``kh`` rows high: every padded row, and the rows that one pass reads
    past the last output."""
    return oh + (kh - 1) // 2 + 1


@njit(cache=True, inline="always")
def _fill_phases(grid, plane, pt, pl, h2, w2):
    """Copy one (H, W) plane into the flat zero-padded ``grid`` split into its four phases:
    padded row r and column c go to phase ``(r % 2) * 2 + c % 2``, a plane of ``h2`` rows of
    ``w2``, at row ``r // 2`` and column ``c // 2``. A stride-2 output (oy, ox) then reads
    each tap at one offset from ``oy * w2 + ox`` (:func:`_phase_offsets`): one pass over
    ``oh * w2`` positions computes every output and few others. The border is not touched."""
    h, wd = plane.shape
    phase_size = h2 * w2
    for y in range(h):
        r = y + pt
        row_base = (r % 2) * 2 * phase_size + (r // 2) * w2
        src = plane[y]
        for parity in range(2):
            x0 = (parity - pl) % 2  # the first column x with x + pl of this parity
            dst = grid[row_base + parity * phase_size + (x0 + pl) // 2 :]
            for k in range((wd - x0 + 1) // 2):
                dst[k] = src[x0 + 2 * k]


@njit(cache=True, inline="always")
def _phase_offsets(offsets, kw, h2, w2):
    """The taps' offsets (row-major, kernel rows ``kw`` wide) in a grid of :func:`_fill_phases`."""
    for t in range(offsets.size):
        ky, kx = t // kw, t % kw
        offsets[t] = ((ky % 2) * 2 + kx % 2) * h2 * w2 + (ky // 2) * w2 + kx // 2


@njit(cache=True, parallel=True)
def _depthwise2d(x, w, out, mult, sh, sw, dh, dw, pt, pl, hp, wp, mode):
    """One (image, channel) plane per task: copy it into a zero-padded flat buffer, then each
    tap is one contiguous multiply-add of the buffer shifted by the tap's offset, over every
    column of the rows the outputs read; the output positions are picked out at the end.

    ``mode`` 0 sums the taps in float32 (row-major tap order; a kernel 5 taps wide adds each
    kernel row's taps in one pass, :func:`_add_kernel_row_of_five`); 1 keeps an fp16 running sum
    (rounded after every tap). No fused multiply-adds: in mode 0 the operands are any float32,
    whose products round. Mode 2 (the Neural Engine's tiles) is :func:`_depthwise2d_tiles`."""
    n, c_in, h, wd = x.shape
    c_out, kh, kw = w.shape
    oh = out.shape[2]
    span = ((oh - 1) * sh + 1) * wp
    size = hp * wp + (kw - 1) * dw  # slack: the last tap's shift runs past the grid's end
    tasks = n * c_out
    chunks = min(tasks, CHUNKS)
    for chunk in prange(chunks):
        grid = np.zeros(size, dtype=np.float32)  # its border stays zero: see _depthwise2d_tiles
        acc = np.empty(span, dtype=np.float32)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            i = task // c_out
            co = task % c_out
            _fill_grid(grid, x[i, co // mult], pt, pl, wp)
            for j in range(span):
                acc[j] = 0.0
            for ky in range(kh):
                if mode == 0 and kw == 5:
                    _add_kernel_row_of_five(acc, grid, ky * dh * wp, dw, span, w[co, ky])
                    continue
                for kx in range(kw):
                    weight = w[co, ky, kx]
                    shifted = grid[ky * dh * wp + kx * dw : ky * dh * wp + kx * dw + span]
                    if mode == 0:
                        for j in range(span):
                            acc[j] += shifted[j] * weight
                    else:
                        for j in range(span):
                            acc[j] = round_half(acc[j] + shifted[j] * weight)
            _store_outputs(out, i, co, acc, sh * wp, sw)


@njit(cache=True, inline="always")
def _add_kernel_row_of_five(acc, grid, base, dw, span, weights):
    """Mode 0's five taps of one kernel row added to ``acc`` in one pass, in order (the sums of
    five passes, one per tap). 0.52-0.86x the time of the pass per tap on each of
    EfficientNetB0's 5x5 depthwise shapes at 224² and 96² (0.66x in all, batch 32)."""
    w0, w1, w2, w3, w4 = weights[0], weights[1], weights[2], weights[3], weights[4]
    g0 = grid[base : base + span]
    g1 = grid[base + dw : base + dw + span]
    g2 = grid[base + 2 * dw : base + 2 * dw + span]
    g3 = grid[base + 3 * dw : base + 3 * dw + span]
    g4 = grid[base + 4 * dw : base + 4 * dw + span]
    for j in range(span):
        s = acc[j] + g0[j] * w0
        s = s + g1[j] * w1
        s = s + g2[j] * w2
        s = s + g3[j] * w3
        acc[j] = s + g4[j] * w4


@njit(cache=True, inline="always")
def _store_outputs(out, i, co, sums, row_step, col_step):
    """Plane (i, co) of ``out`` picked from a pass's ``sums`` (output rows ``row_step`` apart,
    outputs ``col_step`` apart)."""
    for oy in range(out.shape[2]):
        row = out[i, co, oy]
        start = oy * row_step
        for ox in range(out.shape[3]):
            row[ox] = sums[start + ox * col_step]


def depthwise_conv2d(x, weight, strides, dilations, pads, mode: int = 0, tile: int = 4, ceiling: float = 0.0,
                     flush: bool = False, away: bool = False) -> np.ndarray:
    """Depthwise 2-D conv of float32 ``x`` (N, C, H, W); ``weight`` (C*mult, 1, KH, KW).

    ``pads`` is ``[(top, bottom), (left, right)]``; padded positions read as zero. Returns
    float32 (N, C*mult, OH, OW) without bias, summed as ``mode`` says: 0 fp32, 1 fp16 running
    sum (``_depthwise2d``), 2 the ANE's tiles through the port (``_depthwise2d_tiles``).
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
    if mode == 2:
        _depthwise2d_tiles(x, w, out, w.shape[0] // x.shape[1], sh, sw, dh, dw, pt, pl, hp, wp, tile,
                           np.float32(ceiling), flush, away)
        return out
    if mode == 0 and kh == 3 and kw == 3:
        _depthwise2d_nine_taps(x, w, out, w.shape[0] // x.shape[1], sh, sw, dh, dw, pt, pl, hp, wp)
        return out
    _depthwise2d(x, w, out, w.shape[0] // x.shape[1], sh, sw, dh, dw, pt, pl, hp, wp, mode)
    return out


@njit(cache=True, inline="always")
def _nine_tap_rows(grid, base, offsets, count):
    """The ``count`` grid values each tap of a 3x3 kernel reads from ``base`` on (``offsets``:
    the taps' shifts in row-major order), as nine views."""
    return (grid[base + offsets[0] : base + offsets[0] + count], grid[base + offsets[1] : base + offsets[1] + count],
            grid[base + offsets[2] : base + offsets[2] + count], grid[base + offsets[3] : base + offsets[3] + count],
            grid[base + offsets[4] : base + offsets[4] + count], grid[base + offsets[5] : base + offsets[5] + count],
            grid[base + offsets[6] : base + offsets[6] + count], grid[base + offsets[7] : base + offsets[7] + count],
            grid[base + offsets[8] : base + offsets[8] + count])


@njit(cache=True, inline="always")
def _nine_taps_fp32(sums, grid, base, offsets, count, w0, w1, w2, w3, w4, w5, w6, w7, w8):
    """``sums[j]``: the nine taps at ``grid[base + offsets[t] + j]`` summed in float32 from +0
    in row-major order, each product rounded before its addition (the sums of ``_depthwise2d``
    mode 0), for j < ``count``."""
    zero = np.float32(0.0)
    g0, g1, g2, g3, g4, g5, g6, g7, g8 = _nine_tap_rows(grid, base, offsets, count)
    for j in range(count):
        s = zero + g0[j] * w0
        s = s + g1[j] * w1
        s = s + g2[j] * w2
        s = s + g3[j] * w3
        s = s + g4[j] * w4
        s = s + g5[j] * w5
        s = s + g6[j] * w6
        s = s + g7[j] * w7
        sums[j] = s + g8[j] * w8


@njit(cache=True, parallel=True)
def _depthwise2d_nine_taps(x, w, out, mult, sh, sw, dh, dw, pt, pl, hp, wp):
    """:func:`_depthwise2d` mode 0 for 3x3 kernels, the same sums: an output's nine taps are
    added in registers in one pass (no running sums written back per tap), over the whole
    padded plane, or output row by output row when a strided conv's rows are
    ``WIDE_STRIDED_ROWS`` or more wide (the plane's skipped rows are then not computed).
    0.40-0.91x the time of mode 0 on each of MobileNetV2 224²'s depthwise shapes (0.57x in
    all, batch 32, one process). The fp16 running sum keeps the pass per tap: its nine
    roundings in a row made a fused pass slower (1.04x in all)."""
    n, c_in, h, wd = x.shape
    c_out = w.shape[0]
    oh, ow = out.shape[2], out.shape[3]
    span = ((oh - 1) * sh + 1) * wp
    cols = (ow - 1) * sw + 1
    by_row = sh > 1 and ow >= WIDE_STRIDED_ROWS
    size = hp * wp + 2 * dw
    offsets = np.empty(9, dtype=np.int64)
    for t in range(9):
        offsets[t] = (t // 3) * dh * wp + (t % 3) * dw
    tasks = n * c_out
    chunks = min(tasks, CHUNKS)
    for chunk in prange(chunks):
        grid = np.zeros(size, dtype=np.float32)  # its border stays zero: see _depthwise2d_tiles
        sums = np.empty(cols if by_row else span, dtype=np.float32)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            i = task // c_out
            co = task % c_out
            _fill_grid(grid, x[i, co // mult], pt, pl, wp)
            taps = w[co]
            w0, w1, w2 = taps[0, 0], taps[0, 1], taps[0, 2]
            w3, w4, w5 = taps[1, 0], taps[1, 1], taps[1, 2]
            w6, w7, w8 = taps[2, 0], taps[2, 1], taps[2, 2]
            if by_row:
                for oy in range(oh):
                    _nine_taps_fp32(sums, grid, oy * sh * wp, offsets, cols, w0, w1, w2, w3, w4, w5, w6, w7, w8)
                    row = out[i, co, oy]
                    for ox in range(ow):
                        row[ox] = sums[ox * sw]
                continue
            _nine_taps_fp32(sums, grid, 0, offsets, span, w0, w1, w2, w3, w4, w5, w6, w7, w8)
            _store_outputs(out, i, co, sums, sh * wp, sw)


@njit(cache=True, parallel=True)
def _depthwise2d_tiles(x, w, out, mult, sh, sw, dh, dw, pt, pl, hp, wp, tile, ceiling, flush, away):
    """The Neural Engine's tiles: ``tile`` taps added in order in fp16, each tile's result added
    to a float32 accumulator, whose partials and output go through the port (ceiling, flush,
    ties away when ``away``). Each (image, channel) plane is copied into a zero-padded grid and
    summed in passes over contiguous positions of it, the outputs picked from the sums:

    * rows of ``WIDE_TILES_ROWS`` outputs or more, one output row at a time over the columns
      its outputs span (:func:`_depthwise_tiles_rows`);
    * narrower rows, one pass over the whole padded plane; a vector loop over rows of 7 to 28
      outputs ran 1.3-2.2x slower;
    * stride 2 (no dilation), one pass over the plane read as its four phases
      (:func:`_fill_phases`): the outputs and few other positions are computed (0.54-0.93x per
      stride-2 layer of MobileNetV2, 224² and 96², against rows of every column).

    A 3x3 kernel with tiles of 4 (most depthwise convs) keeps an output's whole sum, partials
    included, in registers (:func:`_nine_taps_tiles`; 1.73x faster than the pass-per-tap kernel
    it replaced on MobileNetV2 96x96's shapes). Other kernels fuse each full tile into one pass
    and run a partial tile tap by tap (:func:`_tiles_taps`). The products are exact (fp16
    operands), so no ordering of a multiply and its add can differ. ``benchmarks/depthwise_tiles.py``
    times the kernel per layer."""
    n, c_in, h, wd = x.shape
    c_out, kh, kw = w.shape
    ow = out.shape[3]
    cols = (ow - 1) * sw + 1
    size = hp * wp + (kw - 1) * dw
    taps = kh * kw
    three_by_three = kh == 3 and kw == 3 and tile == 4
    offsets = np.empty(taps, dtype=np.int64)
    for t in range(taps):
        offsets[t] = (t // kw) * dh * wp + (t % kw) * dw
    tasks = n * c_out
    chunks = min(tasks, CHUNKS)
    oh = out.shape[2]
    phases = _phases(sh, sw, dh, dw)
    h2, w2 = _phase_rows(oh, kh), (wp + 1) // 2
    whole_plane = phases or ow < WIDE_TILES_ROWS
    # one pass's positions, and the distance between output rows and outputs among them
    span = oh * w2 if phases else (((oh - 1) * sh + 1) * wp if whole_plane else cols)
    row_step, col_step = (w2, 1) if phases else (sh * wp, sw)
    if phases:
        size = 4 * h2 * w2
        _phase_offsets(offsets, kw, h2, w2)
    for chunk in prange(chunks):
        # Buffers once per chunk of planes: the copy rewrites the same interior of the grid
        # for every plane, so its zero border stays; the sums are reset for every pass.
        grid = np.zeros(size, dtype=np.float32)
        acc = np.empty(span, dtype=np.float32)
        hi = np.empty(span, dtype=np.float32)
        lo = np.empty(span, dtype=np.float32)
        part = np.empty(span, dtype=np.float32)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            i = task // c_out
            co = task % c_out
            if phases:
                _fill_phases(grid, x[i, co // mult], pt, pl, h2, w2)
            else:
                _fill_grid(grid, x[i, co // mult], pt, pl, wp)
            if whole_plane and three_by_three:
                _nine_taps_tiles(acc, grid, offsets, w[co], ceiling, flush, away)
                _store_outputs(out, i, co, acc, row_step, col_step)
                continue
            if whole_plane:
                _tiles_taps(grid, 0, span, offsets, w[co], tile, acc, hi, lo, part)
                _port_outputs(out, i, co, acc, hi, lo, row_step, col_step, ceiling, flush, away)
                continue
            _depthwise_tiles_rows(out, i, co, w[co], sh, sw, wp, tile, ceiling, flush, away, three_by_three, offsets,
                                  grid, acc, hi, lo, part)


@njit(cache=True, inline="always")
def _nine_taps_tile_sums(g0, g1, g2, g3, g4, g5, g6, g7, g8, w0, w1, w2, w3, w4, w5, w6, w7, w8):
    """One output of a 3x3 kernel in tiles of 4 (taps 0-3, 4-7, then 8): the float32 sum of the
    tiles' fp16 results and its largest and smallest partials, from +0."""
    zero = np.float32(0.0)
    s = g0 * w0
    s = round_half(s + g1 * w1)
    s = round_half(s + g2 * w2)
    s = round_half(s + g3 * w3)
    a = zero + round_half(s)
    high = max(zero, a)
    low = min(zero, a)
    s = g4 * w4
    s = round_half(s + g5 * w5)
    s = round_half(s + g6 * w6)
    s = round_half(s + g7 * w7)
    a = a + round_half(s)
    high = max(high, a)
    low = min(low, a)
    a = a + round_half(g8 * w8)
    return a, max(high, a), min(low, a)


@njit(cache=True, inline="always")
def _nine_taps_tiles(sums, grid, offsets, taps, ceiling, flush, away):
    """``sums[j]``: the port's value of the 3x3 kernel ``taps`` in tiles of 4 at
    ``grid[offsets[t] + j]``, for every j of ``sums``: the sums of :func:`_depthwise_tiles_rows`'s
    3x3 path over the whole padded plane, each output's port in the same loop. (Row by row the
    port runs in a loop of its own over the outputs, as there: each way round, the other ran
    1.2-1.6x slower on MobileNetV2 224²'s layers.)"""
    w0, w1, w2 = taps[0, 0], taps[0, 1], taps[0, 2]
    w3, w4, w5 = taps[1, 0], taps[1, 1], taps[1, 2]
    w6, w7, w8 = taps[2, 0], taps[2, 1], taps[2, 2]
    g0, g1, g2, g3, g4, g5, g6, g7, g8 = _nine_tap_rows(grid, 0, offsets, sums.size)
    for j in range(sums.size):
        a, high, low = _nine_taps_tile_sums(g0[j], g1[j], g2[j], g3[j], g4[j], g5[j], g6[j], g7[j], g8[j],
                                            w0, w1, w2, w3, w4, w5, w6, w7, w8)
        sums[j] = _port(a, high, low, ceiling, flush, away)


@njit(cache=True, inline="always")
def _tiles_taps(grid, base, count, offsets, taps_of, tile, acc, hi, lo, part):
    """``acc[j]``, ``hi[j]``, ``lo[j]`` for j < ``count``: the tiles' float32 sum of the kernel
    ``taps_of`` (KH, KW) at ``grid[base + offsets[t] + j]``, its largest and smallest partials.
    A full tile of 4 taps is one pass; a partial tile runs tap by tap."""
    kw = taps_of.shape[1]
    taps = taps_of.size
    for j in range(count):
        acc[j] = 0.0
        hi[j] = 0.0
        lo[j] = 0.0
    for t0 in range(0, taps, tile):
        m = min(tile, taps - t0)
        if m == 4:
            o0, o1, o2, o3 = base + offsets[t0], base + offsets[t0 + 1], base + offsets[t0 + 2], base + offsets[t0 + 3]
            w0 = taps_of[t0 // kw, t0 % kw]
            w1 = taps_of[(t0 + 1) // kw, (t0 + 1) % kw]
            w2 = taps_of[(t0 + 2) // kw, (t0 + 2) % kw]
            w3 = taps_of[(t0 + 3) // kw, (t0 + 3) % kw]
            g0 = grid[o0 : o0 + count]
            g1 = grid[o1 : o1 + count]
            g2 = grid[o2 : o2 + count]
            g3 = grid[o3 : o3 + count]
            for j in range(count):
                s = g0[j] * w0
                s = round_half(s + g1[j] * w1)
                s = round_half(s + g2[j] * w2)
                s = round_half(s + g3[j] * w3)
                a = acc[j] + round_half(s)
                acc[j] = a
                hi[j] = max(hi[j], a)
                lo[j] = min(lo[j], a)
            continue
        for t in range(t0, t0 + m):
            o = base + offsets[t]
            weight = taps_of[t // kw, t % kw]
            g = grid[o : o + count]
            if t == t0:
                for j in range(count):
                    part[j] = g[j] * weight
            else:
                for j in range(count):
                    part[j] = round_half(part[j] + g[j] * weight)
        for j in range(count):
            a = acc[j] + round_half(part[j])
            acc[j] = a
            hi[j] = max(hi[j], a)
            lo[j] = min(lo[j], a)


@njit(cache=True, inline="always")
def _port_outputs(out, i, co, acc, hi, lo, row_step, col_step, ceiling, flush, away):
    """Plane (i, co) of ``out``: the port's value of each output's sum, picked from a pass's
    ``acc``/``hi``/``lo`` (output rows ``row_step`` apart, outputs ``col_step`` apart)."""
    for oy in range(out.shape[2]):
        row = out[i, co, oy]
        start = oy * row_step
        for ox in range(out.shape[3]):
            k = start + ox * col_step
            row[ox] = _port(acc[k], hi[k], lo[k], ceiling, flush, away)


@njit(cache=True, inline="always")
def _depthwise_tiles_rows(out, i, co, taps_of, sh, sw, wp, tile, ceiling, flush, away, three_by_three, offsets,
                          grid, acc, hi, lo, part):
    """Plane (i, co) of :func:`_depthwise2d_tiles` one output row at a time, over only the
    columns its outputs span (``grid`` filled)."""
    ow = out.shape[3]
    cols = (ow - 1) * sw + 1
    for oy in range(out.shape[2]):
        base = oy * sh * wp
        row = out[i, co, oy]
        if three_by_three:  # the whole sum of an output in registers
            w0, w1, w2 = taps_of[0, 0], taps_of[0, 1], taps_of[0, 2]
            w3, w4, w5 = taps_of[1, 0], taps_of[1, 1], taps_of[1, 2]
            w6, w7, w8 = taps_of[2, 0], taps_of[2, 1], taps_of[2, 2]
            g0, g1, g2, g3, g4, g5, g6, g7, g8 = _nine_tap_rows(grid, base, offsets, cols)
            for j in range(cols):
                a, high, low = _nine_taps_tile_sums(g0[j], g1[j], g2[j], g3[j], g4[j], g5[j], g6[j], g7[j], g8[j],
                                                    w0, w1, w2, w3, w4, w5, w6, w7, w8)
                acc[j] = a
                hi[j] = high
                lo[j] = low
        else:
            _tiles_taps(grid, base, cols, offsets, taps_of, tile, acc, hi, lo, part)
        if sw == 1:  # contiguous: the port's loop vectorizes
            for ox in range(ow):
                row[ox] = _port(acc[ox], hi[ox], lo[ox], ceiling, flush, away)
        else:
            for ox in range(ow):
                k = ox * sw
                row[ox] = _port(acc[k], hi[k], lo[k], ceiling, flush, away)


@njit(cache=True, inline="always")
def _copy_taps(grid, out, i, ch, kh, kw, sh, sw, dh, dw, wp, tap_major):
    """The taps of one padded (image, channel) ``grid`` into its rows of the columns ``out``."""
    oh, ow = out.shape[3], out.shape[4]
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


@njit(cache=True, parallel=True)
def _im2col2d(x, out, kh, kw, sh, sw, dh, dw, pt, pl, hp, wp, tap_major):
    """x (N, C, H, W) into out (N, C, KH*KW, OH, OW), or (N, KH*KW, C, OH, OW) when
    ``tap_major``, both viewed as same-width integers."""
    n, c, h, wd = x.shape
    for task in prange(n * c):
        i = task // c
        ch = task % c
        grid = np.zeros(hp * wp, dtype=x.dtype)
        _fill_grid(grid, x[i, ch], pt, pl, wp)
        _copy_taps(grid, out, i, ch, kh, kw, sh, sw, dh, dw, wp, tap_major)


@njit(cache=True, parallel=True)
def _im2col2d_from_half(x_bits, out, kh, kw, sh, sw, dh, dw, pt, pl, hp, wp, tap_major, flush, peaks):
    """:func:`_im2col2d` of float16 ``x`` (its bits) into float32 columns, each value read as
    the accumulator reads an fp16 operand (exactly; fp16 subnormals and -0 as +0 with
    ``flush``), and ``peaks[i, c]``, the largest magnitude of each read plane (NaN ignored)."""
    n, c, h, wd = x_bits.shape
    for task in prange(n * c):
        i = task // c
        ch = task % c
        grid = np.zeros(hp * wp, dtype=np.float32)
        plane = x_bits[i, ch]
        peak = np.float32(0.0)
        for y in range(h):
            dst = grid[(y + pt) * wp + pl : (y + pt) * wp + pl + wd]
            src = plane[y]
            for j in range(wd):
                value = _cpu_half_float(src[j])
                value = np.float32(0.0) if flush and abs(value) < FP16_TINY else value
                dst[j] = value
                peak = max(peak, abs(value))
        peaks[i, ch] = peak
        _copy_taps(grid, out, i, ch, kh, kw, sh, sw, dh, dw, wp, tap_major)


def im2col2d(x, kernel_shape, strides, dilations, pads, out, tap_major: bool = False, flush: bool = False):
    """Fill ``out`` (N, C, KH*KW, OH, OW) with the 2-D conv columns of ``x`` (N, C, H, W).

    The compiled twin of ``conv._columns`` (a pure copy, so any 2- or 4-byte dtype): padded
    positions are zero, row index ci*K + tap; with ``tap_major``, ``out`` is (N, KH*KW, C, OH,
    OW) and the row index tap*C + ci. Returns ``out``, or for a float16 ``x`` into float32
    ``out`` (the values upcast in the same pass, fp16 subnormals read as +0 with ``flush``)
    the largest magnitude per (image, channel), (N, C).
    """
    (pt, pb), (pl, pr) = pads
    (sh, sw), (dh, dw) = strides, dilations
    hp, wp = x.shape[2] + pt + pb, x.shape[3] + pl + pr
    if x.dtype == np.float16 and out.dtype == np.float32:
        peaks = np.empty(x.shape[:2], dtype=np.float32)
        _im2col2d_from_half(np.ascontiguousarray(x).view(np.uint16), out, kernel_shape[0], kernel_shape[1],
                            sh, sw, dh, dw, pt, pl, hp, wp, tap_major, flush, peaks)
        return peaks
    bits = {2: np.uint16, 4: np.uint32}[x.dtype.itemsize]
    source = np.ascontiguousarray(x).view(bits)
    _im2col2d(source, out.view(bits), kernel_shape[0], kernel_shape[1], sh, sw, dh, dw, pt, pl, hp, wp, tap_major)
    return out


@njit(cache=True, parallel=True)
def _fold_from_half(x_bits, flush, out, peaks):
    """out[t, i] = x[i, t] (float16 bits (N, T, P) into float32 (T, N, P)), read as the
    accumulator reads fp16 operands (subnormals and -0 as +0 with ``flush``), and ``peaks[t]``,
    the largest magnitude of row t over all images (NaN ignored)."""
    n, terms, positions = x_bits.shape
    for t in prange(terms):
        peak = np.float32(0.0)
        for i in range(n):
            src = x_bits[i, t]
            dst = out[t, i]
            for j in range(positions):
                value = _cpu_half_float(src[j])
                value = np.float32(0.0) if flush and abs(value) < FP16_TINY else value
                dst[j] = value
                peak = max(peak, abs(value))
        peaks[t] = peak


def fold_from_half(x: np.ndarray, flush: bool, out: np.ndarray) -> np.ndarray:
    """The columns of a pointwise conv's images side by side: float16 ``x`` (N, T, P) into
    float32 ``out`` (T, N, P), upcast in the same pass (fp16 subnormals as +0 with ``flush``).
    Returns the largest magnitude of each row t, (T,), the bound the MAC ceiling check needs."""
    peaks = np.empty(x.shape[1], dtype=np.float32)
    _fold_from_half(np.ascontiguousarray(x).view(np.uint16), flush, out, peaks)
    return peaks


@njit(cache=True, parallel=True)
def _upcast_from_half(x_bits, flush, out, peaks):
    """out[i, t] = x[i, t] (float16 bits (N, T, P) into float32), read as the accumulator
    reads fp16 operands (:func:`_fold_from_half`'s reading), and ``peaks[i, t]``, the largest
    magnitude of row (i, t) (NaN ignored)."""
    n, terms, positions = x_bits.shape
    for task in prange(n * terms):
        i = task // terms
        t = task % terms
        src = x_bits[i, t]
        dst = out[i, t]
        peak = np.float32(0.0)
        for j in range(positions):
            value = _cpu_half_float(src[j])
            value = np.float32(0.0) if flush and abs(value) < FP16_TINY else value
            dst[j] = value
            peak = max(peak, abs(value))
        peaks[i, t] = peak


def upcast_from_half(x: np.ndarray, flush: bool) -> tuple[np.ndarray, np.ndarray]:
    """A pointwise conv's float16 input ``x`` (N, T, P) as float32 MAC operands (fp16
    subnormals as +0 with ``flush``; a NaN's payload is not kept: the Neural Engine stores a
    NaN result as +0) and, from the same pass, each (image, row)'s largest magnitude (N, T): the
    bound the MAC ceiling check needs, with no second pass over the operands."""
    out = np.empty(x.shape, dtype=np.float32)
    peaks = np.empty(x.shape[:2], dtype=np.float32)
    _upcast_from_half(np.ascontiguousarray(x).view(np.uint16), flush, out, peaks)
    return out, peaks


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
