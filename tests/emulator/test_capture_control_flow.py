"""Capture inside control flow: values computed in ``while_loop``/``cond`` blocks are recorded
once per iteration as ``var@<iteration path>`` with their dataflow, and the drift diagnosis of
a recurrent model ranks the ops inside its loop, iteration by iteration.

Hand-built pymil programs check the naming (nested loops, the branch that ran) against closed
form; a tf_keras GRU converted at fp32 and fp16 checks the diagnosis end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
from _emu_helpers import convert
from test_control_flow import BATCH, FEATURES, STEPS, _tf_keras_rnn

from precision_sweep.diagnose.drift import capture, drift_table, rank_ops
from precision_sweep.emulator import Emulator


def _program(build, shape=(2,)):
    from coremltools.converters.mil import Builder as mb

    return mb.program(input_specs=[mb.TensorSpec(shape=shape)])(build)


def _nested_loops(x):
    """Outer loop of 2 iterations around an inner loop of 3 that doubles ``acc``; then +1."""
    from coremltools.converters.mil import Builder as mb

    def outer_body(i, acc):
        def inner_body(j, a):
            return mb.add(x=j, y=1, name="inner_count"), mb.mul(x=a, y=2.0, name="inner_mul")

        inner = mb.while_loop(_cond=lambda j, a: mb.less(x=j, y=3, name="inner_less"),
                              _body=inner_body, loop_vars=(np.int32(0), acc), name="inner_loop")
        return mb.add(x=i, y=1, name="outer_count"), mb.add(x=inner[1], y=1.0, name="outer_add")

    return mb.while_loop(_cond=lambda i, acc: mb.less(x=i, y=2, name="outer_less"),
                         _body=outer_body, loop_vars=(np.int32(0), x), name="outer_loop")[1]


def test_nested_loops_record_one_entry_per_iteration_under_their_path():
    x = np.array([1.0, -0.5], np.float32)
    dataflow: dict = {}
    outputs, values = Emulator(_program(_nested_loops)).predict({"x": x}, capture=True, dataflow=dataflow)
    expected, acc = {}, x
    for i in range(2):
        for j in range(3):
            acc = acc * 2
            expected[f"inner_mul@{i}.{j}"] = acc
        acc = acc + 1
        expected[f"outer_add@{i}"] = acc
    for name, value in expected.items():
        op_type, got = values[name]
        assert op_type in ("mul", "add")
        np.testing.assert_array_equal(got, value)
    body_values = [name for name in values if name.startswith(("inner_mul@", "outer_add@"))]
    assert len(body_values) == len(expected)  # no body entry past the last iteration
    # cond blocks are checked once more than the body runs, on the same path.
    assert {f"inner_less@1.{j}" for j in range(4)} <= set(values)
    assert {f"outer_less@{i}" for i in range(3)} <= set(values)
    np.testing.assert_array_equal(next(iter(outputs.values())), acc)
    # Dataflow: a loop variable is the previous iteration's result, the initial value first.
    assert dataflow["inner_mul@1.0"] == ["outer_add@0"]
    assert dataflow["inner_mul@1.2"] == ["inner_mul@1.1"]
    assert dataflow["inner_mul@0.0"] == ["x"]
    assert dataflow["outer_add@1"] == ["inner_loop_1@1"]


def _loop_with_branches(x):
    """Three iterations; even ones take ``even_mul``, odd ones ``odd_sub``."""
    from coremltools.converters.mil import Builder as mb

    def body(i, acc):
        even = mb.equal(x=mb.mod(x=i, y=2), y=0)
        picked = mb.cond(pred=even, _true_fn=lambda: mb.mul(x=acc, y=3.0, name="even_mul"),
                         _false_fn=lambda: mb.sub(x=acc, y=1.0, name="odd_sub"), name="branch")
        return mb.add(x=i, y=1), picked

    return mb.while_loop(_cond=lambda i, acc: mb.less(x=i, y=3), _body=body, loop_vars=(np.int32(0), x))[1]


def test_cond_records_the_branch_that_ran_on_the_loop_path():
    x = np.array([2.0, 4.0], np.float32)
    _, values = Emulator(_program(_loop_with_branches)).predict({"x": x}, capture=True)
    ran = {name for name in values if name.split("@")[0] in ("even_mul", "odd_sub")}
    assert ran == {"even_mul@0", "odd_sub@1", "even_mul@2"}
    np.testing.assert_array_equal(values["odd_sub@1"][1], x * 3 - 1)
    np.testing.assert_array_equal(values["branch@2"][1], (x * 3 - 1) * 3)


def test_a_run_without_capture_records_nothing():
    x = np.array([1.0, 2.0], np.float32)
    emulator = Emulator(_program(_nested_loops))
    outputs, _ = emulator.predict({"x": x}, capture=True)
    lean = emulator.predict({"x": x})
    np.testing.assert_array_equal(next(iter(lean.values())), next(iter(outputs.values())))
    from precision_sweep.emulator.executor import execute

    assert execute(emulator.plan, {"x": x})[1] == {}


@pytest.fixture(scope="module")
def gru_drift():
    """The drift table of a tf_keras GRU's fp16 program against its fp32 program."""
    model = _tf_keras_rnn("GRU")
    shape = [(BATCH, STEPS, FEATURES)]
    x = np.random.default_rng(1).normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    reference = capture(Emulator(convert(model, shape), "cpu_only"), x)
    variant = capture(Emulator(convert(model, shape, precision="fp16"), "cpu_only"), x)
    return drift_table(variant, reference), variant


def test_gru_drift_ranks_the_ops_inside_the_loop_per_iteration(gru_drift):
    table, _ = gru_drift
    ranked = rank_ops(table)
    in_loop = ranked[ranked["iteration"] != ""]
    # The loop condition is checked once more than the body runs.
    assert set(in_loop["iteration"]) == {str(k) for k in range(STEPS + 1)}
    assert set(in_loop[in_loop["op_type"] == "less"]["iteration"]) == {str(k) for k in range(STEPS + 1)}
    assert all(var.endswith("@" + it) for var, it in zip(in_loop["var"], in_loop["iteration"]))
    # The GRU cell's own compute (matmuls, gates) has a row in every iteration.
    cell = in_loop[in_loop["op_type"].isin(["matmul", "sigmoid", "tanh"])]
    per_op = cell.groupby("key")["iteration"].nunique()
    assert len(per_op) >= 4 and (per_op == STEPS).all(), per_op
    # fp16 error enters inside the loop: the top of the ranking is loop ops with a real gain.
    top = ranked.head(5)
    assert (top["iteration"] != "").all() and (top["gain"] > 0).all(), top[["var", "gain"]]
    assert np.isfinite(in_loop["rel_error"]).all() and (in_loop["rel_error"] < 0.05).all()


def test_gru_drift_gain_follows_the_loop_from_iteration_to_iteration(gru_drift):
    table, variant = gru_drift
    h_later = [n for n in variant.inputs_of if n.endswith(f"@{STEPS - 1}") and "MatMul_1" in n]
    assert h_later
    # The recurrent matmul of the last iteration reads (through a cast) the previous state.
    sources = variant.inputs_of[h_later[0]]
    chain = sources + [s for n in sources for s in variant.inputs_of.get(n, [])]
    assert any(s.endswith(f"@{STEPS - 2}") for s in chain), chain
    # The loop's outputs carry the last iteration's error: they add (almost) none.
    loop_outputs = table[(table["op_type"] == "while_loop")]
    assert not loop_outputs.empty and (loop_outputs["gain"].abs() < 1e-6).all(), loop_outputs[["var", "gain"]]
