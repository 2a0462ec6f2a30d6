"""Accumulators: the compiled sums equal their plain twins bit for bit, under every model,
and the kernels that sum go through them (conv, depthwise conv, conv_transpose, pools)."""

from __future__ import annotations

import numpy as np
import pytest

from precision_sweep.emulator.numerics import FP16_ACCUMULATION, FP32_ACCUMULATION, Accumulation
from precision_sweep.emulator.ops import _accumulate as acc
from precision_sweep.emulator.ops import _accumulate_kernels as compiled

RNG = np.random.default_rng(11)
TILES_M1 = Accumulation("tiles", tile=4, ceiling=32768.0, flush_subnormals=True, ties="even")
TILES_M5 = Accumulation("tiles", tile=4, ceiling=32768.0, flush_subnormals=False, ties="away")
MODELS = {"fp32": FP32_ACCUMULATION, "fp16": FP16_ACCUMULATION, "tiles_m1": TILES_M1, "tiles_m5": TILES_M5}


def _halves(shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float16).astype(np.float32)


def _every_half_and_its_neighbours():
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    finite = np.sort(halves[np.isfinite(halves)])
    midpoints = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)
    with np.errstate(invalid="ignore"):
        return np.concatenate([
            halves, midpoints, np.nextafter(midpoints, np.float32(np.inf)), np.nextafter(midpoints, np.float32(-np.inf)),
            np.array([65519.99, 65520.0, 70000.0, -65520.0, 2.0**-25, 3 * 2.0**-26], np.float32),
            RNG.standard_normal(200_000).astype(np.float32) * 3000,
        ])


def test_round_half_is_numpys_cast_and_round_half_away_breaks_ties_outward():
    from numba import njit

    from precision_sweep.emulator.ops._half import round_half, round_half_away

    @njit
    def both(x, even, away):
        for i in range(x.size):
            even[i] = round_half(x[i])
            away[i] = round_half_away(x[i])

    x = _every_half_and_its_neighbours()
    even, away = np.empty_like(x), np.empty_like(x)
    both(x, even, away)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(np.float16).astype(np.float32)
    same = lambda a, b: np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b)))  # noqa: E731
    assert same(even, want)
    assert same(away, acc.round_half_away_reference(x))
    ties = np.float32([2049.0, -2049.0, 2051.0, 0.5 + 2.0**-12, 65520.0])
    np.testing.assert_array_equal(acc.round_half_away_reference(ties), [2050.0, -2050.0, 2052.0, 0.5 + 2.0**-11, np.inf])


# Two shapes compile the kernel for array layouts of their own (about 20 s each on 2 cores,
# cold): slow tier, to keep the default suite within its budget.
_OWN_COMPILE = pytest.mark.slow


@pytest.mark.parametrize("shape_a, shape_b", [((5, 11), (11, 7)), pytest.param((3, 4, 9), (9, 6), marks=_OWN_COMPILE),
                                              ((2, 1, 8, 13), (3, 13, 5)), ((7, 40), (40, 3)), ((9, 64), (64, 33)),
                                              # terms past the last step of 16: 11, 15, 1, 3 (one tile and a part)
                                              ((6, 27), (27, 300)), ((2, 3, 31), (31, 17)),
                                              pytest.param((5, 17), (2, 17, 20), marks=_OWN_COMPILE),
                                              ((7, 147), (147, 9))])
@pytest.mark.parametrize("away", [False, True])
@pytest.mark.parametrize("ceiling, flush", [(0.0, False), (300.0, True), (32768.0, False)])
def test_tiles_matmul_matches_its_plain_twin(shape_a, shape_b, away, ceiling, flush):
    a, b = _halves(shape_a, 30), _halves(shape_b, 30)
    a[..., 0] = 2.0**-20  # subnormal products and outputs, for the flush
    tracked = acc.tiles_matmul_reference(a, b, 4, away, ceiling, flush)
    got = compiled.tiles_matmul(a, b, 4, away, ceiling, flush, track=True)
    assert got.shape == tracked.shape and np.array_equal(got.view(np.uint32), tracked.view(np.uint32))
    # untracked, the ceiling sees the outputs only: equal whenever no partial crossed it
    untracked = compiled.tiles_matmul(a, b, 4, away, ceiling, flush)
    only_outputs = acc.tiles_matmul_reference(a, b, 4, away, 0.0, flush)
    if ceiling:
        only_outputs = np.where(only_outputs >= ceiling, np.inf, np.where(only_outputs <= -ceiling, -np.inf, only_outputs))
    assert np.array_equal(untracked.view(np.uint32), only_outputs.astype(np.float32).view(np.uint32))
    odd = compiled.tiles_matmul(a, b, 3, away, ceiling, flush, track=True)  # the generic tile loop
    assert np.array_equal(odd.view(np.uint32), acc.tiles_matmul_reference(a, b, 3, away, ceiling, flush).view(np.uint32))


@pytest.mark.parametrize("shape_a, shape_b", [((5, 11), (11, 7)), ((3, 4, 19), (19, 6)), ((64, 37), (4, 37, 5))])
def test_fp16_matmul_and_sums_match_their_plain_twins(shape_a, shape_b):
    a, b = _halves(shape_a, 20), _halves(shape_b)
    assert np.array_equal(compiled.fp16_matmul(a, b), acc.fp16_matmul_reference(a, b))
    rows = _halves((37, 300), 100)
    assert np.array_equal(compiled.sum_rows(rows, False, scale=0.25), acc.fp16_sum_reference(rows, 0.25))
    for away in (False, True):
        assert np.array_equal(compiled.sum_rows(rows, True, 4, away, 0.5), acc.tiles_sum_reference(rows, 4, away, 0.5))


@pytest.mark.parametrize("length", [1, 5, 196, 9000])  # 9000: rows too long for a task's block
def test_sums_over_the_last_axis_read_in_place_equal_the_moved_sums(length):
    x = _halves((700, length), 30)
    for tiles, tile, away in ((False, 4, False), (True, 4, False), (True, 4, True), (True, 3, False)):
        want = compiled.sum_rows(np.ascontiguousarray(x.T), tiles, tile, away, 0.5)
        got = compiled.sum_last(x, tiles, tile, away, 0.5)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    # the accumulator takes this path for trailing axes, and the moved one for the others
    x4 = _halves((3, 4, 5, length), 30)
    for spec in (FP16_ACCUMULATION, Accumulation("tiles", tile=4)):
        model = acc.Accumulator(spec)
        for axes in ((3,), (2, 3), (1,), (0, 2)):
            keep = [a for a in range(4) if a not in axes]
            moved = np.transpose(x4, list(axes) + keep).reshape(-1, int(np.prod([x4.shape[a] for a in keep])))
            want = (acc.fp16_sum_reference(moved) if spec.kind == "fp16"
                    else acc.tiles_sum_reference(moved, 4)).reshape([x4.shape[a] for a in keep])
            assert np.array_equal(model.sum(x4, axes).view(np.uint32), want.view(np.uint32))



@pytest.mark.parametrize("axes", [(1, 2), (2, 1), (1,), (3,), (1, 2, 3)])
def test_sums_over_a_transposed_view_equal_the_moved_sums(axes):
    """A transpose op's NHWC view of NCHW data, upcast (the same view of its float32 copy) and
    summed as the model sums, in place when the summed axes lie last in memory."""
    from precision_sweep.emulator.ops._casts import float16_to_float32

    nchw = _halves((3, 40, 30, 31), 30).astype(np.float16)  # large enough for the compiled cast
    nhwc = nchw.transpose(0, 2, 3, 1)
    upcast = float16_to_float32(nhwc, flush=True)
    assert np.array_equal(upcast, acc.flush_subnormals(nhwc.astype(np.float32)))
    assert not upcast.flags.c_contiguous  # read in memory order: no transposing copy
    for spec in (FP16_ACCUMULATION, Accumulation("tiles", tile=4)):
        keep = [a for a in range(4) if a not in axes]
        moved = np.transpose(upcast, list(axes) + keep).reshape(-1, int(np.prod([upcast.shape[a] for a in keep])))
        want = (acc.fp16_sum_reference(moved, 0.25) if spec.kind == "fp16"
                else acc.tiles_sum_reference(moved, 4, scale=0.25)).reshape([upcast.shape[a] for a in keep])
        got = acc.Accumulator(spec).sum(upcast, axes, scale=0.25)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))

def test_the_fp16_running_sum_stalls_where_the_tiles_do_not():
    # 16000 ones: an fp16 running sum stops at 2048, the wide accumulator is exact
    ones = np.ones((1, 16000), np.float32)
    column = np.ones((16000, 1), np.float32)
    assert acc.Accumulator(FP16_ACCUMULATION).matmul(ones, column)[0, 0] == 2048.0
    assert acc.Accumulator(TILES_M1).matmul(ones, column)[0, 0] == 16000.0
    assert acc.Accumulator(FP32_ACCUMULATION).matmul(ones, column)[0, 0] == 16000.0


def test_each_fp16_step_rounds_the_sum_to_float32_and_then_to_fp16():
    # The CPU model's step: the exact product joins the fp16 sum in float32, which is then
    # rounded to fp16. A half-precision FMA would round once; here the float32 rounding makes
    # an exact tie of 0.22906494699... (1876.50005 fp16 ulps), which then goes to even (1876):
    # one rounding would give 1877. numerics.py's cpu.accumulation row states the difference.
    s, a, b = np.float32(0.2318115234375), np.float32(-22.390625), np.float32(0.0001226663589477539)
    exact = float(s) + float(a) * float(b)
    ulp = 2.0**-13
    assert exact / ulp == pytest.approx(1876.5000457763672, abs=1e-9)
    assert float(np.float16(exact)) / ulp == 1877.0  # one rounding
    weights = np.array([[1.0, a]], np.float32)
    column = np.array([[s], [b]], np.float32)
    model = acc.Accumulator(FP16_ACCUMULATION)
    assert model.matmul(weights, column)[0, 0] / ulp == 1876.0
    assert acc.fp16_matmul_reference(weights, column)[0, 0] / ulp == 1876.0


def test_the_mac_ceiling_uses_tracked_partials_only_when_a_bound_says_they_could_cross():
    accumulator = acc.Accumulator(TILES_M1)
    small = _halves((4, 64), 1.0), _halves((64, 5), 1.0)
    assert acc._bounded(*small, 32768.0)
    # a partial of 40000 cancelled back to 0 by the last tile: inf, although the sum is 0
    a = np.float32([[20000.0, 20000.0, 0, 0, -20000.0, -20000.0, 0, 0]])
    assert not acc._bounded(a, np.ones((8, 1), np.float32), 32768.0)
    assert accumulator.matmul(a, np.ones((8, 1), np.float32))[0, 0] == np.inf
    assert accumulator.matmul(a, np.ones((8, 1), np.float32), saturate=False)[0, 0] == 0.0
    assert acc.Accumulator(TILES_M5).matmul(np.float32([[32752.0]]), np.float32([[1.0]]))[0, 0] == 32752.0
    assert acc.Accumulator(TILES_M5).matmul(np.float32([[-32768.0]]), np.float32([[1.0]]))[0, 0] == -np.inf


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize(
    "shape, kernel, strides, dilations, pad_type, mult",
    [
        ((4, 24, 17, 19), (3, 3), (1, 1), (1, 1), "same", 1),
        ((4, 24, 17, 19), (3, 3), (2, 2), (1, 1), "same", 1),
        ((3, 16, 20, 20), (5, 5), (2, 1), (1, 1), "valid", 1),
        ((3, 16, 20, 20), (3, 3), (1, 1), (2, 3), "same", 1),
        ((2, 8, 15, 15), (3, 2), (1, 2), (1, 1), "custom", 2),
        ((64, 32, 3, 3), (3, 3), (2, 2), (1, 1), "same", 1),
        # strided: each phase of the padded plane read as a plane of its own
        ((2, 8, 16, 16), (5, 5), (2, 2), (1, 1), "same", 1),
        ((2, 8, 16, 17), (3, 3), (2, 2), (2, 2), "valid", 1),  # trailing rows and columns unread
        ((2, 8, 19, 14), (3, 5), (3, 2), (2, 1), "custom", 2),
        # 3x3 strided with output rows of 32 or more: the fp32 kernel sums row by row
        ((2, 4, 70, 68), (3, 3), (2, 2), (1, 1), "same", 1),
        ((2, 4, 21, 66), (3, 3), (2, 1), (1, 2), "custom", 2),
        # stride 2 in the tiles: the plane read as four phases, odd and even padding first
        ((2, 8, 19, 14), (3, 3), (2, 2), (1, 1), "custom", 2),
        ((2, 8, 20, 13), (3, 3), (2, 2), (1, 1), "valid", 1),
        # other kernels in the tiles with rows of 32 outputs or more: row by row
        ((2, 4, 12, 70), (5, 5), (1, 1), (1, 1), "same", 1),
        ((2, 4, 9, 70), (2, 4), (1, 1), (1, 1), "valid", 1),
    ],
)
def test_compiled_depthwise_matches_the_numpy_path_bit_for_bit(model, shape, kernel, strides, dilations, pad_type, mult):
    from precision_sweep.emulator.ops._spatial import pad_amounts
    from precision_sweep.emulator.ops.conv import _depthwise, _depthwise_compiled, _out_shape, _padded

    x = _halves(shape, 20)
    weight = _halves((shape[1] * mult, 1) + kernel)
    pad = [1, 0, 2, 1] if pad_type == "custom" else None
    x[0, 0, 0, :3] = [2.0**-20, -(2.0**-17), -0.0]  # subnormal operands and products
    accumulator = acc.Accumulator(MODELS[model])
    if accumulator.spec.flush_subnormals:  # the executor flushes MAC operands as it upcasts them
        x, weight = acc.flush_subnormals(x), acc.flush_subnormals(weight)
    xp = _padded(x, weight, list(strides), pad_type, pad, list(dilations))
    expected = _depthwise(xp, weight, list(strides), list(dilations), _out_shape(xp.shape[2:], kernel, strides, dilations), accumulator)
    pads = pad_amounts(pad_type, shape[2:], kernel, strides, dilations, pad)
    got = _depthwise_compiled(x, weight, strides, dilations, pads, accumulator)
    assert got.shape == expected.shape
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("shape, kernel, strides, dilations, pad_type", [
    ((3, 6, 23, 21), (3, 3), (1, 1), (1, 1), "same"),
    ((3, 6, 23, 70), (3, 3), (2, 2), (1, 1), "same"),  # rows of 35 outputs: summed row by row
    ((3, 6, 23, 21), (3, 3), (2, 1), (2, 1), "valid"),
    ((3, 6, 23, 21), (5, 5), (1, 1), (1, 1), "same"),  # a pass per kernel row
    ((3, 6, 23, 21), (3, 5), (2, 2), (1, 2), "same"),
    ((3, 6, 23, 21), (2, 4), (1, 1), (1, 1), "valid"),  # the pass-per-tap kernel
])
def test_the_fp32_depthwise_kernel_rounds_each_product_before_adding_it(shape, kernel, strides, dilations, pad_type):
    # float32 operands (not fp16 values): products round, so a fused multiply-add or another
    # order of the taps would change bits. The numpy path computes each tap's products, then
    # adds them in row-major order from +0.
    from precision_sweep.emulator.ops._spatial import pad_amounts
    from precision_sweep.emulator.ops.conv import _depthwise, _depthwise_compiled, _out_shape, _padded

    x = RNG.standard_normal(shape).astype(np.float32) * np.float32(3.7)
    weight = RNG.standard_normal((shape[1], 1) + kernel).astype(np.float32)
    x[0, 0, 0, :4] = [-0.0, np.inf, np.nan, 1e-40]
    xp = _padded(x, weight, list(strides), pad_type, None, list(dilations))
    with np.errstate(invalid="ignore"):
        expected = _depthwise(xp, weight, list(strides), list(dilations), _out_shape(xp.shape[2:], kernel, strides, dilations),
                              acc.FP32)
    got = _depthwise_compiled(x, weight, strides, dilations, pad_amounts(pad_type, shape[2:], kernel, strides, dilations, None),
                              acc.FP32)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    # the data tells orders of rounding apart: the float64 sums, rounded once, differ somewhere
    exact = _depthwise(xp.astype(np.float64), weight.astype(np.float64), list(strides), list(dilations),
                       expected.shape[2:], acc.FP32).astype(np.float32)
    finite = np.isfinite(expected)
    assert (exact[finite] != got[finite]).sum() > 10



@pytest.mark.parametrize("model", ["tiles_m1", "tiles_m5"])
@pytest.mark.parametrize("shape, strides", [
    ((3, 6, 14, 14), (1, 1)),  # rows of 14 outputs: one pass over the whole padded plane
    ((3, 6, 15, 15), (2, 2)),  # strided, rows of 8: the whole plane, outputs picked
    ((2, 4, 9, 70), (1, 1)),  # rows of 70: row by row
    ((2, 4, 9, 70), (2, 2)),  # strided rows of 35: row by row
])
def test_the_tiles_depthwise_kernel_saturates_as_the_numpy_path_does(model, shape, strides):
    # values whose partial sums cross the MAC ceiling (32768) in some outputs only, some
    # coming back under it by the last tile; infinities and NaN among the inputs
    from precision_sweep.emulator.ops._spatial import pad_amounts
    from precision_sweep.emulator.ops.conv import _depthwise, _depthwise_compiled, _out_shape, _padded

    x = _halves(shape, 3000.0)
    weight = _halves((shape[1], 1, 3, 3), 3.0)
    x[0, 0, 1, :3] = [np.inf, np.nan, -np.inf]
    accumulator = acc.Accumulator(MODELS[model])
    xp = _padded(x, weight, list(strides), "same", None, [1, 1])
    with np.errstate(invalid="ignore", over="ignore"):
        expected = _depthwise(xp, weight, list(strides), [1, 1], _out_shape(xp.shape[2:], (3, 3), strides, (1, 1)),
                              accumulator)
        got = _depthwise_compiled(x, weight, strides, (1, 1), pad_amounts("same", shape[2:], (3, 3), strides, (1, 1), None),
                                  accumulator)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    saturated = np.isinf(expected) & ~np.isinf(x[:, :, :: strides[0], :: strides[1]][..., : expected.shape[2], : expected.shape[3]])
    assert 0 < saturated.mean() < 0.5

@pytest.mark.parametrize("model", list(MODELS))
def test_conv_sums_four_channels_of_one_tap_per_tile(model):
    """The im2col conv (compiled 2-D columns, tap-major for the fp16 models) equals the
    accumulator's matmul over explicitly built tap-major columns."""
    from precision_sweep.emulator.ops import conv as conv_ops
    from precision_sweep.emulator.ops._spatial import windows

    x = _halves((2, 8, 7, 6), 3)
    w = _halves((5, 8, 3, 3))
    accumulator = acc.Accumulator(MODELS[model])
    got = conv_ops.conv(x, w, strides=[1, 1], pad_type="valid", accumulator=accumulator)
    win = windows(x, (3, 3), (1, 1), (1, 1))  # (N, C, OH, OW, 3, 3)
    n, c, oh, ow = win.shape[:4]
    if accumulator.rounds_to_fp16:  # rows tap * C + channel
        cols = np.ascontiguousarray(win.transpose(0, 4, 5, 1, 2, 3)).reshape(n, 9 * c, oh * ow)
        rows = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(5, -1)
    else:
        cols = np.ascontiguousarray(win.transpose(0, 1, 4, 5, 2, 3)).reshape(n, c * 9, oh * ow)
        rows = w.reshape(5, -1)
    want = accumulator.matmul(rows, cols).reshape(n, 5, oh, ow)
    assert got.dtype == (np.float16 if accumulator.rounds_to_fp16 else np.float32)
    assert np.array_equal(got, want)
    exact = conv_ops.conv_reference(x, w, strides=[1, 1])
    np.testing.assert_allclose(got, exact, rtol=0, atol=0.01 * np.abs(exact).max())


@pytest.mark.parametrize("model", ["tiles_m1", "tiles_m5"])
@pytest.mark.parametrize("scale", [1.0, 400.0])  # partials far under the MAC ceiling; crossing it
def test_a_wide_pointwise_conv_in_the_tiles_checks_the_ceiling_from_its_upcast(model, scale):
    """A 1x1 conv whose images are not folded (more positions than twice its channels) reads
    its float16 input's peaks from the upcast's pass: the same result as the tracked twin."""
    from precision_sweep.emulator.ops import conv as conv_ops

    x = _halves((2, 8, 12, 12), scale).astype(np.float16)
    x[0, 0, 0, :2] = [np.float16(2.0**-20), -0.0]  # a subnormal operand, flushed on M1
    w = _halves((5, 8, 1, 1), 20.0)
    accumulator = acc.Accumulator(MODELS[model])
    spec = accumulator.spec
    got = conv_ops.conv(x, w, strides=[1, 1], pad_type="valid", accumulator=accumulator)
    operand = acc.flush_subnormals(x.astype(np.float32)) if spec.flush_subnormals else x.astype(np.float32)
    want = acc.tiles_matmul_reference(w.reshape(5, 8), operand.reshape(2, 8, 144), spec.tile, spec.ties == "away",
                                      spec.ceiling, spec.flush_subnormals)
    assert got.dtype == np.float16
    assert np.array_equal(got.astype(np.float32), want.reshape(2, 5, 12, 12))
    assert np.isinf(want).any() == (scale > 1)

@pytest.mark.parametrize("model", ["fp16", "tiles_m1", "tiles_m5"])
@pytest.mark.parametrize(
    "shape, kernel, strides, c_out, chunk_bytes",
    [
        ((3, 8, 5, 4), (3, 3), (1, 1), 24, None),  # folded im2col (fewer positions than channels)
        ((3, 8, 5, 5), (3, 3), (1, 1), 16, None),  # folded: 25 positions, under twice 16 channels
        ((3, 8, 7, 6), (3, 3), (2, 2), 16, None),  # strided, folded
        ((2, 4, 6, 6), (3, 3), (1, 1), 5, None),  # wide images: one product each
        ((5, 6, 4, 4), (1, 1), (2, 2), 20, None),  # 1x1 stride 2: the bound scans the (smaller) columns
        ((5, 6, 3, 3), (1, 1), (1, 1), 20, None),  # pointwise, folded
        ((2, 6, 5, 5), (1, 1), (1, 1), 4, None),  # pointwise as it is
        ((5, 4, 6, 5), (3, 3), (1, 1), 40, 4 * 9 * 4 * 30 * 2),  # im2col in chunks of 2 images
        ((3, 5, 4, 3, 3), (1, 1, 1), (1, 1, 1), 40, None),  # 3-D pointwise, folded
        ((2, 5, 4, 4, 3), (2, 2, 2), (1, 1, 1), 50, None),  # 3-D im2col columns, folded
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("from_half", [False, True])
def test_the_folded_conv_equals_the_per_image_products(monkeypatch, model, shape, kernel, strides, c_out, chunk_bytes,
                                                        with_bias, from_half):
    """The fp16 models fold a groups-1 conv's images into one product (im2col writes the
    columns side by side, the bias pass reads the result back per image): the same sums as
    one product per image over that image's tap-major columns, plus the rounded bias. Given
    the float16 input itself (``from_half``, as the executor passes it), im2col or the fold
    reads it as the accumulator reads MAC operands (M1: the fp16 subnormal flushed): the same
    bits as from the upcast input."""
    from precision_sweep.emulator.ops import conv as conv_ops

    if chunk_bytes:
        monkeypatch.setattr(conv_ops, "COLUMNS_BYTES", chunk_bytes)
    x16 = _halves(shape, 3).astype(np.float16)
    x16[0, 0].flat[0] = 2.0**-20  # an fp16 subnormal
    w = _halves((c_out, shape[1]) + kernel)
    bias = _halves((c_out,), 4) if with_bias else None
    accumulator = acc.Accumulator(MODELS[model])
    x = accumulator.operand(x16)  # the executor's upcast of a MAC operand
    assert (x[0, 0].flat[0] == 0) == accumulator.spec.flush_subnormals
    nd = len(kernel)
    got = conv_ops.conv(x16 if from_half else x, w, bias, strides=list(strides), pad_type="same",
                        accumulator=accumulator)
    xp = conv_ops._padded(x, w, list(strides), "same", None, [1] * nd)
    out_shape = conv_ops._out_shape(xp.shape[2:], kernel, strides, [1] * nd)
    tap_major = accumulator.rounds_to_fp16
    cols = conv_ops._columns(xp, kernel, list(strides), [1] * nd, out_shape, 1, tap_major).copy()
    rows = conv_ops._weight_rows(w, 1, tap_major)[0]
    want = np.stack([accumulator.matmul(rows, cols[i, 0], cols.shape[2] >= 2) for i in range(shape[0])])
    want = want.reshape((shape[0], c_out) + out_shape)
    if with_bias:
        want = accumulator.add_bias(want, bias, channel_axis=1)
    want = want.astype(np.float16)  # the op's output as the executor stores it
    assert got.dtype == np.float16  # stored by the bias pass, read back per image in place
    assert got.shape == want.shape and got.flags.c_contiguous
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))


def test_the_bound_takes_a_given_row_limit_and_sees_non_finite_weights():
    a = _halves((6, 40), 2)
    b = _halves((3, 40, 9), 5)
    limits = np.abs(b).max(axis=(0, 2))
    want = float(np.max(np.abs(a) @ limits))
    assert compiled.abs_row_bound(a, limits) == pytest.approx(want, rel=1e-5)
    per_batch = float(np.max(np.abs(a) @ np.abs(b).max(axis=2).T))  # each image's own limits
    assert per_batch < want
    assert compiled.abs_row_bound(a, np.abs(b).max(axis=2)) == pytest.approx(per_batch, rel=1e-5)
    assert acc._bounded(a, b, per_batch * 1.02) and not acc._bounded(a, b, per_batch)
    assert acc._bounded(a, b, want * 1.02, limits) and not acc._bounded(a, b, want, limits)
    for bad in (np.inf, -np.inf, np.nan):
        worse = a.copy()
        worse[4, 7] = bad
        assert compiled.abs_row_bound(worse, limits) == np.inf
        assert not acc._bounded(worse, b, 1e30)


def test_conv_transpose_is_the_scatter_of_its_definition():
    from precision_sweep.emulator.ops import conv as conv_ops

    x = RNG.standard_normal((2, 6, 5, 4)).astype(np.float32)
    w = RNG.standard_normal((6, 2, 3, 2)).astype(np.float32)  # (C_in, C_out/groups, K), groups 3
    strides, dilations, groups = (2, 3), (1, 2), 3
    got = conv_ops.conv_transpose(x, w, strides=list(strides), dilations=list(dilations), groups=groups)
    # definition: every input position scatters its kernel-weighted value
    k = [(s - 1) * d + 1 for s, d in zip(w.shape[2:], dilations)]
    full = [(i - 1) * s + e for i, s, e in zip(x.shape[2:], strides, k)]
    want = np.zeros((2, 6, *full))
    for n in range(2):
        for ci in range(6):
            g = ci // 2
            for oi in range(2):
                co = g * 2 + oi
                for i in range(x.shape[2]):
                    for j in range(x.shape[3]):
                        for a in range(w.shape[2]):
                            for b in range(w.shape[3]):
                                want[n, co, i * strides[0] + a * dilations[0], j * strides[1] + b * dilations[1]] += x[n, ci, i, j] * w[ci, oi, a, b]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["fp16", "tiles_m1"])
def test_pools_cumsum_and_sums_follow_the_model(model):
    from precision_sweep.emulator.ops import pool, tensor_operation

    accumulator = acc.Accumulator(MODELS[model])
    x = _halves((2, 3, 8, 8), 50)
    got = pool.avg_pool(x, [2, 2], [2, 2], "valid", accumulator=accumulator)
    taps = [x[:, :, a::2, b::2] for a in (0, 1) for b in (0, 1)]
    want = acc.fp16_sum_reference(np.stack(taps).reshape(4, -1)) if model == "fp16" else acc.tiles_sum_reference(np.stack(taps).reshape(4, -1))
    np.testing.assert_array_equal(got, want.reshape(got.shape) / 4)
    seq = _halves((3, 40), 100)
    running = tensor_operation.cumsum(seq, axis=1, accumulator=accumulator)
    assert running.shape == seq.shape and np.all(running == running.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(running, np.cumsum(seq.astype(np.float64), axis=1), rtol=0.02, atol=1.0)
    # Where the models part: ones added to 2048, where fp16 steps by 2 (prefixes 2048..2051). An
    # fp16 running sum rounds each 2049 back to 2048 and stalls; the wide accumulator rounds each
    # exact prefix once (2049 and 2051 are ties: to even on M1, away from zero on M5).
    ones = tensor_operation.cumsum(np.array([[2048, 1, 1, 1]], np.float32), axis=1, accumulator=accumulator)
    np.testing.assert_array_equal(ones, [{"fp16": [2048, 2048, 2048, 2048], "tiles_m1": [2048, 2048, 2050, 2052]}[model]])
    mean = accumulator.sum(np.full((4, 4096), 10.0, np.float32), (1,), scale=1 / 4096)
    if model == "tiles_m1":
        assert np.all(mean == 10.0)  # the wide accumulator holds 40960 exactly
    else:
        assert np.all(mean == 8.0)  # an fp16 running sum stalls at 2**15: 32768 + 10 rounds back


def test_abs_max_and_the_rounded_bias_equal_numpy():
    x = _halves((3, 5, 700), 100)
    x[0, 0, 3] = np.nan  # ignored, as the bound needs
    want = np.nanmax(np.abs(x), axis=-1)
    assert np.array_equal(compiled.abs_max_last_axis(x), want)
    y = _halves((2, 4, 3, 3), 1000)
    bias = _halves((4,), 50)
    with np.errstate(over="ignore"):
        per_channel = (y + bias.reshape(4, 1, 1)).astype(np.float16).astype(np.float32)
    assert np.array_equal(compiled.add_bias_rounded(y, bias, 1), per_channel)
    strided = np.ascontiguousarray(y.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)  # a folded conv's result
    assert np.array_equal(compiled.add_bias_rounded(strided, bias, 1), per_channel)
    assert np.array_equal(compiled.add_bias_rounded(y[..., ::2], bias, 1), per_channel[..., ::2])
    b3 = _halves((3,), 50)
    with np.errstate(over="ignore"):
        last = (y + b3).astype(np.float16).astype(np.float32)
    assert np.array_equal(compiled.add_bias_rounded(y, b3, None), last)


def test_the_bias_pass_stores_float16_with_numpys_bits():
    """With ``as_float16`` the bias pass writes the op's float16 output itself: the bits numpy's
    cast of the float32 result gives, NaN, infinities, -0 and subnormals included, read in
    place from a folded conv's per-image view, with or without a bias."""
    y = _halves((3, 6, 40), 1000)
    y[0, 0, :6] = [np.nan, np.inf, -np.inf, -0.0, 2.0**-24, 65504.0]
    bias = _halves((6,), 50)
    bias[1] = 60000.0  # pushes some sums past the fp16 range
    with np.errstate(over="ignore", invalid="ignore"):
        per_channel = (y + bias.reshape(6, 1)).astype(np.float16)
    strided = np.ascontiguousarray(y.transpose(1, 0, 2)).transpose(1, 0, 2)
    for source in (y, strided):
        got = compiled.add_bias_rounded(source, bias, 1, as_float16=True)
        assert got.dtype == np.float16 and got.flags.c_contiguous
        assert np.array_equal(got.view(np.uint16), per_channel.view(np.uint16))
        stored = compiled.add_bias_rounded(source, None, 1, as_float16=True)
        assert np.array_equal(stored.view(np.uint16), y.astype(np.float16).view(np.uint16))
    fp16 = acc.Accumulator(MODELS["fp16"])
    assert fp16.add_bias(y, None, channel_axis=1, as_float16=True).dtype == np.float16
    assert acc.FP32.add_bias(y, None, channel_axis=1, as_float16=True) is y  # fp32 ops stay fp32


def test_the_committed_unrolled_kernel_is_what_the_generator_writes():
    from pathlib import Path

    from precision_sweep.emulator.ops import _tiles_codegen

    committed = Path(_tiles_codegen.__file__).with_name("_tiles_unrolled.py").read_text()
    assert committed == _tiles_codegen.source()
