"""Compiled (numba) sums of the fp16 accumulation models (see ``_accumulate.py``).

Operands are float32 arrays holding fp16 values, so every product is exact in float32 (11 + 11
significant bits). Rounding to fp16 is :func:`._half.round_half` (the CPU's conversion
instructions, ties to even). Two models:

* **tiles** (the ANE): the reduced axis is cut into tiles of ``tile`` consecutive terms; within
  a tile the terms are added in order, each sum computed in float32 and rounded to fp16; the
  tiles' fp16 results are added to a float32 accumulator, whose value leaves through the
  output port (:func:`_port`): rounded to fp16 (ties away from zero when ``away``), the MAC
  ceiling, and on M1-class devices subnormal outputs flushed to +0;
* **fp16** (the CPU, the GPU's low-precision accumulation): one running sum along the reduced
  axis, each ``sum + product`` computed in float32 and rounded to fp16.

Each kernel has a plain numpy twin in ``_accumulate.py`` and is tested bit for bit against it.
The matmul kernels vectorize along the output columns and share each row of ``b`` between
four rows of ``a`` (the tiles model through the generated ``_tiles_unrolled``, which keeps 16
rounding chains in flight); ``tiles_matmul_tracked`` also records each output's largest and smallest
partial sum, for the MAC ceiling. On x86 the fp16 rounding (``vcvtps2ph``/``vcvtph2ps``) is
what bounds these kernels: the tiles model rounds three times per four products.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from precision_sweep.emulator.ops._casts import _cpu_half_bits, float16_to_float32, float32_to_float16
from precision_sweep.emulator.ops._half import round_half, round_half_away
from precision_sweep.emulator.ops._tiles_unrolled import ROWS as UNROLLED_ROWS
from precision_sweep.emulator.ops._tiles_unrolled import STEP as UNROLLED_STEP
from precision_sweep.emulator.ops._tiles_unrolled import unrolled

ROWS = 4  # rows of ``a`` computed together (each loaded row of ``b`` serves all of them)
# A tiles product with fewer output columns than rows runs transposed (copies of both operands
# and the result) only below this many columns: from 256 on, the kernel runs as fast or faster
# on the product as it is (on one Zen 3 core, 288 columns x 2048 rows: 8.4 GMAC/s, transposed
# 6.8; 128 x 512: 7.5, transposed 9.2).
SWAP_BELOW_COLUMNS = 256
# Fused multiply-adds are allowed: a product of two fp16 values is exact in float32, so
# ``fma(w, x, s)`` rounds ``s + w * x`` exactly as the separate multiply and add do.
_CONTRACT = {"contract"}


FP16_TINY = np.float32(2.0**-14)
INF = np.float32(np.inf)


@njit(cache=True, inline="always")
def _port(acc, high, low, ceiling, flush, away):
    """The ANE's output port: round ``acc`` to fp16 (ties away when ``away``); with a
    ``ceiling`` > 0, +-inf when the output or a partial (``high``/``low``) reached it (+inf
    first); with ``flush``, fp16-subnormal outputs (and -0) become +0."""
    value = round_half_away(acc) if away else round_half(acc)
    # Selects without short-circuits, so that the loops calling this can vectorize.
    if ceiling > 0:
        up = (high >= ceiling) | (value >= ceiling)
        down = (low <= -ceiling) | (value <= -ceiling)
        value = INF if up else (-INF if down else value)
    if flush:
        value = np.float32(0.0) if abs(value) < FP16_TINY else value
    return value


@njit(cache=True, inline="always")
def _tile_sum(rows_a, r, b, t0, t1, j):
    """One tile's fp16 sum for output (r, j): terms t0..t1-1 added in order."""
    s = rows_a[r, t0] * b[t0, j]
    for t in range(t0 + 1, t1):
        s = round_half(s + rows_a[r, t] * b[t, j])
    return round_half(s)


@njit(cache=True, parallel=True, fastmath=_CONTRACT)
def _tiles_matmul(a, b, out, tile, ceiling, flush, away):
    """Untracked: the ceiling checks the outputs only (the caller made sure no partial can
    reach it). Tiles of 4 go through the generated, interleaved kernel (``_tiles_unrolled``),
    the terms past its last full step too: as one more step over zero-padded copies of those
    rows of ``a`` and ``b`` (made once), whose padded terms add exact zeros, so the sums are
    those of the tiles as they are (the accumulator starts at +0 and never holds -0, so a
    zero's sign cannot show). Other tile widths take a plain loop."""
    batches, m = out.shape[0], out.shape[1]
    k, n = a.shape[2], b.shape[2]
    blocks = (m + UNROLLED_ROWS - 1) // UNROLLED_ROWS
    full = k - k % UNROLLED_STEP if tile == 4 else 0
    rest = k - full if tile == 4 else 0
    tail_b = np.zeros((b.shape[0] if rest else 0, UNROLLED_STEP, n), dtype=np.float32)
    for i in range(tail_b.shape[0]):
        tail_b[i, :rest] = b[i, full:]
    zero = np.float32(0.0)
    for task in prange(batches * blocks):
        batch = task // blocks
        r0 = (task % blocks) * UNROLLED_ROWS
        nr = min(UNROLLED_ROWS, m - r0)
        rows_a = np.zeros((UNROLLED_ROWS, k), dtype=np.float32)
        rows_a[:nr] = a[min(batch, a.shape[0] - 1), r0 : r0 + nr]
        bb = b[min(batch, b.shape[0] - 1)]
        acc = np.zeros((UNROLLED_ROWS, n), dtype=np.float32)
        unrolled(rows_a, bb, acc, full)
        if rest:
            tail_a = np.zeros((UNROLLED_ROWS, UNROLLED_STEP), dtype=np.float32)
            tail_a[:, :rest] = rows_a[:, full:]
            unrolled(tail_a, tail_b[min(batch, b.shape[0] - 1)], acc, UNROLLED_STEP)
        for t0 in range(full + rest, k, tile):  # other tile widths
            t1 = min(k, t0 + tile)
            for r in range(nr):
                row = acc[r]
                for j in range(n):
                    row[j] += _tile_sum(rows_a, r, bb, t0, t1, j)
        for r in range(nr):
            target = out[batch, r0 + r]
            row = acc[r]
            for j in range(n):
                target[j] = _port(row[j], zero, zero, ceiling, flush, away)


@njit(cache=True, parallel=True, fastmath=_CONTRACT)
def _tiles_matmul_tracked(a, b, out, tile, ceiling, flush, away):
    """Tracked: every partial sum is checked against the ceiling."""
    batches, m = out.shape[0], out.shape[1]
    k, n = a.shape[2], b.shape[2]
    for task in prange(batches * m):
        batch = task // m
        i = task % m
        rows_a = np.zeros((1, k), dtype=np.float32)
        rows_a[0] = a[min(batch, a.shape[0] - 1), i]
        bb = b[min(batch, b.shape[0] - 1)]
        acc = np.zeros(n, dtype=np.float32)
        hi = np.zeros(n, dtype=np.float32)
        lo = np.zeros(n, dtype=np.float32)
        for t0 in range(0, k, tile):
            t1 = min(k, t0 + tile)
            for j in range(n):
                acc[j] += _tile_sum(rows_a, 0, bb, t0, t1, j)
                hi[j] = max(hi[j], acc[j])
                lo[j] = min(lo[j], acc[j])
        for j in range(n):
            out[batch, i, j] = _port(acc[j], hi[j], lo[j], ceiling, flush, away)


@njit(cache=True, parallel=True, fastmath=_CONTRACT)
def _fp16_matmul(a, b, out):
    batches, m = out.shape[0], out.shape[1]
    k, n = a.shape[2], b.shape[2]
    blocks = (m + ROWS - 1) // ROWS
    for task in prange(batches * blocks):
        batch = task // blocks
        r0 = (task % blocks) * ROWS
        nr = min(ROWS, m - r0)
        rows_a = np.zeros((ROWS, k), dtype=np.float32)
        rows_a[:nr] = a[min(batch, a.shape[0] - 1), r0 : r0 + nr]
        bb = b[min(batch, b.shape[0] - 1)]
        acc = np.zeros((ROWS, n), dtype=np.float32)
        acc0, acc1, acc2, acc3 = acc[0], acc[1], acc[2], acc[3]
        for t in range(k):
            row_b = bb[t]
            w0, w1, w2, w3 = rows_a[0, t], rows_a[1, t], rows_a[2, t], rows_a[3, t]
            for j in range(n):
                x = row_b[j]
                acc0[j] = round_half(acc0[j] + w0 * x)
                acc1[j] = round_half(acc1[j] + w1 * x)
                acc2[j] = round_half(acc2[j] + w2 * x)
                acc3[j] = round_half(acc3[j] + w3 * x)
        out[batch, r0 : r0 + nr] = acc[:nr]


@njit(cache=True, inline="always")
def _tiles_sum_block(block, out, tile, away, scale):
    """The tiles-model sum over the first axis of ``block`` (L, C) into ``out`` (C,), times
    ``scale`` before the port rounding (no ceiling: reductions hold the fp16 range)."""
    length, width = block.shape
    zero = np.float32(0.0)
    acc = np.zeros(width, dtype=np.float32)
    part = np.zeros(width, dtype=np.float32)
    for t0 in range(0, length, tile):
        t1 = min(length, t0 + tile)
        first = block[t0]
        for j in range(width):
            part[j] = first[j]
        for t in range(t0 + 1, t1):
            row = block[t]
            for j in range(width):
                part[j] = round_half(part[j] + row[j])
        for j in range(width):
            acc[j] += round_half(part[j])
    for j in range(width):
        out[j] = _port(acc[j] * scale, zero, zero, zero, False, away)


@njit(cache=True, inline="always")
def _fp16_sum_block(block, out, scale):
    """The fp16 running sum over the first axis of ``block`` (L, C) into ``out`` (C,), times
    ``scale``, rounded."""
    length, width = block.shape
    acc = np.zeros(width, dtype=np.float32)
    for t in range(length):
        row = block[t]
        for j in range(width):
            acc[j] = round_half(acc[j] + row[j])
    for j in range(width):
        out[j] = round_half(acc[j] * scale)


@njit(cache=True, inline="always")
def _sum_block(block, out, tiles, tile, away, scale):
    """The model's sum over the first axis of ``block`` into ``out``: the tiles model
    (``tiles``) or the fp16 running sum."""
    if tiles:
        _tiles_sum_block(block, out, tile, away, scale)
    else:
        _fp16_sum_block(block, out, scale)


SUM_CHUNK = 256  # sums computed side by side in one task of the sum kernels
# A sum over the last axis reads its terms as a task's (length, sums) block copied from
# contiguous rows, up to this many floats (in L2 cache); longer rows are moved first.
SUM_BLOCK_FLOATS = 1 << 16


@njit(cache=True, parallel=True, fastmath=_CONTRACT)
def _sum_rows(x, out, tiles, tile, away, scale):
    """Sums over the first axis of ``x`` (L, R) into ``out`` (R,): the tiles model
    (``tiles``) or the fp16 running sum, SUM_CHUNK sums a task."""
    size = x.shape[1]
    for task in prange((size + SUM_CHUNK - 1) // SUM_CHUNK):
        c0 = task * SUM_CHUNK
        c1 = min(size, c0 + SUM_CHUNK)
        _sum_block(x[:, c0:c1], out[c0:c1], tiles, tile, away, scale)


@njit(cache=True, parallel=True, fastmath=_CONTRACT)
def _sum_last(x, out, chunk, tiles, tile, away, scale):
    """Sums over the last axis of ``x`` (R, L), rows contiguous, into ``out`` (R,): each task
    copies ``chunk`` rows into an (L, chunk) block (a transpose that stays in cache) and sums
    it as :func:`_sum_rows` does."""
    size, length = x.shape
    for task in prange((size + chunk - 1) // chunk):
        c0 = task * chunk
        c1 = min(size, c0 + chunk)
        block = np.empty((length, c1 - c0), dtype=np.float32)
        for j in range(c1 - c0):
            row = x[c0 + j]
            for t in range(length):
                block[t, j] = row[t]
        _sum_block(block, out[c0:c1], tiles, tile, away, scale)


def _flat(operand: np.ndarray, batch_shape: tuple) -> np.ndarray:
    if all(d == 1 for d in operand.shape[:-2]):
        return np.ascontiguousarray(operand, dtype=np.float32).reshape((1,) + operand.shape[-2:])
    full = np.broadcast_to(operand, batch_shape + operand.shape[-2:])
    return np.ascontiguousarray(full, dtype=np.float32).reshape((-1,) + operand.shape[-2:])


def _prepare(a: np.ndarray, b: np.ndarray):
    batch_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    batches = int(np.prod(batch_shape, dtype=np.int64))
    return batch_shape, batches, _flat(a, batch_shape), _flat(b, batch_shape)


def tiles_matmul(a: np.ndarray, b: np.ndarray, tile: int = 4, away: bool = False, ceiling: float = 0.0,
                 flush: bool = False, track: bool = False) -> np.ndarray:
    """``a @ b`` in the tiles model (module docstring), batch dims broadcast as np.matmul,
    through the output port (:func:`_port`): ``ceiling`` (0 for none) on the outputs, and on
    every partial sum when ``track``; ``flush`` turns fp16-subnormal outputs into +0.
    Returns float32 holding fp16 values."""
    if not track and b.shape[-1] < min(a.shape[-2], SWAP_BELOW_COLUMNS):
        # Few columns, many rows: the transpose has the same tiles and vectorizes better.
        out = tiles_matmul(np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2), tile, away, ceiling, flush)
        return np.swapaxes(out, -1, -2)
    batch_shape, batches, fa, fb = _prepare(a, b)
    m, n = a.shape[-2], b.shape[-1]
    out = np.empty((batches, m, n), dtype=np.float32)
    kernel = _tiles_matmul_tracked if track else _tiles_matmul
    kernel(fa, fb, out, tile, np.float32(ceiling), flush, away)
    return out.reshape(batch_shape + (m, n))


def fp16_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with one fp16 running sum per output (module docstring), on the product as it
    is: run transposed (copies of both operands), it was as fast or slower on every shape tried,
    from 1 to 4608 columns (ViT's MLP, 6272 x 192 x 768: 42 ms as it is, 72 ms transposed)."""
    batch_shape, batches, fa, fb = _prepare(a, b)
    m, n = a.shape[-2], b.shape[-1]
    out = np.empty((batches, m, n), dtype=np.float32)
    _fp16_matmul(fa, fb, out)
    return out.reshape(batch_shape + (m, n))


def sum_rows(x: np.ndarray, tiles: bool, tile: int = 4, away: bool = False, scale: float = 1.0) -> np.ndarray:
    """The model's sum over the first axis of a 2-D ``x``, times ``scale``: the tiles model
    (``tiles``, ``tile`` terms a tile, ties away when ``away``) or the fp16 running sum."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape[1], dtype=np.float32)
    _sum_rows(x, out, tiles, tile, away, np.float32(scale))
    return out


def sum_last(x: np.ndarray, tiles: bool, tile: int = 4, away: bool = False, scale: float = 1.0) -> np.ndarray:
    """:func:`sum_rows` over the last axis of a 2-D ``x`` whose rows are contiguous, read in
    place: no moved copy of the whole array."""
    x = np.asarray(x, dtype=np.float32)
    if x.strides[-1] != x.itemsize or x.shape[1] > SUM_BLOCK_FLOATS // 8:
        return sum_rows(x.T, tiles, tile, away, scale)
    out = np.empty(x.shape[0], dtype=np.float32)
    chunk = max(8, min(SUM_CHUNK, SUM_BLOCK_FLOATS // max(x.shape[1], 1)))
    _sum_last(x, out, chunk, tiles, tile, away, np.float32(scale))
    return out


@njit(cache=True, parallel=True)
def _add_bias_planes_half(planes, bias, with_bias, out):
    """out[i, c] = the float16 bits of fp16(planes[i, c] + bias[c]) for (N, C, positions)
    planes, channels-first (``out`` uint16); ``planes`` may be a strided view (a folded conv's
    result read back per image). Without ``with_bias`` the planes (fp16 values) are only
    stored (``fptrunc`` keeps each value, -0 and NaN bits as numpy's cast would)."""
    images, channels = planes.shape[0], planes.shape[1]
    for p in prange(images * channels):
        i = p // channels
        c = p % channels
        value = bias[c]
        row = planes[i, c]
        target = out[i, c]
        if with_bias:
            for j in range(row.size):
                target[j] = _cpu_half_bits(row[j] + value)
        else:
            for j in range(row.size):
                target[j] = _cpu_half_bits(row[j])


@njit(cache=True, parallel=True)
def _add_bias_last(rows, bias, out):
    """out[r] = fp16(rows[r] + bias): a bias over the last axis."""
    for r in prange(rows.shape[0]):
        row = rows[r]
        target = out[r]
        for j in range(row.size):
            target[j] = round_half(row[j] + bias[j])


def add_bias_rounded(y: np.ndarray, bias: np.ndarray | None, channel_axis: int | None,
                     as_float16: bool = False) -> np.ndarray:
    """``fp16(y + bias)`` (ties to even) for ``y`` holding fp16 values: the bias per channel of
    axis 1 (``channel_axis=1``, channels-first) or over the last axis (``None``). Per channel,
    ``y`` may be a view whose positions (the axes after 1) are contiguous: it is read in place,
    and the result is C-contiguous. The result is float32 holding the fp16 values, or with
    ``as_float16`` the float16 array itself (the same values, NaN bits as numpy's cast of the
    float32 result gives them: one pass instead of the sum and then the op's fp16 store).
    ``bias`` None (per channel, ``as_float16`` only): ``y`` stored as float16, read in place."""
    y = np.asarray(y, dtype=np.float32)
    if channel_axis is None:
        y = np.ascontiguousarray(y)
        bias = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
        out = np.empty_like(y)
        _add_bias_last(y.reshape(-1, y.shape[-1]), bias, out.reshape(-1, y.shape[-1]))
        return float32_to_float16(out) if as_float16 else out
    planes = y.reshape(y.shape[0], y.shape[1], -1)  # a view when the positions are contiguous
    if planes.strides[-1] != planes.itemsize:
        planes = np.ascontiguousarray(planes)
    with_bias = bias is not None
    bias = np.ascontiguousarray(bias if with_bias else np.zeros(1), dtype=np.float32).reshape(-1)
    bits = np.empty(y.shape, dtype=np.uint16)
    _add_bias_planes_half(planes, bias, with_bias, bits.reshape(planes.shape))
    return bits.view(np.float16) if as_float16 else float16_to_float32(bits.view(np.float16))


@njit(cache=True, parallel=True)
def _abs_max_rows(x, out):
    for r in prange(x.shape[0]):
        row = x[r]
        peak = np.float32(0.0)
        for j in range(row.size):
            peak = max(peak, abs(row[j]))
        out[r] = peak


@njit(cache=True, parallel=True)
def _row_bounds(a, b_max, out):
    """out[i] = max over the rows of ``b_max`` of sum_k |a[i, k]| * b_max[., k]; +inf when
    row i of ``a`` holds a value that is not finite."""
    for i in prange(a.shape[0]):
        row = a[i]
        finite = True
        for k in range(row.size):
            finite &= abs(row[k]) < INF
        peak = np.float32(0.0)
        for r in range(b_max.shape[0]):
            limits = b_max[r]
            total = np.float32(0.0)
            for k in range(row.size):
                total += abs(row[k]) * limits[k]
            peak = max(peak, total)
        out[i] = peak if finite else INF


def abs_row_bound(a: np.ndarray, b_max: np.ndarray) -> float:
    """``np.max(np.abs(a) @ b_max.T)`` for float32 ``a`` (M, K) and ``b_max`` (B, K) >= 0, in
    one parallel pass over ``a`` with no temporaries; +inf when ``a`` holds a value that is not
    finite (the bound on a product's partial sums, ``_accumulate._bounded``)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b_max = np.ascontiguousarray(b_max, dtype=np.float32).reshape(-1, a.shape[-1])
    out = np.empty(a.shape[0], dtype=np.float32)
    _row_bounds(a, b_max, out)
    return float(np.max(out, initial=0.0))


def abs_max_last_axis(x: np.ndarray) -> np.ndarray:
    """``np.max(np.abs(x), axis=-1)`` for float32 ``x``, in one parallel pass (NaN is ignored)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(int(np.prod(x.shape[:-1], dtype=np.int64)), dtype=np.float32)
    _abs_max_rows(x.reshape(-1, x.shape[-1]), out)
    return out.reshape(x.shape[:-1])
