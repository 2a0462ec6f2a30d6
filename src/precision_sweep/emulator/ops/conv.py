"""conv and conv_transpose (spec: ops/defs/iOS15/conv.py, iOS17/conv.py).

Layout is channels-first: x (N, C_in, *D), weight (C_out, C_in/groups, *K) for conv.
The optimized conv is im2col over a strided window view plus one batched matmul across
groups; :func:`conv_reference` is the plain loop-over-output-positions twin it is tested
against.
"""

from __future__ import annotations

import itertools

import numpy as np

from precision_sweep.emulator.ops import _accumulate
from precision_sweep.emulator.ops._spatial import pad_amounts, windows
from precision_sweep.emulator.registry import kernel


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


@kernel("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    nd, strides, dilations = _defaults(x, weight, strides, dilations)
    groups = int(groups)
    xp = _padded(x, weight, strides, pad_type, pad, dilations)
    kernel_shape = weight.shape[2:]
    win = windows(xp, kernel_shape, strides, dilations)  # (N, C, *out, *K)
    n, c = win.shape[:2]
    out_shape = win.shape[2 : 2 + nd]
    c_out = weight.shape[0]
    cg, og = c // groups, c_out // groups
    k = int(np.prod(kernel_shape))
    # (N, G, cg, *out, *K) -> (G, N, *out, cg, *K) -> (G, N*out, cg*K)
    win = win.reshape((n, groups, cg) + out_shape + tuple(kernel_shape))
    order = (1, 0) + tuple(range(3, 3 + nd)) + (2,) + tuple(range(3 + nd, 3 + 2 * nd))
    cols = win.transpose(order).reshape(groups, -1, cg * k)
    w = weight.reshape(groups, og, cg * k).transpose(0, 2, 1)  # (G, cg*K, og)
    y = _accumulate.matmul(cols, w)  # (G, N*out, og)
    y = y.reshape((groups, n) + out_shape + (og,))
    # -> (N, G, og, *out) -> (N, C_out, *out)
    y = y.transpose((1, 0, nd + 2) + tuple(range(2, 2 + nd))).reshape((n, c_out) + out_shape)
    if bias is not None:
        y = y + bias.reshape((c_out,) + (1,) * nd)
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
