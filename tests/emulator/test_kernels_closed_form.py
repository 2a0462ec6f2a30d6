"""Kernels against closed-form numpy (and TF where TF defines the same op), per op family."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from precision_sweep.emulator.ops import conv as conv_ops
from precision_sweep.emulator.ops import image_resizing as rs
from precision_sweep.emulator.ops import normalization as norm
from precision_sweep.emulator.ops import pool as pool_ops
from precision_sweep.emulator.ops import scatter_gather as sg
from precision_sweep.emulator.ops import tensor_operation as tops
from precision_sweep.emulator.ops import tensor_transformation as tt
from precision_sweep.emulator.registry import KERNELS

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- activation
def test_activations_closed_form():
    from scipy.special import erf

    x = np.linspace(-6, 6, 101).astype(np.float64)
    sig = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(KERNELS["sigmoid"](x), sig, rtol=1e-12)
    np.testing.assert_allclose(KERNELS["silu"](x), x * sig, rtol=1e-12)
    np.testing.assert_allclose(KERNELS["softplus"](x), np.log1p(np.exp(x)), rtol=1e-12)
    np.testing.assert_allclose(KERNELS["softsign"](x), x / (1 + abs(x)))
    np.testing.assert_allclose(KERNELS["elu"](x, alpha=0.7), np.where(x > 0, x, 0.7 * (np.exp(x) - 1)), atol=1e-15)
    np.testing.assert_allclose(KERNELS["leaky_relu"](x, alpha=0.1), np.where(x >= 0, x, 0.1 * x))
    np.testing.assert_allclose(KERNELS["relu6"](x), np.clip(x, 0, 6))
    np.testing.assert_allclose(KERNELS["sigmoid_hard"](x, alpha=0.2, beta=0.5), np.clip(0.2 * x + 0.5, 0, 1))
    np.testing.assert_allclose(KERNELS["gelu"](x), 0.5 * x * (1 + erf(x / math.sqrt(2))), rtol=1e-12)
    tanh_gelu = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(KERNELS["gelu"](x, mode="TANH_APPROXIMATION"), tanh_gelu, rtol=1e-12)
    np.testing.assert_allclose(KERNELS["gelu"](x, mode="SIGMOID_APPROXIMATION"), x / (1 + np.exp(-1.702 * x)), rtol=1e-12)
    np.testing.assert_allclose(KERNELS["scaled_tanh"](x, alpha=2.0, beta=0.5), 2 * np.tanh(0.5 * x))
    np.testing.assert_allclose(KERNELS["thresholded_relu"](x, alpha=1.5), np.where(x >= 1.5, x, 0))
    np.testing.assert_allclose(KERNELS["clamped_relu"](x, alpha=0.1, beta=4.0), np.minimum(np.where(x >= 0, x, 0.1 * x), 4.0))
    m = x.reshape(1, -1)
    e = np.exp(m - m.max())
    np.testing.assert_allclose(KERNELS["softmax"](m, axis=-1), e / e.sum(), rtol=1e-12)
    c = RNG.standard_normal((2, 3, 4))
    alpha, beta = np.array([0.1, 0.2, 0.3]), np.array([1.0, 2.0, 0.5])
    np.testing.assert_allclose(KERNELS["prelu"](c, alpha=alpha), np.where(c >= 0, c, c * alpha[None, :, None]))
    np.testing.assert_allclose(
        KERNELS["softplus_parametric"](c, alpha=alpha, beta=beta),
        alpha[None, :, None] * np.log1p(np.exp(beta[None, :, None] * c)),
    )


# ---------------------------------------------------------------- tensor ops without value inference
def test_concat_interleave_docstring_example():
    in1 = np.array([[1, 2], [3, 4], [5, 6]])
    in2 = np.array([[7, 8], [9, 10], [11, 12]])
    want = [[1, 2], [7, 8], [3, 4], [9, 10], [5, 6], [11, 12]]
    np.testing.assert_array_equal(tops.concat([in1, in2], axis=0, interleave=True), want)
    np.testing.assert_array_equal(tops.concat([in1.T, in2.T], axis=-1, interleave=True), np.array(want).T)


def test_cumsum_exclusive_and_reverse():
    x = RNG.standard_normal((3, 5))
    np.testing.assert_allclose(tops.cumsum(x, axis=1, exclusive=True), np.cumsum(x, 1) - x)
    np.testing.assert_allclose(tops.cumsum(x, axis=1, reverse=True), np.cumsum(x[:, ::-1], 1)[:, ::-1])
    np.testing.assert_allclose(
        tops.cumsum(x, axis=0, exclusive=True, reverse=True), np.cumsum(x[::-1], 0)[::-1] - x, atol=1e-12
    )


def test_band_part_and_one_hot():
    x = RNG.standard_normal((2, 4, 5))
    np.testing.assert_array_equal(tops.band_part(x, 0, -1), np.triu(x))
    np.testing.assert_array_equal(tops.band_part(x, -1, 0), np.tril(x))
    np.testing.assert_array_equal(tops.band_part(x, 1, 1), np.triu(np.tril(x, 1), -1))
    hot = tops.one_hot(np.array([1, 0, 3]), 4, axis=0)
    np.testing.assert_array_equal(hot, np.eye(4)[[1, 0, 3]].T)


def test_space_depth_pixel_shuffle_roundtrips():
    x = RNG.standard_normal((2, 3, 4, 6))
    np.testing.assert_array_equal(tt.depth_to_space(tt.space_to_depth(x, 2), 2), x)
    np.testing.assert_array_equal(tt.pixel_shuffle(tt.pixel_unshuffle(x, 2), 2), x)
    # pixel_shuffle: out[n, c, h*f + i, w*f + j] = in[n, c*f*f + i*f + j, h, w]
    y = RNG.standard_normal((1, 8, 2, 3))
    out = tt.pixel_shuffle(y, 2)
    for c, i, j, h, w in itertools.product(range(2), range(2), range(2), range(2), range(3)):
        assert out[0, c, h * 2 + i, w * 2 + j] == y[0, c * 4 + i * 2 + j, h, w]
    # depth_to_space (DCR, as TF): out[n, c, h*b + i, w*b + j] = in[n, (i*b + j)*C + c, h, w]
    d = tt.depth_to_space(y, 2)
    for c, i, j, h, w in itertools.product(range(2), range(2), range(2), range(2), range(3)):
        assert d[0, c, h * 2 + i, w * 2 + j] == y[0, (i * 2 + j) * 2 + c, h, w]


def test_reverse_sequence_and_sliding_windows():
    x = RNG.standard_normal((2, 5, 3))
    out = tt.reverse_sequence(x, np.array([3, 5]), seq_axis=1, batch_axis=0)
    np.testing.assert_array_equal(out[0], np.concatenate([x[0, :3][::-1], x[0, 3:]]))
    np.testing.assert_array_equal(out[1], x[1, ::-1])
    out_t = tt.reverse_sequence(np.swapaxes(x, 0, 1), np.array([3, 5]), seq_axis=0, batch_axis=1)
    np.testing.assert_array_equal(np.swapaxes(out_t, 0, 1), out)
    w = tt.sliding_windows(x, axis=1, size=2, stride=2)
    assert w.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(w[:, 1], x[:, 2:4])


# ---------------------------------------------------------------- gather / scatter vs TF
def test_gather_family_against_tf():
    tf = pytest.importorskip("tensorflow")
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    idx = RNG.integers(0, 4, (2, 3, 6)).astype(np.int32)
    for axis, bd in [(2, 0), (2, 1), (2, 2), (3, 2), (-1, 1)]:
        ind = idx if bd else idx[0, 0]
        ind = np.minimum(ind, x.shape[axis] - 1)
        np.testing.assert_array_equal(sg.gather(x, ind, axis=axis, batch_dims=bd), tf.gather(x, ind, axis=axis, batch_dims=bd).numpy())
    np.testing.assert_array_equal(sg.gather(x, np.array([-1, 0]), axis=1), x[:, [2, 0]])
    nd = RNG.integers(0, 2, (4, 2)).astype(np.int32)
    np.testing.assert_array_equal(sg.gather_nd(x, nd), tf.gather_nd(x, nd).numpy())
    nd_b = RNG.integers(0, 3, (2, 4, 1)).astype(np.int32)
    np.testing.assert_array_equal(sg.gather_nd(x, nd_b, batch_dims=1), tf.gather_nd(x, nd_b, batch_dims=1).numpy())
    upd = RNG.standard_normal((4, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(sg.scatter_nd(x, nd, upd, mode="add"), tf.tensor_scatter_nd_add(x, nd, upd).numpy(), rtol=1e-6)
    uniq = np.array([[0, 1], [1, 2]], np.int32)
    np.testing.assert_array_equal(sg.scatter_nd(x, uniq, upd[:2], mode="update"), tf.tensor_scatter_nd_update(x, uniq, upd[:2]).numpy())


def test_scatter_docstring_example_and_modes():
    data = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    upd = np.array([[5, 6, 7], [8, 9, 10]], np.float32)
    np.testing.assert_array_equal(sg.scatter(data, np.array([1, 0]), upd, axis=0, mode="add"), [[9, 11, 13], [9, 11, 13]])
    np.testing.assert_array_equal(sg.scatter(data, np.array([1, 0]), upd, axis=0, mode="update"), [[8, 9, 10], [5, 6, 7]])
    np.testing.assert_array_equal(sg.scatter(data, np.array([2]), upd[:, :1], axis=1, mode="mul"), [[1, 2, 15], [4, 5, 48]])
    np.testing.assert_array_equal(sg.scatter(data, np.array([0, 0]), upd[:, :2], axis=1, mode="max"), [[6, 2, 3], [9, 5, 6]])


# ---------------------------------------------------------------- conv
CONV_CASES = [
    # (x shape, weight shape, strides, dilations, groups, pad_type, pad)
    ((2, 4, 9, 9), (6, 2, 3, 3), (1, 1), (1, 1), 2, "valid", None),
    ((1, 4, 9, 8), (8, 1, 3, 3), (2, 2), (1, 1), 4, "same", None),
    ((1, 3, 10, 9), (4, 3, 3, 2), (2, 1), (2, 3), 1, "same_lower", None),
    ((2, 3, 7, 7), (5, 3, 3, 3), (1, 2), (2, 1), 1, "custom", [1, 2, 0, 3]),
    ((1, 6, 8, 8), (6, 1, 3, 3), (1, 1), (2, 2), 6, "same", None),
    ((1, 3, 11), (4, 3, 4), (3,), (2,), 1, "same", None),
    ((1, 2, 5, 5, 5), (3, 2, 2, 3, 2), (1, 2, 1), (1, 1, 2), 1, "same", None),
    ((1, 4, 6, 6), (4, 2, 1, 1), (2, 2), (1, 1), 2, "valid", None),
]


def _mil_conv_padding(pad_type, spatial, kernel, strides, dilations, pad):
    """(before, after) padding per spatial dim as MIL's ``conv`` states it (coremltools
    ``ops/defs/iOS15/conv.py``): ``custom`` reads ``pad[2i], pad[2i+1]``; ``same`` pads so that
    ``d_out = ceil(d_in / stride)``, its total from coremltools' own ``aggregated_pad``, the odd
    one after; ``same_lower`` puts it before ("extra rows/cols on the top/left")."""
    from coremltools.converters.mil.mil.ops.defs._utils import aggregated_pad

    if pad_type == "custom":
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(kernel))]
    totals = aggregated_pad(pad_type, list(kernel), list(spatial), list(strides), list(dilations))
    if pad_type == "same_lower":
        return [(total - total // 2, total // 2) for total in totals]
    return [(total // 2, total - total // 2) for total in totals]


def _mil_conv_out_shape(pad_type, spatial, kernel, strides, dilations, pad):
    from coremltools.converters.mil.mil.ops.defs._utils import spatial_dimensions_out_shape

    custom = None if pad is None else tuple(pad)
    return [int(d) for d in spatial_dimensions_out_shape(pad_type, tuple(spatial), tuple(kernel), tuple(strides),
                                                         tuple(dilations), custom_pad=custom)]


def test_the_mil_padding_of_the_conv_cases():
    # Worked by hand from the definition: 10 rows, stride 2, kernel 3 dilated 2 (spans 5):
    # total = 2 * ceil(10 / 2) - 10 + 5 - 2 = 3; 9 columns, stride 1, kernel 2 dilated 3 (spans 4):
    # total = 9 - 9 + 4 - 1 = 3. "same_lower" puts the odd one before, "same" after.
    assert _mil_conv_padding("same_lower", (10, 9), (3, 2), (2, 1), (2, 3), None) == [(2, 1), (2, 1)]
    assert _mil_conv_padding("same", (10, 9), (3, 2), (2, 1), (2, 3), None) == [(1, 2), (1, 2)]
    assert _mil_conv_padding("custom", (7, 7), (3, 3), (1, 2), (2, 1), [1, 2, 0, 3]) == [(1, 2), (0, 3)]
    assert _mil_conv_padding("valid", (9, 9), (3, 3), (1, 1), (1, 1), None) == [(0, 0), (0, 0)]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[5]}-g{c[4]}-s{c[2]}-d{c[3]}-{len(c[0]) - 2}d")
def test_conv_matches_reference(case):
    xs, ws, strides, dil, groups, pad_type, pad = case
    x = RNG.standard_normal(xs).astype(np.float32)
    w = RNG.standard_normal(ws).astype(np.float32)
    b = RNG.standard_normal(ws[0]).astype(np.float32)
    got = conv_ops.conv(x, w, b, strides=strides, dilations=dil, groups=groups, pad_type=pad_type, pad=pad)
    # The reference pads as the MIL definition states, not through the kernel's own padding
    # helper, then runs the direct definition unpadded.
    padding = _mil_conv_padding(pad_type, xs[2:], ws[2:], strides, dil, pad)
    want = conv_ops.conv_reference(np.pad(x, [(0, 0), (0, 0), *padding]), w, b, strides=strides, dilations=dil,
                                   groups=groups, pad_type="valid")
    assert got.shape == want.shape
    assert list(got.shape[2:]) == _mil_conv_out_shape(pad_type, xs[2:], ws[2:], strides, dil, pad)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_same_output_shape_follows_spec():
    # "same": out = ceil(in / stride), pad split with the smaller half before.
    x = RNG.standard_normal((1, 1, 7, 8)).astype(np.float32)
    w = np.zeros((1, 1, 4, 4), np.float32)
    w[0, 0, 0, 0] = 1  # picks the top-left of each window: reveals the leading pad
    y = conv_ops.conv(x, w, strides=(2, 3), pad_type="same")
    assert y.shape == (1, 1, 4, 3)
    # total pad h = (4-1)*2 + 4 - 7 = 3 -> before 1; w: (3-1)*3 + 4 - 8 = 2 -> before 1
    np.testing.assert_array_equal(y[0, 0, 1:, 1:], x[0, 0, 1:7:2, 2:8:3][: 3, : 2])
    assert y[0, 0, 0, 0] == 0


def test_conv_transpose_is_adjoint_of_conv():
    for strides, dil, groups in [((1, 1), (1, 1), 1), ((2, 2), (1, 1), 1), ((2, 1), (1, 2), 2)]:
        x = RNG.standard_normal((2, 4, 9, 8))
        w = RNG.standard_normal((6, 4 // groups, 3, 3))
        y = conv_ops.conv(x, w, strides=strides, dilations=dil, groups=groups)
        g = RNG.standard_normal(y.shape)
        # conv_transpose weight is (C_in_of_transpose = C_out_conv, C_out/groups, K): regroup.
        wt = w.reshape(groups, 6 // groups, 4 // groups, 3, 3).transpose(0, 1, 2, 3, 4).reshape(6, 4 // groups, 3, 3)
        xt = conv_ops.conv_transpose(g, wt, strides=strides, dilations=dil, groups=groups)
        full = np.zeros_like(x)
        full[..., : xt.shape[2], : xt.shape[3]] = xt
        np.testing.assert_allclose(np.vdot(y, g), np.vdot(x, full), rtol=1e-5)


def test_conv_transpose_same_and_output_shape():
    tf = pytest.importorskip("tensorflow")
    x = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32)
    w = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)  # (C_in, C_out, kh, kw)
    got = conv_ops.conv_transpose(x, w, strides=(2, 2), pad_type="same")
    want = tf.nn.conv2d_transpose(
        np.transpose(x, (0, 2, 3, 1)), np.transpose(w, (2, 3, 1, 0)), (2, 10, 8, 2), strides=2, padding="SAME"
    ).numpy()
    np.testing.assert_allclose(got, np.transpose(want, (0, 3, 1, 2)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- pool
def _pool_reference(x, k, s, pads, reduce, exclude=False):
    n, c, h, w = x.shape
    (pt, pb), (pl, pr) = pads
    oh = (h + pt + pb - k[0]) // s[0] + 1
    ow = (w + pl + pr - k[1]) // s[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        r0, c0 = i * s[0] - pt, j * s[1] - pl
        rows = [r for r in range(r0, r0 + k[0]) if 0 <= r < h]
        cols = [q for q in range(c0, c0 + k[1]) if 0 <= q < w]
        win = x[:, :, rows][:, :, :, cols]
        if reduce == "max":
            out[:, :, i, j] = win.max(axis=(2, 3))
        else:
            count = len(rows) * len(cols) if exclude else k[0] * k[1]
            out[:, :, i, j] = win.sum(axis=(2, 3)) / count
    return out


@pytest.mark.parametrize("exclude", [False, True])
def test_avg_pool_padding_and_exclude(exclude):
    x = RNG.standard_normal((2, 3, 7, 6))
    got = pool_ops.avg_pool(x, [3, 3], [2, 2], "custom", pad=[1, 1, 2, 0], exclude_padding_from_average=exclude)
    np.testing.assert_allclose(got, _pool_reference(x, (3, 3), (2, 2), ((1, 1), (2, 0)), "avg", exclude))
    got = pool_ops.avg_pool(x, [3, 2], [2, 2], "same", exclude_padding_from_average=exclude)
    np.testing.assert_allclose(got, _pool_reference(x, (3, 2), (2, 2), ((1, 1), (0, 0)), "avg", exclude))


def test_pool_ceil_mode_follows_spec():
    # Spec (_utils.spatial_dimensions_out_shape): out = floor((in + pads - k + s - 1) / s) + 1,
    # minus one if (out - 1) * s >= in + pad_before and there is any padding.
    x = RNG.standard_normal((1, 2, 8, 7))
    got = pool_ops.max_pool(x, [3, 3], [2, 2], "valid", ceil_mode=True)
    assert got.shape == (1, 2, 4, 3)
    want = _pool_reference(x, (3, 3), (2, 2), ((0, 1), (0, 0)), "max")
    np.testing.assert_array_equal(got, want)
    got = pool_ops.avg_pool(x, [2, 2], [3, 3], "custom", pad=[1, 1, 1, 1], ceil_mode=True, exclude_padding_from_average=True)
    assert got.shape == (1, 2, 3, 3)  # 8 -> floor(10 / 3) + 1 = 4, (4-1)*3 >= 8+1 -> 3
    np.testing.assert_allclose(got, _pool_reference(x, (2, 2), (3, 3), ((1, 1), (1, 1)), "avg", True))
    # no padding: no decrement, even when the last window starts past the input end.
    assert pool_ops.max_pool(x, [1, 1], [4, 3], "valid", ceil_mode=True).shape == (1, 2, 3, 3)


def test_pool_shapes_match_coremltools_type_inference():
    from coremltools.converters.mil import Builder as mb

    for ks, st, pad_type, pad, ceil in [
        ([3, 3], [2, 2], "valid", None, True),
        ([2, 3], [2, 3], "custom", [1, 1, 2, 2], True),
        ([2, 2], [3, 3], "custom", [1, 1, 1, 1], True),
        ([1, 1], [3, 4], "valid", None, True),
        ([3, 3], [2, 1], "same", None, False),
        ([3, 2], [3, 2], "same_lower", None, False),
    ]:
        holder = {}

        @mb.program(input_specs=[mb.TensorSpec((1, 2, 8, 7))])
        def prog(x):
            kwargs = dict(x=x, kernel_sizes=ks, strides=st, pad_type=pad_type, ceil_mode=ceil)
            if pad is not None:
                kwargs["pad"] = pad
            holder["v"] = mb.max_pool(**kwargs)
            return holder["v"]

        x = RNG.standard_normal((1, 2, 8, 7))
        got = pool_ops.max_pool(x, ks, st, pad_type, pad=pad, ceil_mode=ceil)
        assert got.shape == tuple(holder["v"].shape), (ks, st, pad_type, got.shape, holder["v"].shape)


def test_l2_pool():
    x = RNG.standard_normal((1, 2, 4, 4))
    got = pool_ops.l2_pool(x, [2, 2], [2, 2], "valid")
    np.testing.assert_allclose(got, np.sqrt(_pool_reference(x * x, (2, 2), (2, 2), ((0, 0), (0, 0)), "avg") * 4))


# ---------------------------------------------------------------- resize
DOC_GRIDS = {
    (5, "UNALIGN_CORNERS"): [0.0, 0.1, 0.5, 0.9, 1.0],
    (5, "ALIGN_CORNERS"): [0.0, 0.25, 0.5, 0.75, 1.0],
    (5, "STRICT_ALIGN_CORNERS"): [0.0, 0.25, 0.5, 0.75, 1.0],
    (5, "DEFAULT"): [0.0, 0.4, 0.8, 1.0, 1.0],
    (5, "OFFSET_CORNERS"): [0.1, 0.3, 0.5, 0.7, 0.9],
    (6, "UNALIGN_CORNERS"): [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0],
    (6, "ALIGN_CORNERS"): [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    (6, "DEFAULT"): [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0],
    (6, "OFFSET_CORNERS"): [1 / 12, 0.25, 5 / 12, 7 / 12, 0.75, 11 / 12],
}


@pytest.mark.parametrize("key", sorted(DOC_GRIDS), ids=lambda k: f"{k[1]}-{k[0]}")
def test_resize_bilinear_docstring_grids(key):
    # With input [0, 1] along the width, the output *is* the sampling grid.
    xout, mode = key
    x = np.array([0.0, 1.0]).reshape(1, 1, 1, 2)
    out = rs.resize_bilinear(x, 1, xout, mode)
    np.testing.assert_allclose(out.reshape(-1), DOC_GRIDS[key], atol=1e-12)


def test_upsample_bilinear_align_corners_and_half_pixel_vs_tf():
    tf = pytest.importorskip("tensorflow")
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    nhwc = np.transpose(x, (0, 2, 3, 1))

    def tf_resize(align, half):
        y = tf.compat.v1.image.resize_bilinear(nhwc, (8, 15), align_corners=align, half_pixel_centers=half)
        return np.transpose(y.numpy(), (0, 3, 1, 2))

    np.testing.assert_allclose(rs.upsample_bilinear(x, 2, 3, align_corners=True), tf_resize(True, False), atol=1e-5)
    np.testing.assert_allclose(rs.upsample_bilinear(x, 2, 3, align_corners=False), tf_resize(False, True), atol=1e-5)
    np.testing.assert_allclose(
        rs.upsample_bilinear(x, 2, 3, align_corners=False, half_pixel_centers=False), tf_resize(False, False), atol=1e-5
    )
    np.testing.assert_allclose(rs.resize_bilinear(x, 8, 15, "DEFAULT"), tf_resize(False, False), atol=1e-5)
    np.testing.assert_allclose(rs.resize_bilinear(x, 8, 15, "STRICT_ALIGN_CORNERS"), tf_resize(True, False), atol=1e-5)
    np.testing.assert_allclose(rs.resize_bilinear(x, 3, 2, "UNALIGN_CORNERS"),
                               np.transpose(tf.compat.v1.image.resize_bilinear(nhwc, (3, 2), half_pixel_centers=True).numpy(), (0, 3, 1, 2)), atol=1e-5)


def test_nearest_neighbor_resizes_vs_tf():
    tf = pytest.importorskip("tensorflow")
    x = RNG.standard_normal((1, 2, 4, 6)).astype(np.float32)
    nhwc = np.transpose(x, (0, 2, 3, 1))
    for size in [(9, 7), (3, 4), (8, 12)]:
        want = tf.compat.v1.image.resize_nearest_neighbor(nhwc, size, half_pixel_centers=True).numpy()
        np.testing.assert_array_equal(rs.resize_nearest_neighbor(x, *size), np.transpose(want, (0, 3, 1, 2)))
        got = rs.resize(x, np.array(size, np.int32), 2, interpolation_mode="NEAREST_NEIGHBOR")
        np.testing.assert_array_equal(got, np.transpose(want, (0, 3, 1, 2)))
    want = tf.compat.v1.image.resize_nearest_neighbor(nhwc, (8, 18)).numpy()
    np.testing.assert_array_equal(rs.upsample_nearest_neighbor(x, 2, 3), np.transpose(want, (0, 3, 1, 2)))
    # fractional scales as the TF frontend emits them: (H_out + 1e-4) / H_in
    want = tf.compat.v1.image.resize_nearest_neighbor(nhwc, (6, 9)).numpy()
    got = rs.upsample_nearest_neighbor(x, (6 + 1e-4) / 4, (9 + 1e-4) / 6)
    np.testing.assert_array_equal(got, np.transpose(want, (0, 3, 1, 2)))
    np.testing.assert_array_equal(rs.resize(x, np.array([0, 5], np.int32), 2, sampling_mode="UNALIGN_CORNERS"),
                                  rs.resize_bilinear(x, 4, 5, "UNALIGN_CORNERS"))


# ---------------------------------------------------------------- normalization
def test_normalizations_closed_form():
    x = RNG.standard_normal((2, 3, 4, 5))
    g, b = RNG.standard_normal(3), RNG.standard_normal(3)
    mean, var = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-5) * g[None, :, None, None] + b[None, :, None, None]
    np.testing.assert_allclose(norm.instance_norm(x, gamma=g, beta=b), want, rtol=1e-10)
    m, v = RNG.standard_normal(3), RNG.random(3) + 0.5
    want = (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + 1e-3) * g[None, :, None, None] + b[None, :, None, None]
    np.testing.assert_allclose(norm.batch_norm(x, m, v, g, b, epsilon=1e-3), want, rtol=1e-10)
    gl, bl = RNG.standard_normal((4, 5)), RNG.standard_normal((4, 5))
    mean, var = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(norm.layer_norm(x, axes=[-2, -1], gamma=gl, beta=bl), (x - mean) / np.sqrt(var + 1e-5) * gl + bl, rtol=1e-10)
    np.testing.assert_allclose(norm.l2_norm(x, axes=[1, 2, 3]), x / np.sqrt((x * x).sum(axis=(1, 2, 3), keepdims=True)), rtol=1e-10)


