"""The compiled kernels give numpy's own bits (ops/_casts.py, _clip_kernels.py, _binary_kernels.py,
_conv_kernels.py against plain numpy twins)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from precision_sweep.emulator.ops import _binary_kernels, _casts, _clip_kernels, _conv_kernels
from precision_sweep.emulator.ops._spatial import pad_amounts
from precision_sweep.emulator.ops.conv import _out_shape, _padded

# Large enough to take the parallel kernels, not numpy's fallback for small arrays.
BIG = 2 * _casts.PARALLEL_MIN_SIZE


def _special_float32() -> np.ndarray:
    """float32 values around every fp16 rounding decision, plus random bit patterns."""
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    exact = halves.astype(np.float32)
    finite = exact[np.isfinite(exact)]
    ordered = np.unique(finite)
    midpoints = (ordered[:-1].astype(np.float64) + ordered[1:]) / 2  # exact ties in float32
    ties = midpoints.astype(np.float32)
    around = np.concatenate([np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))])
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array(
        [65504, 65519.99, 65520, 1e9, np.inf, -np.inf, np.nan, 2.0**-24, 2.0**-25, 2.0**-26, 5.9604645e-08, 0.0, -0.0],
        dtype=np.float32,
    )
    payload_nans = np.array([0x7F800001, 0xFFC00001, 0x7FFFFFFF, 0x7F802000], dtype=np.uint32).view(np.float32)
    return np.concatenate([exact, ties, around, random_bits, edges, payload_nans])


def test_float32_to_float16_gives_numpys_bits():
    values = _special_float32()
    assert values.size > BIG
    with np.errstate(over="ignore", invalid="ignore"):
        expected = values.astype(np.float16).view(np.uint16)
    got = _casts.float32_to_float16(values).view(np.uint16)
    mismatches = np.flatnonzero(got != expected)
    assert mismatches.size == 0, f"{mismatches.size} differ, e.g. {values[mismatches[:5]]}"


def test_round_in_float32_equals_two_numpy_casts():
    values = _special_float32()
    with np.errstate(over="ignore", invalid="ignore"):
        expected = values.astype(np.float16).astype(np.float32)
    got = _casts.round_float16_in_float32(values)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_float16_to_float32_is_exact_for_every_half():
    halves = np.tile(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16), 2).view(np.float16)
    got = _casts.float16_to_float32(halves)
    assert np.array_equal(got.view(np.uint32), halves.astype(np.float32).view(np.uint32))


def test_float16_to_float32_with_flush_reads_subnormals_and_minus_zero_as_zero():
    halves = np.tile(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16), 2).view(np.float16)
    got = _casts.float16_to_float32(halves, flush=True)
    exact = halves.astype(np.float32)
    want = np.where(np.abs(exact) < np.float32(2.0**-14), np.float32(0.0), exact)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert (got.view(np.uint32)[np.abs(exact) < 2.0**-14] == 0).all()  # +0, never -0


def test_float16_nan_to_zero_zeroes_every_nan_and_copies_only_then():
    """The Neural Engine's store of an fp16 result: each NaN (any sign or payload) becomes +0;
    a NaN-free array is returned as it is (one read-only pass), one with NaNs is copied and
    the input left alone."""
    halves = np.tile(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16), 2).view(np.float16)
    exact = halves.astype(np.float32)
    got = _casts.float16_nan_to_zero(halves)
    assert got is not halves and np.isnan(halves).sum() == 2 * 2046  # the input is unchanged
    want = np.where(np.isnan(exact), np.float32(0.0), exact).astype(np.float16)
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))
    finite = halves[np.isfinite(halves)]
    assert finite.size > BIG and _casts.float16_nan_to_zero(finite) is finite
    small = np.array([np.nan, -1.0], dtype=np.float16)
    assert np.array_equal(_casts.float16_nan_to_zero(small).view(np.uint16), np.array([0, 0xBC00], np.uint16))


def test_casts_keep_shape_and_accept_non_contiguous_input():
    x = np.random.default_rng(1).normal(size=(32, 64, 40)).astype(np.float32).transpose(2, 0, 1)
    assert not x.flags.c_contiguous and x.size > BIG
    assert np.array_equal(_casts.float32_to_float16(x), x.astype(np.float16))
    h = x.astype(np.float16)
    assert h[:, ::2].size > BIG
    assert np.array_equal(_casts.float16_to_float32(h[:, ::2]), h[:, ::2].astype(np.float32))


@pytest.mark.parametrize("lo, hi", [(0, 6), (0, np.inf), (-1.5, 2.0**-20), (-np.inf, 65504), (-0.0, 0.0)])
@pytest.mark.parametrize("ties_to_bounds", [True, False])
def test_clip_float16_gives_the_rounded_float32_result_on_every_half(lo, hi, ties_to_bounds):
    halves = np.tile(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16), 2).view(np.float16)
    wide = halves.astype(np.float32)
    if ties_to_bounds:
        expected = np.minimum(np.maximum(wide, np.float32(lo)), np.float32(hi))
    else:
        expected = np.clip(wide, np.float32(lo), np.float32(hi))
    got = _clip_kernels.clip_float16(halves, lo, hi, ties_to_bounds)
    assert got.dtype == np.float16
    assert np.array_equal(got.view(np.uint16), expected.astype(np.float16).view(np.uint16))


def test_value_exact_ops_give_the_same_bits_as_computing_in_fp32():
    """The executor hands these ops float16 as is; rounding their fp32 result agrees."""
    from precision_sweep.emulator.ops.activation import relu, relu6
    from precision_sweep.emulator.ops.elementwise_unary import clip
    from precision_sweep.emulator.ops.tensor_operation import concat, pad

    halves = np.tile(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16), 2).view(np.float16).reshape(8, 4, -1)
    wide = halves.astype(np.float32)
    cases = [
        (relu(halves), relu(wide)),
        (relu6(halves), relu6(wide)),
        (clip(halves, np.float16(-2), np.float16(3.5)), clip(wide, np.float32(-2), np.float32(3.5))),
        (pad(halves, np.array([1, 2, 0, 3])), pad(wide, np.array([1, 2, 0, 3]))),
        (concat([halves, halves[:, :1]], axis=1), concat([wide, wide[:, :1]], axis=1)),
    ]
    for native, computed in cases:
        assert native.dtype == np.float16
        assert np.array_equal(native.view(np.uint16), computed.astype(np.float16).view(np.uint16))


_NUMPY_OPS = {"add": np.add, "sub": np.subtract, "mul": np.multiply}


def _every_half_twice() -> np.ndarray:
    """Every float16 bit pattern (NaN payloads, subnormals, both zeros, infs), twice."""
    return np.tile(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16), 2).view(np.float16)


@pytest.mark.parametrize("op_type", ["add", "sub", "mul"])
def test_binary_float16_rounds_the_float32_result_once(op_type):
    rng = np.random.default_rng(3)
    halves = _every_half_twice()
    others = rng.permutation(halves)
    got = _binary_kernels.binary_float16(op_type, halves, others)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        expected = _NUMPY_OPS[op_type](halves.astype(np.float32), others.astype(np.float32)).astype(np.float16)
        numpy_half = _NUMPY_OPS[op_type](halves, others)
    assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))
    finite = np.isfinite(numpy_half)
    assert np.array_equal(got[finite].view(np.uint16), numpy_half[finite].view(np.uint16))


# (shape of the full operand, shape of the one broadcast): per plane, a squeeze-excite scale and
# a bias per channel, a per-batch value, a scalar, operands of lower rank, few planes.
_PER_PLANE = [((8, 16, 12, 12), (8, 16, 1, 1)), ((8, 16, 12, 12), (16, 1, 1)), ((8, 16, 12, 12), (8, 1, 1, 1)),
              ((8, 16, 12, 12), ()), ((8, 16, 12, 12), (1,)), ((2, 3, 4096), (2, 3, 1)), ((3, 40000), (3, 1)),
              # per row: a channels-last scale, a bias over tokens, a whole row of planes
              ((8, 24, 24, 3), (1, 1, 1, 3)), ((8, 50, 64), (64,)), ((8, 16, 12, 12), (16, 12, 12)),
              ((64, 16, 16, 3), (3,))]  # short rows joined into longer ones


@pytest.mark.parametrize("op_type", ["add", "sub", "mul"])
@pytest.mark.parametrize("full_shape, small_shape", _PER_PLANE)
@pytest.mark.parametrize("small_first", [False, True])
def test_binary_float16_broadcast_per_plane_or_row_gives_numpys_bits(op_type, full_shape, small_shape, small_first):
    rng = np.random.default_rng(5)
    pool = _every_half_twice()
    full = rng.choice(pool, size=full_shape)
    small = rng.choice(pool, size=small_shape)
    x, y = (small, full) if small_first else (full, small)
    got = _binary_kernels.binary_float16(op_type, x, y)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        expected = _NUMPY_OPS[op_type](x.astype(np.float32), y.astype(np.float32)).astype(np.float16)
    assert got is not None and got.shape == expected.shape
    assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))


def test_binary_float16_leaves_other_broadcasts_to_the_caller_and_writes_into_out():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 1, 32)).astype(np.float16)
    assert _binary_kernels.binary_float16("mul", x, rng.normal(size=(5, 1)).astype(np.float16)) is None  # both grow
    assert _binary_kernels.binary_float16("mul", x, rng.normal(size=(4, 1, 1, 1)).astype(np.float16)) is None  # grows x
    y = rng.normal(size=(4, 1, 1)).astype(np.float16)
    expected = (x.astype(np.float32) * y.astype(np.float32)).astype(np.float16)
    assert _binary_kernels.binary_float16("mul", x, y, out=x) is x
    assert np.array_equal(x.view(np.uint16), expected.view(np.uint16))


@pytest.mark.parametrize("op_type", ["add", "sub", "mul"])
def test_binary_kernels_take_float16_with_and_without_broadcasting(op_type):
    from precision_sweep.emulator.registry import KERNELS

    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 8, 6)).astype(np.float16)
    bias = rng.normal(size=(8, 1)).astype(np.float16)
    row = rng.normal(size=(6,)).astype(np.float16)  # not per plane: computed from fp32 copies
    fn, reference = KERNELS[op_type], _NUMPY_OPS[op_type]
    for y in (x[::-1], bias, row):
        with np.errstate(over="ignore"):
            got = fn(x, y).astype(np.float16)
            expected = reference(x.astype(np.float32), y.astype(np.float32)).astype(np.float16)
        assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))


@pytest.mark.parametrize("op_type", ["add", "sub", "mul"])
def test_a_python_scalar_operand_keeps_float32_arithmetic(op_type):
    """A scalar constant reaches the kernel as a Python float: an fp32 op stays in fp32 (numpy's
    weak scalar), not in float64 with one more rounding, and float16 operands are computed
    from their fp32 copies, the scalar as an fp32 value (not rounded to fp16 first)."""
    from precision_sweep.emulator.registry import KERNELS

    rng = np.random.default_rng(7)
    scale = 1 / math.sqrt(48)  # not an fp16 value, nor an fp32 one
    x32 = rng.normal(size=(64, 96)).astype(np.float32)
    got = KERNELS[op_type](x32, scale)
    assert got.dtype == np.float32
    expected = _NUMPY_OPS[op_type](x32, np.float32(scale))
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    in_float64 = _NUMPY_OPS[op_type](x32.astype(np.float64), scale).astype(np.float32)
    assert not np.array_equal(got, in_float64)  # the two differ on these values: the test can tell
    x16 = x32.astype(np.float16)
    got16 = np.asarray(KERNELS[op_type](x16, scale)).astype(np.float16)
    expected16 = _NUMPY_OPS[op_type](x16.astype(np.float32), np.float32(scale)).astype(np.float16)
    assert np.array_equal(got16.view(np.uint16), expected16.view(np.uint16))


@pytest.mark.parametrize("lo, hi", [(0, 6), (0, np.inf), (-0.0, 0.0)])
@pytest.mark.parametrize("ties_to_bounds", [True, False])
def test_clip_float32_gives_numpys_bits(lo, hi, ties_to_bounds):
    values = _special_float32()
    got = _clip_kernels.clip_float32(values, lo, hi, ties_to_bounds)
    if ties_to_bounds:
        expected = np.minimum(np.maximum(values, np.float32(lo)), np.float32(hi))
    else:
        expected = np.clip(values, np.float32(lo), np.float32(hi))
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("lo, hi", [(0, 6), (-0.0, 0.0), (np.float64(-1.5), 2.0)])
def test_clip_kernel_on_float32_gives_the_mil_definitions_bits(lo, hi):
    """The ``clip`` kernel, as an NN relu6 chain builds it: min(max(x, alpha), beta), bit for bit,
    into its own buffer or a reused one (float64 bounds keep numpy's float64 result)."""
    from precision_sweep.emulator.ops.elementwise_unary import clip

    values = np.resize(_special_float32(), 1 << 15)  # past PARALLEL_MIN_SIZE: the compiled pass
    expected = np.minimum(np.maximum(values, lo), hi)
    got = clip(values, lo, hi)
    assert got.dtype == expected.dtype and np.array_equal(got.view(np.uint8), expected.view(np.uint8))
    if expected.dtype == np.float32:
        buffer = values.copy()
        assert clip(buffer, lo, hi, out=buffer) is not None
        assert np.array_equal(buffer.view(np.uint32), expected.view(np.uint32))


def test_add_channel_bias_equals_numpys_broadcast_add():
    rng = np.random.default_rng(5)
    y = rng.normal(size=(8, 24, 17, 19)).astype(np.float32)
    bias = rng.normal(size=24).astype(np.float32)
    expected = y + bias.reshape(24, 1, 1)
    _conv_kernels.add_channel_bias(y, bias)
    assert y.size > BIG and np.array_equal(y, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(
    "shape, kernel, strides, dilations, pad_type",
    [
        ((4, 6, 13, 11), (3, 3), (1, 1), (1, 1), "same"),
        ((4, 6, 13, 11), (7, 7), (2, 2), (1, 1), "same"),
        ((3, 5, 12, 12), (3, 2), (2, 1), (2, 1), "valid"),
        ((2, 4, 9, 9), (3, 3), (1, 2), (1, 1), "custom"),
    ],
)
@pytest.mark.parametrize("tap_major", [False, True])
def test_im2col_matches_the_numpy_columns(dtype, shape, kernel, strides, dilations, pad_type, tap_major):
    x = np.random.default_rng(6).normal(size=shape).astype(dtype)
    weight = np.zeros((8, shape[1]) + kernel, dtype=dtype)
    pad = [1, 0, 2, 1] if pad_type == "custom" else None
    xp = _padded(x, weight, list(strides), pad_type, pad, list(dilations))
    out_shape = _out_shape(xp.shape[2:], kernel, strides, dilations)
    from precision_sweep.emulator.ops.conv import _columns

    expected = _columns(xp, kernel, list(strides), list(dilations), out_shape, 1, tap_major).copy()
    pads = pad_amounts(pad_type, shape[2:], kernel, strides, dilations, pad)
    taps = kernel[0] * kernel[1]
    layout = (shape[0], taps, shape[1]) if tap_major else (shape[0], shape[1], taps)
    out = np.full(layout + out_shape, np.nan, dtype=dtype)
    _conv_kernels.im2col2d(x, kernel, strides, dilations, pads, out, tap_major)
    assert np.array_equal(out.reshape(expected.shape), expected)


def test_round_half_gives_numpys_bits():
    from numba import njit, prange

    @njit(parallel=True)
    def round_all(values, out):
        for i in prange(values.size):
            out[i] = _casts._round_half(values[i])

    values = _special_float32()
    got = np.empty_like(values)
    round_all(values, got)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = values.astype(np.float16).astype(np.float32)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))




def test_float16_linear_activation_and_threshold_are_numpy_s_bits():
    """The NeuralNetwork format's relu6 chain (relu, linear, threshold, linear) on fp16 values:
    the compiled linear_activation and the float32-compared threshold give numpy float16's bits."""
    from precision_sweep.emulator.ops.activation import linear_activation
    from precision_sweep.emulator.ops.elementwise_unary import threshold

    rng = np.random.default_rng(3)
    x = (rng.standard_normal(200_000) * 300).astype(np.float16)
    x[:12] = [0.0, -0.0, 6e-8, -6e-8, 65504, -65504, np.inf, -np.inf, np.nan, 6.0, 5.99, 1e-4]
    with np.errstate(over="ignore", invalid="ignore"):
        for alpha, beta in [(-1.0, 6.0), (0.3, -2.5), (2.0, 0.0), (-1.0, -0.0)]:
            got = linear_activation(x, alpha, beta)
            want = np.float16(alpha) * x + np.float16(beta)
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
        for alpha in (0.0, -0.0, 0.3, -5.0):
            np.testing.assert_array_equal(threshold(x, alpha).view(np.uint16), np.maximum(x, np.float16(alpha)).view(np.uint16))


@pytest.mark.parametrize("kernel_sizes, strides, pad_type, pad, ceil_mode", [
    ([3, 3], [2, 2], "same", None, False),
    ([3, 3], [2, 2], "valid", None, False),
    ([2, 2], [2, 2], "valid", None, True),
    ([3, 2], [1, 2], "same", None, False),
    ([3, 3], [2, 2], "custom", [1, 2, 0, 1], False),
    ([3, 3], [3, 3], "custom", [0, 0, 0, 0], True),
])
def test_float16_max_pool_gives_the_tap_reductions_bits(kernel_sizes, strides, pad_type, pad, ceil_mode):
    """The compiled float16 max_pool against numpy's maximum over the padded taps, in the plain
    kernel's order: signed zeros (the earlier tap wins a tie), NaN, infinities, padding."""
    from precision_sweep.emulator.ops import pool

    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 5, 13, 11)).astype(np.float16)
    flat = x.reshape(-1)
    flat[::7], flat[3::11], flat[::53], flat[::61], flat[::67] = 0.0, -0.0, np.nan, np.inf, -np.inf
    got = pool.max_pool(x, kernel_sizes, strides, pad_type, pad=pad, ceil_mode=ceil_mode)
    win, _, ks, _ = pool._pool(x.astype(np.float16), kernel_sizes, strides, pad_type, pad, ceil_mode, -np.inf)
    expected = pool._reduce_taps(win, len(ks), np.maximum)
    assert got.dtype == np.float16 and got.shape == expected.shape
    assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))


def test_the_float32_cube_is_the_exact_cube_correctly_rounded_and_within_an_ulp_of_numpys_power():
    from fractions import Fraction

    from precision_sweep.emulator.ops.activation import cube_into

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 30, 3000), rng.uniform(-1e-13, 1e-13, 500),  # subnormal cubes
                        [0.0, -0.0, 1e13, -1e13, 2.0**42, np.inf, -np.inf, np.nan]]).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x[:500], np.float32(np.inf))])
    got = np.empty_like(x)
    with np.errstate(all="ignore"):
        cube_into(x, got)
        numpy_power = np.power(x, np.float32(3))
    for value, cube in zip(x.tolist(), got):
        if not math.isfinite(value) or abs(value) ** 3 > float(np.finfo(np.float32).max):
            assert np.isnan(cube) if math.isnan(value) else cube == math.copysign(math.inf, value)
            continue
        exact = Fraction(value) ** 3
        for neighbour in (np.nextafter(cube, np.float32(-np.inf)), np.nextafter(cube, np.float32(np.inf))):
            # no float32 lies nearer the exact cube (ties: either side is within the bound)
            assert abs(exact - Fraction(float(cube))) <= abs(exact - Fraction(float(neighbour)))
    finite = np.isfinite(numpy_power)
    ulps = np.abs(got[finite].view(np.int32).astype(np.int64) - numpy_power[finite].view(np.int32).astype(np.int64))
    assert ulps.max() <= 1


@pytest.mark.parametrize("size", [1000, 300_001])  # one chunk, and split over the threads
def test_float32_sigmoid_silu_and_both_gelus_are_numpys_expression_bit_for_bit(size):
    from scipy.special import erf

    from precision_sweep.emulator.ops.activation import gelu, sigmoid, silu

    x = np.random.default_rng(3).normal(0, 6, size).astype(np.float32)
    x[:5] = [0.0, -0.0, np.inf, -np.inf, np.nan]
    with np.errstate(all="ignore"):
        expected = 0.5 * (np.tanh(0.5 * x) + 1)
        exact_gelu = 0.5 * x * (1 + erf(x / math.sqrt(2)).astype(np.float32))  # as the MIL kernel writes it
        cube = (x.astype(np.float64) ** 2 * x).astype(np.float32)  # x**3 rounded once (test below)
        tanh_gelu = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * cube)))  # the spec's expression
        for got, want in ((sigmoid(x), expected), (silu(x), x * expected), (gelu(x), exact_gelu),
                          (gelu(x, mode="TANH_APPROXIMATION"), tanh_gelu)):
            assert got.dtype == np.float32 and got.shape == x.shape
            np.testing.assert_array_equal(got.view(np.uint32)[5:], want.view(np.uint32)[5:])
            np.testing.assert_array_equal(got[:5], want[:5])
