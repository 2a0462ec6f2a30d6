"""conv and conv_transpose (spec: ops/defs/iOS15/conv.py, iOS17/conv.py).

Layout is channels-first: x (N, C_in, *D), weight (C_out, C_in/groups, *K) for conv.
The optimized conv is im2col over a strided window view plus one batched matmul across
groups, summed by the op's accumulator (``_accumulate``); :func:`conv_reference` is the plain
loop-over-output-positions twin it is tested against. For the fp16 accumulation models the
reduced axis runs tap by tap, input channels inner (the Neural Engine's lanes are channels:
a tile holds 4 input channels of one tap). ``conv_transpose`` is the same conv over the
stride-dilated input with the flipped kernel.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from precision_sweep.emulator.ops._accumulate import FP32
from precision_sweep.emulator.ops._accumulate_kernels import abs_max_last_axis
from precision_sweep.emulator.ops._conv_kernels import add_channel_bias
from precision_sweep.emulator.ops._conv_kernels import depthwise_conv2d, fold_from_half, im2col2d, upcast_from_half
from precision_sweep.emulator.ops._spatial import pad_amounts
from precision_sweep.emulator.ops.activation import offset_then_activation
from precision_sweep.emulator.registry import kernel


# Output positions per image up to which a conv's products are folded across the batch.
FOLD_MAX_POSITIONS = 16
# The fp16 models fold a groups-1 conv's images into one product below this many output
# positions per output channel (see _conv_products).
FOLD_POSITIONS_PER_CHANNEL = 2
# Largest im2col buffer: a batch whose columns would be larger is convolved in chunks.
COLUMNS_BYTES = 64 << 20


def _defaults(x, weight, strides, dilations):
    nd = x.ndim - 2
    strides = [1] * nd if strides is None else [int(s) for s in np.asarray(strides).reshape(-1)]
    dilations = [1] * nd if dilations is None else [int(d) for d in np.asarray(dilations).reshape(-1)]
    return nd, strides, dilations


def _padded(x, weight, strides, pad_type, pad, dilations):
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


def _depthwise(xp, weight, strides, dilations, out_shape, accumulator=FP32):
    """groups == C_in: each output channel sums its taps in row-major order through the
    accumulator (plain twin of the compiled 2-D kernel; also the N-d path)."""
    c = xp.shape[1]
    mult = weight.shape[0] // c
    if mult > 1:  # depth multiplier: output channel c*mult + j reads input channel c
        xp = np.repeat(xp, mult, axis=1)
        c = c * mult
    taps = _taps(weight.shape[2:])
    w = weight.reshape(c, len(taps)).astype(np.float32)
    w = w.reshape((c, len(taps)) + (1,) * len(out_shape))
    terms = [_tap_view(xp, tap, out_shape, strides, dilations) * w[:, i] for i, tap in enumerate(taps)]
    return accumulator.sum_terms(terms, saturate=len(taps) >= 2)


_MODES = {"fp32": 0, "fp16": 1, "tiles": 2}


def _depthwise_compiled(x, weight, strides, dilations, pads, accumulator):
    spec = accumulator.spec
    saturating = spec.kind == "tiles" and int(np.prod(weight.shape[2:])) >= 2
    return depthwise_conv2d(x, weight, strides, dilations, pads, _MODES[spec.kind], spec.tile,
                            (spec.ceiling or 0.0) if saturating else 0.0, spec.flush_subnormals, spec.ties == "away")


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


def _columns(xp, kernel_shape, strides, dilations, out_shape, groups, tap_major=False):
    """im2col: (N, G, cg*K, prod(out)), row index ci*K + tap, or tap*cg + ci when
    ``tap_major``. The result may be a view of this thread's scratch buffer: valid until the
    next call."""
    n, c = xp.shape[:2]
    taps = _taps(kernel_shape)
    if tap_major:
        cols = _scratch_array((n, len(taps), c) + out_shape, xp.dtype)
        for i, tap in enumerate(taps):
            cols[:, i] = _tap_view(xp, tap, out_shape, strides, dilations)
        return _tap_major_groups(cols, groups)
    cols = _scratch_array((n, c, len(taps)) + out_shape, xp.dtype)
    for i, tap in enumerate(taps):
        cols[:, :, i] = _tap_view(xp, tap, out_shape, strides, dilations)
    return cols.reshape(n, groups, (c // groups) * len(taps), -1)


def _tap_major_groups(cols, groups):
    """(N, K, C, *out) tap-major columns as (N, G, K*cg, prod(out))."""
    n, k, c = cols.shape[:3]
    if groups == 1:
        return cols.reshape(n, 1, k * c, -1)
    grouped = cols.reshape(n, k, groups, c // groups, -1).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(grouped).reshape(n, groups, k * (c // groups), -1)


def _weight_rows(weight, groups, tap_major):
    """The weights as (G, C_out/G, cg*K) in the order of the columns' rows."""
    c_out = weight.shape[0]
    if tap_major:
        weight = np.moveaxis(weight, 1, -1)  # (C_out, *K, cg)
    return np.ascontiguousarray(weight).reshape(groups, c_out // groups, -1)


@kernel("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1, *, accumulator=FP32,
         activation=None):
    """N-d convolution, channels first (:func:`_conv`). ``activation`` (not a MIL input: a lean
    run's fold of the float32 activation that alone reads the conv, ``program._fold_activations``)
    names an op of ``activation.FOLDS_INTO_CONV``, applied with the bias in one pass over the
    output: the bits of the conv's step and then the activation's step."""
    if activation is None:
        return _conv(x, weight, bias, strides, pad_type, pad, dilations, groups, accumulator)
    if accumulator.rounds_to_fp16:
        raise ValueError(f"a conv folds its activation {activation!r} only when it sums in float32")
    y = np.ascontiguousarray(_conv(x, weight, None, strides, pad_type, pad, dilations, groups, accumulator),
                             dtype=np.float32)
    offsets = None  # the bias per (image, channel) plane
    if bias is not None:
        offsets = np.tile(np.asarray(accumulator.operand(bias), dtype=np.float32).reshape(-1), y.shape[0])
    offset_then_activation(y.reshape(y.shape[0] * y.shape[1], -1), offsets, activation)
    return y


def _conv(x, weight, bias, strides, pad_type, pad, dilations, groups, accumulator):
    """N-d convolution, channels first. BLAS-backed or compiled, no per-pixel Python loops.

    * 1x1 stride-1 convs are a batched matmul on the input as it is (one matmul over the whole
      batch when an image has at most ``FOLD_MAX_POSITIONS`` output positions);
    * depthwise convs (``groups == C_in``) are per-tap multiply-adds, compiled for 2-D
      (:func:`~precision_sweep.emulator.ops._conv_kernels.depthwise_conv2d`);
    * everything else is im2col + batched matmul per group, whose result is already
      channels-first; 2-D im2col is compiled
      (:func:`~precision_sweep.emulator.ops._conv_kernels.im2col2d`, twin of :func:`_columns`).
      For the fp16 models a groups-1 conv with fewer output positions than twice its output
      channels folds its
      images into one product (see :func:`_conv_products`): 2-D im2col writes the images'
      columns side by side.
    """
    nd, strides, dilations = _defaults(x, weight, strides, dilations)
    groups = int(groups)
    weight = accumulator.operand(weight)
    bias = None if bias is None else accumulator.operand(bias)
    n, c = x.shape[:2]
    kernel_shape = tuple(weight.shape[2:])
    depthwise = groups == c > 1
    pointwise = all(k == 1 for k in kernel_shape) and all(s == 1 for s in strides)
    tap_major = accumulator.rounds_to_fp16
    flush = accumulator.spec.flush_subnormals
    pads = pad_amounts(pad_type, x.shape[2:], kernel_shape, strides, dilations, pad)
    if nd == 2 and (depthwise or not pointwise):  # the compiled kernels: no padded copy of x
        if depthwise:
            y = _depthwise_compiled(accumulator.operand(x), weight, strides, dilations, pads, accumulator)
            return _with_bias(y, bias, accumulator)
        if x.dtype != np.float16:  # fp16 inputs are read as operands by im2col itself
            x = accumulator.operand(x)
        out_shape = _out_shape([s + a + b for s, (a, b) in zip(x.shape[2:], pads)], kernel_shape, strides, dilations)
        k = int(np.prod(kernel_shape))
        rows = _weight_rows(weight, groups, tap_major)
        # im2col in batch chunks whose float32 columns fit COLUMNS_BYTES: the columns of a
        # whole batch of large images would dominate the peak memory.
        per_image = c * k * int(np.prod(out_shape)) * 4
        chunk = max(1, min(n, COLUMNS_BYTES // max(per_image, 1)))
        fold = _folds_images(accumulator, groups, int(np.prod(out_shape)), weight.shape[0])
        # each image's input channels' abs max, per row of its tap-major columns, bounds the
        # columns' rows for the MAC ceiling check when x is smaller than its columns
        channel_limits = tap_major and groups == 1 and x.shape[2] * x.shape[3] < k * int(np.prod(out_shape))
        parts = []
        for start in range(0, n, chunk):
            part = x[start : start + chunk]
            m = part.shape[0]
            if fold:  # the columns of all m images side by side: (K*C, m * positions)
                cols = _scratch_array((k, c, m) + out_shape, np.float32)
                target = cols.transpose(2, 0, 1, 3, 4)
            else:
                cols = _scratch_array(((m, k, c) if tap_major else (m, c, k)) + out_shape, np.float32)
                target = cols
            peaks = _im2col_operands(part, kernel_shape, strides, dilations, pads, target, tap_major, flush,
                                     channel_limits)
            limits = np.tile(peaks, (1, k)) if channel_limits else None
            if fold:
                parts.append(_conv_products(cols.reshape(k * c, -1), rows, bias, out_shape, accumulator, images=m,
                                            b_abs_max=None if limits is None else limits.max(axis=0)))
                continue
            cols = _tap_major_groups(cols, groups) if tap_major else cols.reshape(m, groups, -1, int(np.prod(out_shape)))
            parts.append(_conv_products(cols, rows, bias, out_shape, accumulator, b_abs_max=limits))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
    positions = int(np.prod(x.shape[2:]))
    unpadded = all(p == (0, 0) for p in pads)
    if pointwise and unpadded and x.dtype == np.float16 and _folds_images(accumulator, groups, positions, weight.shape[0]):
        # the fold's copy of the images side by side is also their upcast and their bound
        folded = _scratch_array((c, n, positions), np.float32)
        peaks = fold_from_half(x.reshape(n, c, positions), flush, folded)
        return _conv_products(folded.reshape(c, -1), _weight_rows(weight, groups, tap_major), bias, x.shape[2:],
                              accumulator, images=n, b_abs_max=peaks)
    if pointwise and unpadded and x.dtype == np.float16 and groups == 1 and accumulator.spec.ceiling:
        # the Neural Engine's check of the MAC ceiling bounds the operands: their peaks come
        # from the upcast's own pass
        operand, peaks = upcast_from_half(x.reshape(n, c, positions), flush)
        return _conv_products(operand.reshape(n, 1, c, positions), _weight_rows(weight, groups, tap_major), bias,
                              x.shape[2:], accumulator, b_abs_max=peaks)
    x = accumulator.operand(x)
    xp = _padded(x, weight, strides, pad_type, pad, dilations)
    out_shape = _out_shape(xp.shape[2:], kernel_shape, strides, dilations)
    if depthwise:
        return _with_bias(_depthwise(xp, weight, strides, dilations, out_shape, accumulator), bias, accumulator)
    if pointwise:
        cols = xp.reshape(n, groups, c // groups, -1)
    else:
        cols = _columns(xp, kernel_shape, strides, dilations, out_shape, groups, tap_major)
    return _conv_products(cols, _weight_rows(weight, groups, tap_major), bias, out_shape, accumulator)


def _im2col_operands(part, kernel_shape, strides, dilations, pads, target, tap_major, flush, peaks=False):
    """2-D im2col of ``part`` into the float32 columns ``target``, reading fp16 values as MAC
    operands (:func:`im2col2d`, the twin of :func:`_columns`). Returns each (image, channel)'s
    largest magnitude, (N, C) (found in the same pass for fp16 ``part``; with ``peaks`` only,
    for float32), or None."""
    if part.dtype == np.float16:
        return im2col2d(part, kernel_shape, strides, dilations, pads, target, tap_major, flush)
    im2col2d(part, kernel_shape, strides, dilations, pads, target, tap_major)
    return abs_max_last_axis(part.reshape(part.shape[0], part.shape[1], -1)) if peaks else None


def _folds_images(accumulator, groups: int, positions: int, c_out: int) -> bool:
    """Whether a conv's images fold into one product (see :func:`_conv_products`): the fp16
    models' groups-1 convs with fewer output positions than ``FOLD_POSITIONS_PER_CHANNEL``
    times their output channels."""
    return accumulator.rounds_to_fp16 and groups == 1 and positions < FOLD_POSITIONS_PER_CHANNEL * c_out


def _conv_products(cols, w, bias, out_shape, accumulator, images=None, b_abs_max=None):
    """The conv as matmuls of the weights (G, og, cg*K) with the columns (N, G, cg*K,
    prod(out)), plus bias. A conv of one term per output (1x1, one input channel) does not
    pass the ANE's MAC ceiling.

    With ``images``, ``cols`` are the folded columns of a groups-1 conv, (cg*K, images *
    prod(out)) image by image: one product over the whole batch. The fp16 models fold every
    groups-1 conv whose output has fewer positions than twice its channels (im2col writes 2-D convs
    folded in the first place): the product's rows then stay the weights and its columns many
    (the tiles kernel ran 1.3-1.8x faster on ResNet50's products than on the transposed ones,
    ``benchmarks/tiles_conv_products.py``), and the result is read back per image by the bias
    pass, in place. Wider images stay one product each: folded, their products ran 1.4-1.7x
    slower (the kernel's rows of sums outgrow the caches). Up to twice the channels (ResNet50
    96's second stage, 144 positions for 128 channels) folding still pays: the whole
    cpu_and_ne/m1 run took 2043-2323 ms against 2186-2596 ms at once the channels (six
    alternating processes each).
    ``b_abs_max`` (groups 1): a bound of ``|cols|`` per row (K,) when folded, else per image and
    row (N, K), for the accumulator's check of the MAC ceiling (each input channel's largest
    magnitude: a smaller scan than the columns')."""
    if images is not None:
        terms = cols.shape[0]
        c_out = w.shape[1]
        y = accumulator.matmul(w[0], cols, terms >= 2, b_abs_max)
        y = y.reshape(c_out, images, -1).transpose(1, 0, 2)
        y = y.reshape((images, c_out) + out_shape)  # a view: the fp16 store reads it in place
        return _with_bias(y, bias, accumulator)
    n, groups, terms, positions = cols.shape
    c_out = w.shape[0] * w.shape[1]
    saturate = terms >= 2
    if _folds_images(accumulator, groups, positions, c_out):
        source = cols[:, 0].transpose(1, 0, 2)
        if np.may_share_memory(cols, getattr(_scratch, "buffer", None)):  # N-d im2col columns
            folded = np.ascontiguousarray(source)
        else:
            folded = _scratch_array((terms, n, positions), cols.dtype)
            np.copyto(folded, source)
        return _conv_products(folded.reshape(terms, -1), w, bias, out_shape, accumulator, images=n)
    if groups == 1 and positions <= FOLD_MAX_POSITIONS:
        # Few output positions per image: one product over the whole batch's columns
        # instead of N thin ones (2x faster on ResNet50's 3x3 stage).
        folded = np.ascontiguousarray(cols[:, 0].transpose(1, 0, 2)).reshape(terms, -1)
        y = accumulator.matmul(w[0], folded, saturate, None if b_abs_max is None else b_abs_max.max(axis=0))
        y = y.reshape(c_out, n, positions).transpose(1, 0, 2)
        if not accumulator.rounds_to_fp16:  # (the fp16 store reads the view in place)
            y = np.ascontiguousarray(y)
    elif groups == 1:
        y = accumulator.matmul(w[0], cols[:, 0], saturate, b_abs_max)  # (N, C_out, prod(out))
    else:
        y = accumulator.matmul(w, cols, saturate)  # (N, G, og, prod(out))
    return _with_bias(y.reshape((n, c_out) + out_shape), bias, accumulator)


def _with_bias(y, bias, accumulator):
    """The conv's output: ``y`` plus its bias. The fp16 models return it as float16, stored in
    the bias's pass (``y`` may be a per-image view of a folded product)."""
    if accumulator.rounds_to_fp16:
        return accumulator.add_bias(y, bias, channel_axis=1, as_float16=True)
    if bias is None:
        return y
    y = np.ascontiguousarray(y, dtype=np.float32)
    add_channel_bias(y, bias)
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
    *,
    accumulator=FP32,
):
    """Transposed conv; weight is (C_in, C_out/groups, *K) as the MIL spec states.

    Computed as :func:`conv` over the input dilated by the strides and padded by the kernel
    extent, with the kernel flipped and its in/out channels swapped per group (the same sums,
    through the same accumulator), then cropped by the padding (or to ``output_shape``).
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
    dilated = np.zeros((n, c_in) + tuple((i - 1) * s + 1 for i, s in zip(in_sp, strides)), dtype=np.float32)
    dilated[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)] = x
    # (C_in, og, *K) -> per group (og, cg, *K), flipped spatially
    w = weight.reshape((groups, cg, og) + tuple(kernel_shape)).swapaxes(1, 2)
    w = np.flip(w, axis=tuple(range(3, 3 + nd))).reshape((c_out, cg) + tuple(kernel_shape))
    pads = [(e - 1, e - 1) for e in effective]
    y = conv(dilated, np.ascontiguousarray(w), None, [1] * nd, "custom", [p for pair in pads for p in pair],
             dilations, groups, accumulator=accumulator)
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
    return _with_bias(np.ascontiguousarray(y[(slice(None), slice(None)) + index]), bias, accumulator)
