"""Control flow and lists (spec: ops/defs/iOS15/control_flow.py).

Models: a legacy Keras 2 (tf_keras) GRU and LSTM, whose programs are a ``while_loop`` over
TensorLists, and a ``tf.while_loop`` ``tf.function``, checked against TensorFlow. Kernels: the
list ops against closed-form numpy, and nested blocks on hand-built pymil programs.
"""

from __future__ import annotations

import numpy as np
import pytest

from _emu_helpers import assert_matches_tf, convert, emulate, quiet
from precision_sweep.emulator import Emulator
from precision_sweep.emulator.ops import control_flow as cf

STEPS, FEATURES, CLASSES, BATCH = 5, 3, 4, 3


def _tf_keras_rnn(layer: str, **kwargs):
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(3)
    inputs = tf_keras.Input((STEPS, FEATURES))
    x = getattr(tf_keras.layers, layer)(6, **kwargs)(inputs)
    outputs = tf_keras.layers.Dense(CLASSES, activation="softmax")(x)
    return tf_keras.Model(inputs, outputs)


@pytest.mark.parametrize("layer", ["GRU", "LSTM"])
def test_tf_keras_rnn_while_loop_matches_tf(layer):
    model = _tf_keras_rnn(layer)
    mlmodel = convert(model, [(BATCH, STEPS, FEATURES)])
    x = np.random.default_rng(0).normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    (got,), emu = emulate(mlmodel, {"input_0": x})
    assert {"while_loop", "list_read", "list_write", "list_gather"} <= emu.op_types()
    (ref,) = [np.asarray(model(x, training=False))]
    assert_matches_tf(got, ref)


def test_tf_keras_gru_fp16_stays_close_and_lists_keep_their_declared_dtype():
    model = _tf_keras_rnn("GRU")
    mlmodel = convert(model, [(BATCH, STEPS, FEATURES)], precision="fp16")
    x = np.random.default_rng(1).normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    emu = Emulator(mlmodel, compute_units="cpu_and_ne")
    outputs, intermediates = emu.predict({"input_0": x}, capture=True)
    ref = np.asarray(model(x, training=False))
    got = np.asarray(next(iter(outputs.values())), dtype=np.float32)
    assert np.max(np.abs(got - ref)) < 5e-3
    assert all(isinstance(v, np.ndarray) for _, v in intermediates.values())  # tensors only
    from precision_sweep.emulator.executor import run_step

    env = {**emu.plan.constants, "input_0": x}
    for step in emu.plan.steps:
        run_step(step, env)
    declared = {name: dtype for step in emu.plan.steps for name, dtype in step.outputs}
    lists = {n: v for n, v in env.items() if isinstance(v, cf.TensorList) and n in declared}
    assert lists
    for name, ls in lists.items():
        assert ls.dtype == declared[name]
        assert all(e.dtype == ls.dtype for e in ls.elements)


def test_tf_while_loop_function_matches_tf():
    import coremltools as ct
    import tensorflow as tf

    quiet()

    @tf.function(input_signature=[tf.TensorSpec((2, 3), tf.float32, name="x")])
    def doubling(x):
        def body(i, acc):
            return i + 1, acc * 1.5 + tf.cast(i, tf.float32)

        return tf.while_loop(lambda i, acc: i < 4, body, [tf.constant(0), x])[1]

    mlmodel = ct.convert(
        [doubling.get_concrete_function()], source="tensorflow", convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS16, compute_precision=ct.precision.FLOAT32,
    )
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    emu = Emulator(mlmodel, compute_units="cpu_only")
    assert "while_loop" in emu.op_types()
    (got,) = emu.predict({emu.input_names[0]: x}).values()
    assert_matches_tf(got, doubling(x).numpy(), top1=False)


# --- nested blocks on hand-built programs ---------------------------------------------------


def _program(build, shape=(2,)):
    from coremltools.converters.mil import Builder as mb

    return mb.program(input_specs=[mb.TensorSpec(shape=shape)])(build)


def test_while_loop_runs_cond_before_each_body_and_reads_outer_values():
    from coremltools.converters.mil import Builder as mb

    def build(x):
        step = mb.mul(x=x, y=2.0)  # an outer value the body reads

        def cond(i, acc):
            return mb.less(x=i, y=3)

        def body(i, acc):
            return mb.add(x=i, y=1), mb.add(x=acc, y=step)

        return mb.while_loop(_cond=cond, _body=body, loop_vars=(np.int32(0), x))[1]

    emu = Emulator(_program(build))
    x = np.array([1.0, -2.0], dtype=np.float32)
    (got,) = emu.predict({"x": x}).values()
    np.testing.assert_allclose(got, x + 3 * 2 * x)
    assert emu.op_types() == {"mul", "while_loop", "less", "add"}


def test_while_loop_whose_cond_is_false_at_once_returns_loop_vars():
    from coremltools.converters.mil import Builder as mb

    def build(x):
        return mb.while_loop(
            _cond=lambda i, acc: mb.less(x=i, y=0),
            _body=lambda i, acc: (mb.add(x=i, y=1), mb.mul(x=acc, y=0.0)),
            loop_vars=(np.int32(0), x),
        )[1]

    x = np.array([4.0, 5.0], dtype=np.float32)
    (got,) = Emulator(_program(build)).predict({"x": x}).values()
    np.testing.assert_array_equal(got, x)


def test_cond_takes_the_branch_of_the_predicate():
    from coremltools.converters.mil import Builder as mb

    def build(x):
        pred = mb.greater(x=mb.reduce_sum(x=x), y=0.0)
        return mb.cond(
            pred=pred, _true_fn=lambda: mb.mul(x=x, y=10.0), _false_fn=lambda: mb.sub(x=x, y=1.0)
        )

    emu = Emulator(_program(build))
    pos, neg = np.array([1.0, 2.0], np.float32), np.array([-1.0, -2.0], np.float32)
    np.testing.assert_array_equal(next(iter(emu.predict({"x": pos}).values())), pos * 10)
    np.testing.assert_array_equal(next(iter(emu.predict({"x": neg}).values())), neg - 1)


def test_block_ops_are_cast_to_their_declared_dtype():
    from coremltools.converters.mil import Builder as mb

    def build(x):
        def body(i, acc):
            return mb.add(x=i, y=1), mb.mul(x=acc, y=np.float16(3.0))

        x16 = mb.cast(x=x, dtype="fp16")
        return mb.while_loop(_cond=lambda i, acc: mb.less(x=i, y=12), _body=body,
                             loop_vars=(np.int32(0), x16))[1]

    (got,) = Emulator(_program(build), compute_units="cpu_only").predict(
        {"x": np.array([1.0, 3.0], np.float32)}
    ).values()
    assert got.dtype == np.float16
    # 3**12 = 531441 overflows float16 at the 11th step (3**11 = 177147 > 65504).
    np.testing.assert_array_equal(got, np.array([np.inf, np.inf], np.float16))


# --- list kernels against closed-form numpy -------------------------------------------------


def _list(n=0, shape=(2, 3), dtype="fp32", dynamic=True):
    return cf.make_list(elem_shape=[np.int32(d) for d in shape], init_length=np.int32(n),
                        dynamic_length=dynamic, dtype=dtype)


def test_make_list_has_init_length_zero_elements_of_elem_shape():
    ls = _list(3, dtype="fp16")
    assert len(ls) == 3 and cf.list_length(ls) == 3
    np.testing.assert_array_equal(cf.list_gather(ls, np.arange(3)), np.zeros((3, 2, 3), np.float16))
    assert cf.list_gather(ls, np.arange(3)).dtype == np.float16


def test_scatter_then_gather_is_a_permutation():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 2, 3)).astype(np.float32)
    indices = np.array([2, 0, 3, 1], np.int32)
    ls = cf.list_scatter(_list(0), indices, values)
    assert len(ls) == 4
    order = np.array([1, 3, 0, 2], np.int32)
    np.testing.assert_array_equal(cf.list_gather(ls, order), values[np.argsort(indices)][order])
    np.testing.assert_array_equal(cf.list_read(ls, np.int32(2)), values[0])


def test_list_write_returns_a_new_list_and_grows_a_dynamic_one():
    ls = _list(1)
    value = np.full((2, 3), 7.0, np.float32)
    grown = cf.list_write(ls, np.int32(3), value)
    assert len(ls) == 1 and len(grown) == 4
    np.testing.assert_array_equal(cf.list_gather(grown, np.arange(4)),
                                  np.stack([np.zeros((2, 3))] * 3 + [value]))


def test_fixed_length_list_refuses_to_grow():
    with pytest.raises(IndexError, match="fixed-length"):
        cf.list_write(_list(2, dynamic=False), np.int32(2), np.zeros((2, 3), np.float32))


def test_symbolic_elem_shape_is_fixed_by_the_first_write():
    ls = cf.make_list(elem_shape=[np.array("s0"), np.int32(3)], init_length=np.int32(2),
                      dynamic_length=True, dtype="int32")
    with pytest.raises(ValueError, match="never written"):
        cf.list_read(ls, np.int32(0))
    ls = cf.list_write(ls, np.int32(1), np.ones((5, 3), np.int32))
    np.testing.assert_array_equal(cf.list_read(ls, np.int32(0)), np.zeros((5, 3), np.int32))
    assert cf.list_gather(ls, np.array([1, 1], np.int32)).shape == (2, 5, 3)


def test_unsupported_nested_op_is_refused_at_load():
    from coremltools.converters.mil import Builder as mb

    from precision_sweep.emulator import UnsupportedOpError

    def build(x):
        def body(i, acc):
            return mb.add(x=i, y=1), mb.erf(x=acc)

        return mb.while_loop(_cond=lambda i, acc: mb.less(x=i, y=2), _body=body,
                             loop_vars=(np.int32(0), x))[1]

    from precision_sweep.emulator.registry import KERNELS

    saved = KERNELS.pop("erf", None)
    try:
        with pytest.raises(UnsupportedOpError, match="erf"):
            Emulator(_program(build))
    finally:
        if saved is not None:
            KERNELS["erf"] = saved


def test_concat_of_scalars_is_a_vector():
    # RNN initial states with a flexible batch: concat(shape(x)[0], units) ("..._zeros_packed").
    from precision_sweep.emulator.ops.tensor_operation import concat

    got = concat([np.int32(7), np.array(6, np.int32)], axis=0)
    np.testing.assert_array_equal(got, np.array([7, 6], np.int32))
    assert concat([np.float32(1.5)], axis=-1).shape == (1,)


@pytest.mark.parametrize("layer", ["GRU", "LSTM", "SimpleRNN"])
def test_keras3_unrolled_rnn_with_flexible_batch_matches_tf(layer):
    # A flexible batch keeps shape(x)[0] a runtime value: the zero initial state is built by
    # concat of 0-D values (..._zeros_packed), which the emulator must stack per the spec.
    import coremltools as ct
    import keras
    import tensorflow as tf

    quiet()
    keras.utils.set_random_seed(4)
    inputs = keras.Input((STEPS, FEATURES))
    x = getattr(keras.layers, layer)(6, unroll=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(x))
    fn = tf.function(lambda a: model(a, training=False)).get_concrete_function(
        tf.TensorSpec((None, STEPS, FEATURES), tf.float32, name="input_0")
    )
    batch = ct.RangeDim(lower_bound=1, upper_bound=8, default=1)
    mlmodel = ct.convert(
        [fn], source="tensorflow", convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
        compute_precision=ct.precision.FLOAT32,
        inputs=[ct.TensorType(name="input_0", shape=(batch, STEPS, FEATURES))],
    )
    x = np.random.default_rng(2).normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    (got,), emu = emulate(mlmodel, {"input_0": x})
    assert_matches_tf(got, np.asarray(model(x, training=False)))


def test_frontend_cache_keeps_a_while_loop_program_in_memory_only(tmp_path, caplog):
    # milproto keeps no list lengths: a recurrent program read back would convert to other list
    # declarations than a plain ct.convert, so the store refuses it and the converter keeps it
    # in memory (tests/compression/test_cache.py checks stored programs convert identically).
    import logging
    import uuid

    import coremltools as ct
    import tensorflow as tf

    from precision_sweep.convert.converter import base_package, frontend_program
    from precision_sweep.convert.program_store import ProgramNotStorable, save_program
    from precision_sweep.convert.recipes import FLOAT32
    from precision_sweep.data.models import LoadedModel

    quiet()
    model = _tf_keras_rnn("GRU")
    fn = tf.function(lambda a: model(a, training=False)).get_concrete_function(
        tf.TensorSpec((None, STEPS, FEATURES), tf.float32, name="x")
    )
    # A content hash of its own: the converter's process-wide memo has not seen this model.
    loaded = LoadedModel("gru", [fn], "x", (STEPS, FEATURES), "probabilities", f"gru-{uuid.uuid4().hex}")
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="precision_sweep.convert.converter"):
        program = frontend_program(loaded, "iOS17", FLOAT32, 8, cache)
    assert "while_loop" in {op.op_type for op in program.functions["main"].operations}
    assert "kept in memory only" in caplog.text
    assert not list((cache / "convert" / "frontend").glob("*.milprogram"))  # nothing stored
    with pytest.raises(ProgramNotStorable, match="list|nested blocks"):  # why: the store refuses it
        save_program(program, tmp_path / "entry")
    assert frontend_program(loaded, "iOS17", FLOAT32, 8, cache) is program  # served from memory
    # The package converted from the in-memory program runs as TensorFlow does.
    package = base_package(loaded, "iOS17", FLOAT32, 8, cache)
    x = np.random.default_rng(2).normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    (got,), _ = emulate(ct.models.MLModel(str(package), skip_model_load=True), {"x": x})
    assert_matches_tf(got, np.asarray(model(x, training=False)))
