"""Every published probe of the Neural Engine, replayed on the emulator (one MIL program each).

Sources: ane-guide (github.com/sbryngelson/ane-guide), part-1-machine/03-numerics.md, measured
on an M1 (and on an M5 where the probe says so); coremltools issues #2687 and #2690. Each test
asserts the value the emulator gives, which :data:`numerics.PROBES` records beside the measured
value; where they differ the probe is marked not reproduced and docs/numerics.md says so.
"""

from __future__ import annotations

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from precision_sweep.emulator import Emulator  # noqa: E402
from precision_sweep.emulator.numerics import PROBES  # noqa: E402

PROBE = {p.key: p for p in PROBES}
F16 = np.float16


def _run(build, shape, x, device="m1", dtype=types.fp16):
    """Run the one-input fp16 program ``build(x)`` on the Neural Engine model of ``device``."""

    @mb.program(input_specs=[mb.TensorSpec(shape=shape, dtype=dtype)], opset_version=ct.target.iOS16)
    def program(x):
        return build(x)

    emulator = Emulator(program, compute_units="cpu_and_ne", device=device)
    assert all(p["unit"] == "ane" for p in emulator.placements()), emulator.placements()
    outputs = emulator.predict({"x": np.asarray(x, dtype=F16)})
    return [np.asarray(v, dtype=np.float64) for v in outputs.values()]


def _reduce_via_matmul(values, device="m1"):
    values = np.asarray(values, dtype=F16).reshape(1, -1)
    ones = np.ones((values.shape[1], 1), F16)
    (out,) = _run(lambda x: mb.matmul(x=x, y=ones), values.shape, values, device)
    return float(out[0, 0])


def _values(text):
    """A probe's values: "inf", "2**-24" and plain numbers."""
    return [2.0 ** float(v[3:]) if v.startswith("2**") else float(v) for v in text.split()]


def test_probe_table_says_which_probes_the_model_reproduces():
    # the three the wide-accumulator model cannot match are named as such (docs/numerics.md)
    assert sorted(p.key for p in PROBES if not p.reproduced) == ["logsumexp_cliff", "survivors"]


def test_sixteen_thousand_ones_sum_exactly_in_the_wide_accumulator():
    assert _reduce_via_matmul([1.0] * 16000) == _values(PROBE["sum_16000_ones"].emulated)[0] == 16000


def test_worked_sum_4096_plus_1024_ones():
    # The first tile [4096, 1, 1, 1] rounds to 4096 in fp16; the wide accumulator holds
    # 4096 + 1021 = 5117, which the output port rounds to 5116 (fp16 spacing 4 there).
    assert _reduce_via_matmul([4096.0] + [1.0] * 1024) == float(PROBE["worked_sum"].measured) == 5116


def test_cancellation_survivors():
    got = [_reduce_via_matmul([b, -b, 1.0] * 16) for b in (1024, 3000, 4090, 4096, 8000, 16000, 30000)]
    assert got == _values(PROBE["survivors"].emulated)
    measured = _values(PROBE["survivors"].measured)
    assert got[0] == measured[0] and got[3:] == measured[3:]  # 16 at 1024, the floor of 4 from 4096
    expected = dict(zip((1024, 3000, 4090, 4096, 8000, 16000, 30000), got))
    for b in (1024, 4096, 30000):  # layout independent, as measured
        variants = [[b, 1.0, -b] * 16, [1.0, b, -b] * 16, [-b, b, 1.0] * 16]
        assert {_reduce_via_matmul(v) for v in variants} == {expected[b]}


def test_mac_output_port_saturates_at_2_to_the_15():
    linear = lambda w: (lambda x: mb.linear(x=x, weight=np.asarray(w, F16)))  # noqa: E731
    (k1_ok,) = _run(linear([[1.0]]), (1, 1), [[32752.0]])
    (k1_inf,) = _run(linear([[1.0]]), (1, 1), [[32768.0]])
    (k2_ok,) = _run(linear([[1.0, 1.0]]), (1, 2), [[16376.0, 16376.0]])
    (k2_inf,) = _run(linear([[1.0, 1.0]]), (1, 2), [[16384.0, 16384.0]])
    assert (k1_ok[0, 0], k2_ok[0, 0]) == (32752.0, 32752.0)
    assert np.isposinf(k1_inf[0, 0]) and np.isposinf(k2_inf[0, 0])
    assert PROBE["mac_ceiling_linear"].reproduced


def test_conv_of_two_terms_saturates_and_a_single_channel_1x1_conv_holds_the_fp16_range():
    two = lambda x: mb.conv(x=x, weight=np.ones((1, 2, 1, 1), F16))  # noqa: E731
    one = lambda x: mb.conv(x=x, weight=np.ones((1, 1, 1, 1), F16))  # noqa: E731
    (y2,) = _run(two, (1, 2, 1, 1), np.full((1, 2, 1, 1), 16384.0))
    (y1,) = _run(one, (1, 1, 1, 1), np.full((1, 1, 1, 1), 60000.0))
    assert np.isposinf(y2).all() and (y1 == 60000.0).all()


def test_an_interior_partial_past_the_ceiling_saturates_although_the_sum_is_zero():
    assert _reduce_via_matmul([20000.0, 20000.0, 0, 0, -20000.0, -20000.0, 0, 0]) == np.inf
    (total,) = _run(lambda x: mb.reduce_sum(x=x, axes=[1]), (1, 2), [[60000.0, 0.0]])
    assert total[0] == 60000.0  # reductions hold the fp16 range


def test_nan_enters_as_plus_inf():
    nan = np.full((1, 1), np.nan)

    def ops(x):
        return (mb.add(x=x, y=F16(0)), mb.relu(x=x), mb.sigmoid(x=x), mb.tanh(x=x), mb.erf(x=x), mb.exp(x=x),
                mb.maximum(x=x, y=F16(1)))

    got = [float(v[0, 0]) for v in _run(ops, (1, 1), nan)]
    assert got == _values(PROBE["nan_table"].measured)
    (soft,) = _run(lambda x: mb.softmax(x=x, axis=-1), (1, 3), [[np.nan, 1.0, 2.0]])
    assert soft[0].tolist() == _values(PROBE["nan_softmax"].measured)


def test_indeterminate_forms_return_plus_zero():
    def ops(x):  # x = [inf, 0, -1]
        inf, zero, minus_one = mb.slice_by_index(x=x, begin=[0], end=[1]), mb.slice_by_index(x=x, begin=[1], end=[2]), mb.slice_by_index(x=x, begin=[2], end=[3])
        return (mb.sub(x=inf, y=inf), mb.mul(x=zero, y=inf), mb.sqrt(x=minus_one), mb.rsqrt(x=minus_one, epsilon=F16(0)),
                mb.log(x=minus_one))

    got = [v[0] for v in _run(ops, (3,), [np.inf, 0.0, -1.0], device="m5")]
    assert got == [0.0] * 5 and all(np.signbit(v) == 0 for v in got)


def test_signed_zero_is_dropped_before_the_reciprocal():
    def ops(x):
        return mb.inverse(x=x, epsilon=F16(0)), mb.rsqrt(x=x, epsilon=F16(0)), mb.sqrt(x=x)

    got = [v[0] for v in _run(ops, (1,), [-0.0])]
    assert got[:2] == [np.inf, np.inf] and got[2] == 0.0 and not np.signbit(got[2])


def test_activation_tables():
    (e,) = _run(lambda x: mb.exp(x=x), (2,), [11.09375, 11.1015625])
    assert e.tolist() == [65504.0, np.inf]
    (sp,) = _run(lambda x: mb.softplus(x=x), (3,), [10.40625, 10.4140625, np.inf])
    assert sp.tolist() == _values(PROBE["softplus_cliff"].emulated)
    (ss,) = _run(lambda x: mb.softsign(x=x), (1,), [np.inf])
    (lg,) = _run(lambda x: mb.log(x=x), (1,), [0.0])
    assert [ss[0], lg[0]] == _values(PROBE["table_sentinels"].measured)


def test_channel_logsumexp_collapses_past_ln_65504_over_c():
    grid = np.arange(7.60, 7.66, 2.0**-8, dtype=np.float32).astype(F16)
    x = np.repeat(grid[:, None], 32, axis=1)[:, :, None, None]  # (values, C=32, 1, 1)
    (out,) = _run(lambda v: mb.reduce_log_sum_exp(x=v, axes=[1], keep_dims=False), x.shape, x)
    collapsed = grid[out.reshape(-1) == 0.0]
    assert float(collapsed[0]) == float(PROBE["logsumexp_cliff"].emulated)
    assert np.all(np.abs(out.reshape(-1)[: np.argmax(out.reshape(-1) == 0)] - (grid[: np.argmax(out.reshape(-1) == 0)] + np.log(32))) < 0.02)


def test_softmax_subtracts_the_max():
    (out,) = _run(lambda x: mb.softmax(x=x, axis=-1), (1, 4), [[1000.0, 1.0, 2.0, 3.0]])
    assert out[0].tolist() == _values(PROBE["softmax_shift"].measured)
    (equal,) = _run(lambda x: mb.softmax(x=x, axis=-1), (1, 4), [[5.0] * 4])
    assert equal[0].tolist() == [0.25] * 4


@pytest.mark.parametrize("device, reproduces_gain", [("m1", True), ("m2", True), ("m5", False)])
def test_width_slice_with_a_nonzero_begin_has_a_x16_gain_on_m1_and_m2(device, reproduces_gain):
    width = lambda begin: (lambda x: mb.slice_by_index(x=x, begin=[0, begin], end=[1, begin + 1]))  # noqa: E731
    (ok,) = _run(width(1), (1, 2), [[0.0, 4094.0]], device)
    (over,) = _run(width(1), (1, 2), [[0.0, 4096.0]], device)
    (zero_begin,) = _run(width(0), (1, 2), [[4096.0, 0.0]], device)
    (height,) = _run(lambda x: mb.slice_by_index(x=x, begin=[1, 0], end=[2, 1]), (2, 1), [[0.0], [4096.0]], device)
    assert ok[0, 0] == 4094.0 and zero_begin[0, 0] == 4096.0 and height[0, 0] == 4096.0
    assert (over[0, 0] == np.inf) == reproduces_gain and (over[0, 0] == 4096.0) == (not reproduces_gain)


def test_denormals_pass_elementwise_ops_and_are_flushed_in_the_m1_mac_only():
    tiny = 2.0**-24
    add, mul = _run(lambda x: (mb.add(x=x, y=F16(0)), mb.mul(x=x, y=F16(1))), (1,), [tiny])
    assert (add[0], mul[0]) == (tiny, tiny)
    assert _reduce_via_matmul([tiny, tiny], "m1") == 0.0
    assert _reduce_via_matmul([tiny, tiny], "m5") == 2.0**-23


def test_a_2049_partial_rounds_to_even_on_m1_and_away_on_m5():
    partial = [2048.0, 0, 0, 0, 1.0, 0, 0, 0]  # the tie forms in the wide accumulator
    assert _reduce_via_matmul(partial, "m1") == 2048.0
    assert _reduce_via_matmul(partial, "m5") == 2050.0


# ---------------------------------------------------------------------------------------
# Why these tile semantics: among every candidate below (tile width, lane lattice, in-tile
# arithmetic, in-tile rounding), the model's (4 contiguous lanes, added in order with fp16
# rounding, ties to even) reproduces the most published wide-accumulator probes of any
# candidate whose result is independent of the order of [b, -b, 1], as the guide measured.

def _round16(value, mode):
    if mode == "even":
        with np.errstate(over="ignore"):
            return float(np.float16(value))
    if value == 0:
        return 0.0
    exponent = max(np.floor(np.log2(abs(value))), -14)
    spacing = 2.0 ** (exponent - 10)
    quotient = abs(value) / spacing
    steps = np.floor(quotient + 0.5) if mode == "away" else np.floor(quotient)
    return float(np.sign(value) * steps * spacing)


def _candidate_sum(values, width, lattice, inner, mode):
    n = len(values)
    if lattice == "contiguous":
        tiles = [list(range(i, min(n, i + width))) for i in range(0, n, width)]
    else:  # tile j of each block of `lattice` lanes holds lanes j, j + k, j + 2k, ...
        tiles = []
        for start in range(0, n, lattice):
            block = list(range(start, min(n, start + lattice)))
            count = (len(block) + width - 1) // width
            tiles += [block[j::count] for j in range(count)]
    total = 0.0
    for tile in tiles:
        terms = [values[i] for i in tile]
        if inner == "exact":
            part = _round16(sum(terms), mode)
        elif inner == "sequential":
            part = terms[0]
            for term in terms[1:]:
                part = _round16(part + term, mode)
            part = _round16(part, mode)
        else:  # pairwise
            while len(terms) > 1:
                terms = [_round16(terms[i] + terms[i + 1], mode) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
            part = _round16(terms[0], mode)
        total += part
    return _round16(total, "even")


def test_the_model_tile_semantics_score_best_among_layout_independent_candidates():
    import itertools

    magnitudes = (1024, 3000, 4090, 4096, 8000, 16000, 30000)
    measured = _values(PROBE["survivors"].measured)
    scores = {}
    for width, lattice, inner, mode in itertools.product((2, 4, 8), ("contiguous", 8, 16, 32, 64),
                                                         ("exact", "sequential", "pairwise"), ("even", "away", "zero")):
        if lattice != "contiguous" and lattice <= width:
            continue
        run = lambda values: _candidate_sum(values, width, lattice, inner, mode)  # noqa: E731
        survivors = [run([b, -b, 1.0] * 16) for b in magnitudes]
        independent = all(run([b, 1.0, -b] * 16) == run([b, -b, 1.0] * 16) == run([1.0, b, -b] * 16) for b in magnitudes)
        score = sum(s == m for s, m in zip(survivors, measured)) + (run([4096.0] + [1.0] * 1024) == 5116) + (run([1.0] * 16000) == 16000)
        scores[(width, lattice, inner, mode)] = (score, independent)
    assert len(scores) == 126
    best_independent = max(score for score, independent in scores.values() if independent)
    assert scores[(4, "contiguous", "sequential", "even")] == (best_independent, True) == (7, True)


def test_the_numerics_page_tables_are_the_generated_ones():
    from pathlib import Path

    from precision_sweep.emulator.numerics import behaviours_markdown, probes_markdown

    readme = (Path(__file__).resolve().parents[2] / "docs" / "numerics.md").read_text()

    def block(name):
        return readme.split(f"<!-- {name}:start -->\n")[1].split(f"\n<!-- {name}:end -->")[0]

    assert block("numerics-table") == behaviours_markdown()
    assert block("numerics-probes") == probes_markdown()
