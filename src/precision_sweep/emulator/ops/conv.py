"""conv and conv_transpose (spec: ops/defs/iOS15/conv.py, iOS17/conv.py).

Layout is channels-first: x (N, C_in, *D), weight (C_out, C_in/groups, *K) for conv.
The optimized conv is im2col over a strided window view plus one batched matmul across
groups; :func:`conv_reference` is the plain loop-over-output-positions twin it is tested
against.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from precision_sweep.emulator.ops import _accumulate
from precision_sweep.emulator.ops._compiled import (
    add_channel_bias,
    depthwise_conv2d,
    float16_to_float32,
    im2col2d,
    round_float16_in_float32,
)
from precision_sweep.emulator.ops._compiled import float32_to_float16 as round_to_float16
from precision_sweep.emulator.ops._spatial import pad_amounts, windows
from precision_sweep.emulator.registry import kernel


# Output positions per image up to which a conv's products are folded across the batch.
FOLD_MAX_POSITIONS = 16


def _defaults(x, weight, strides, dilations):
    nd = x.ndim - 2
    strides = [1] * nd if strides is None else [int(s) for s in np.asarray(strides).reshape(-1)]
    dilations = [1] * nd if dilations is None else [int(d) for d in np.asarray(dilations).reshape(-1)]
    return nd, strides, dilations


def _padded(x, weight, strides, pad_type, pad, dilations):
    nd = x.ndim - 2
    pads = pad_amounts(pad_type, x.shape[2:], weight.shape[2:], strides, dilations, pad)
    if any(p != (0, 0) for p in pads):
        x = np.pad(x, [(0, 0), (0, 0)] + pads)
    return x


def _taps(kernel_shape):
    return list(itertools.product(*[range(k) for k in kernel_shape]))


def _tap_view(xp, tap, out_shape, strides, dilations):
    """The input positions one kernel tap reads for every output position: (N, C, *out)."""
    index = tuple(
        slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, dilations, out_shape, strides)
    )
    return xp[(slice(None), slice(None)) + index]


def _out_shape(padded_sizes, kernel_shape, strides, dilations):
    """Output spatial shape of a conv over inputs of ``padded_sizes`` (padding included)."""
    return tuple(
        (size - ((k - 1) * d + 1)) // s + 1
        for size, k, s, d in zip(padded_sizes, kernel_shape, strides, dilations)
    )


def _depthwise(xp, weight, strides, dilations, out_shape):
    """groups == C_in: per-tap multiply-adds over (N, C, *out), in cache-sized batch chunks.

    fp16 operands sum the taps in blocks of ``_accumulate.FP16_BLOCK`` (fp32 within a block,
    fp16 running total), the same accumulation order as the im2col path.
    """
    n, c = xp.shape[:2]
    mult = weight.shape[0] // c
    if mult > 1:  # depth multiplier: output channel c*mult + j reads input channel c
        xp = np.repeat(xp, mult, axis=1)
        c = c * mult
    taps = _taps(weight.shape[2:])
    w = weight.reshape(c, len(taps)).astype(np.float32)
    w = w.reshape((c, len(taps)) + (1,) * len(out_shape))
    fp16 = xp.dtype == np.float16
    y = np.empty((n, c) + out_shape, dtype=np.float16 if fp16 else np.result_type(xp.dtype, np.float32))
    per_image = c * int(np.prod(out_shape))
    chunk = max(1, (1 << 18) // max(per_image, 1))
    block = _accumulate.FP16_BLOCK if fp16 else len(taps)
    tmp = np.empty((min(chunk, n), c) + out_shape, dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        part = xp[start:stop]
        acc = np.zeros((stop - start, c) + out_shape, dtype=np.float32)
        total = None
        t = tmp[: stop - start]
        for i, tap in enumerate(taps):
            np.multiply(_tap_view(part, tap, out_shape, strides, dilations), w[:, i], out=t)
            acc += t
            if fp16 and ((i + 1) % block == 0 or i + 1 == len(taps)):
                rounded = round_float16_in_float32(acc)
                total = rounded if total is None else round_float16_in_float32(total + rounded)
                acc[...] = 0
        y[start:stop] = round_to_float16(total) if fp16 else acc
    return y


_scratch = threading.local()


def _scratch_array(shape, dtype) -> np.ndarray:
    """A reusable buffer for im2col columns, which live only until their matmul returns.

    Writing the columns into fresh memory every time costs a page fault per 4 KiB (about as
    much as the copy itself); this thread's buffer grows to the largest columns seen, once.
    """
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = _scratch.buffer = np.empty(size, dtype=np.uint8)
    return buffer[:size].view(dtype).reshape(shape)


def _columns(xp, kernel_shape, strides, dilations, out_shape, groups):
    """im2col in channels-first order: (N, G, cg*K, prod(out)), row index ci*K + tap.

    The result is a view of this thread's scratch buffer: valid until the next call.
    """
    n, c = xp.shape[:2]
    taps = _taps(kernel_shape)
    cols = _scratch_array((n, c, len(taps)) + out_shape, xp.dtype)
    for i, tap in enumerate(taps):
        cols[:, :, i] = _tap_view(xp, tap, out_shape, strides, dilations)
    return cols.reshape(n, groups, (c // groups) * len(taps), -1)


@kernel("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """N-d convolution, channels first. BLAS-backed, no per-pixel Python loops.

    * 1x1 stride-1 convs are a batched matmul on the input as it is (one matmul over the whole
      batch when an image has at most ``FOLD_MAX_POSITIONS`` output positions);
    * depthwise convs (``groups == C_in``) are per-tap multiply-adds, compiled for 2-D
      (:func:`~precision_sweep.emulator.ops._compiled.depthwise_conv2d`);
    * everything else is im2col + batched matmul per group, whose result is already
      channels-first; 2-D im2col is compiled
      (:func:`~precision_sweep.emulator.ops._compiled.im2col2d`, twin of :func:`_columns`).
    """
    nd, strides, dilations = _defaults(x, weight, strides, dilations)
    groups = int(groups)
    if x.dtype != np.float16:
        x = x.astype(np.float32, copy=False)
    weight = weight.astype(x.dtype, copy=False)
    n, c = x.shape[:2]
    kernel_shape = tuple(weight.shape[2:])
    depthwise = groups == c > 1
    pointwise = all(k == 1 for k in kernel_shape) and all(s == 1 for s in strides)
    if nd == 2 and (depthwise or not pointwise):  # the compiled kernels: no padded copy of x
        pads = pad_amounts(pad_type, x.shape[2:], kernel_shape, strides, dilations, pad)
        if depthwise:  # the compiled twin of _depthwise (same sums, fp16 blocks included)
            if x.dtype == np.float16:
                y = depthwise_conv2d(
                    float16_to_float32(x), float16_to_float32(weight), strides, dilations, pads, _accumulate.FP16_BLOCK
                )
                return _with_bias(round_to_float16(y), bias)
            return _with_bias(depthwise_conv2d(x, weight, strides, dilations, pads), bias)
        out_shape = _out_shape([s + a + b for s, (a, b) in zip(x.shape[2:], pads)], kernel_shape, strides, dilations)
        cols = _scratch_array((n, c, int(np.prod(kernel_shape))) + out_shape, x.dtype)
        im2col2d(x, kernel_shape, strides, dilations, pads, cols)  # the twin of _columns
        return _conv_products(cols.reshape(n, groups, -1, int(np.prod(out_shape))), weight, bias, out_shape)
    xp = _padded(x, weight, strides, pad_type, pad, dilations)
    out_shape = _out_shape(xp.shape[2:], kernel_shape, strides, dilations)
    if depthwise:
        return _with_bias(_depthwise(xp, weight, strides, dilations, out_shape), bias)
    if pointwise:
        cols = xp.reshape(n, groups, c // groups, -1)
    else:
        cols = _columns(xp, kernel_shape, strides, dilations, out_shape, groups)
    return _conv_products(cols, weight, bias, out_shape)


def _conv_products(cols, weight, bias, out_shape):
    """The conv as matmuls of the weights with the columns (N, G, cg*K, prod(out)), plus bias."""
    n, groups, _, positions = cols.shape
    c_out = weight.shape[0]
    w = weight.reshape(groups, c_out // groups, -1)
    if groups == 1 and positions <= FOLD_MAX_POSITIONS:
        # Few output positions per image: one product over the whole batch's columns
        # instead of N thin ones (2x faster on ResNet50's 3x3 stage).
        folded = np.ascontiguousarray(cols[:, 0].transpose(1, 0, 2)).reshape(cols.shape[2], -1)
        y = _accumulate.matmul(w[0], folded).reshape(c_out, n, positions).transpose(1, 0, 2)
        y = np.ascontiguousarray(y)
    elif groups == 1:
        y = _accumulate.matmul(w[0], cols[:, 0])  # (N, C_out, prod(out))
    else:
        y = _accumulate.matmul(w, cols)  # (N, G, og, prod(out))
    return _with_bias(y.reshape((n, c_out) + out_shape), bias)


def _with_bias(y, bias):
    if bias is not None:
        if y.dtype == np.float32:
            add_channel_bias(y, bias)
        else:
            y += bias.reshape((-1,) + (1,) * (y.ndim - 2)).astype(y.dtype, copy=False)
    return y


def conv_reference(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """Direct definition of conv, one output position at a time (tests and speed checks only)."""
    nd, strides, dilations = _defaults(x, weight, strides, dilations)
    groups = int(groups)
    xp = _padded(x, weight, strides, pad_type, pad, dilations).astype(np.float64)
    kernel_shape = weight.shape[2:]
    effective = [(k - 1) * d + 1 for k, d in zip(kernel_shape, dilations)]
    out_shape = [(s - e) // st + 1 for s, e, st in zip(xp.shape[2:], effective, strides)]
    n, c = x.shape[:2]
    c_out = weight.shape[0]
    cg, og = c // groups, c_out // groups
    y = np.zeros((n, c_out, *out_shape))
    for o in range(c_out):
        g = o // og
        for pos in itertools.product(*[range(s) for s in out_shape]):
            index = tuple(
                slice(p * st, p * st + e, d) for p, st, e, d in zip(pos, strides, effective, dilations)
            )
            patch = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + index]
            y[(slice(None), o) + tuple(pos)] = (patch * weight[o]).reshape(n, -1).sum(axis=1)
    if bias is not None:
        y = y + bias.reshape((c_out,) + (1,) * nd)
    return y


@kernel("conv_transpose")
def conv_transpose(
    x,
    weight,
    bias=None,
    pad=None,
    output_shape=None,
    pad_type="valid",
    strides=None,
    dilations=None,
    groups=1,
):
    """Transposed conv; weight is (C_in, C_out/groups, *K) as the MIL spec states.

    Computed as the scatter-add of every input position's kernel-weighted contribution,
    then cropped by the padding (or to ``output_shape``).
    """
    nd, strides, dilations = _defaults(x, weight, strides, dilations)
    groups = int(groups)
    n, c_in = x.shape[:2]
    in_sp = x.shape[2:]
    kernel_shape = weight.shape[2:]
    og = weight.shape[1]
    cg = c_in // groups
    c_out = og * groups
    effective = [(k - 1) * d + 1 for k, d in zip(kernel_shape, dilations)]
    full = [(i - 1) * s + e for i, s, e in zip(in_sp, strides, effective)]
    y = np.zeros((n, c_out, *full), dtype=np.float32 if x.dtype != np.float64 else x.dtype)
    # contribution[n, g, og, *in, *K] = sum_cg x[n, g, cg, *in] * w[g, cg, og, *K]
    xg = x.reshape((n, groups, cg) + tuple(in_sp)).astype(np.float32)
    wg = weight.reshape((groups, cg, og) + tuple(kernel_shape)).astype(np.float32)
    for kpos in itertools.product(*[range(k) for k in kernel_shape]):
        w_k = wg[(slice(None), slice(None), slice(None)) + kpos]  # (G, cg, og)
        contrib = np.einsum("ngc...,gco->ngo...", xg, w_k).reshape((n, c_out) + tuple(in_sp))
        index = tuple(
            slice(kp * d, kp * d + (i - 1) * s + 1, s) for kp, d, i, s in zip(kpos, dilations, in_sp, strides)
        )
        y[(slice(None), slice(None)) + index] += contrib
    if output_shape is not None and str(pad_type) != "custom":
        target = [int(v) for v in np.asarray(output_shape).reshape(-1)][-nd:]
        crops = []
        for f, t in zip(full, target):
            total = max(f - t, 0)
            crops.append((total // 2, total - total // 2) if str(pad_type) == "same" else (0, total))
    elif str(pad_type) == "same":
        target = [i * s for i, s in zip(in_sp, strides)]
        crops = [((f - t) // 2, (f - t) - (f - t) // 2) for f, t in zip(full, target)]
    elif str(pad_type) == "custom" and pad is not None:
        p = [int(v) for v in np.asarray(pad).reshape(-1)]
        crops = [(p[2 * i], p[2 * i + 1]) for i in range(nd)]
    else:
        crops = [(0, 0)] * nd
    index = tuple(slice(b, f - a) for (b, a), f in zip(crops, full))
    y = y[(slice(None), slice(None)) + index]
    if bias is not None:
        y = y + bias.reshape((c_out,) + (1,) * nd)
    return y
