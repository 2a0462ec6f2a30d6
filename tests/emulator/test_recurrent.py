"""The MIL recurrent kernels (``ops/recurrent.py``: lstm, gru, rnn) run as MIL programs built
with coremltools' builder, against

(a) coremltools' own reference outputs: the test methods of
    ``coremltools/converters/mil/mil/ops/tests/iOS14/test_recurrent.py`` run unchanged, with
    their ``run_compare_builder`` pointed at the emulator (:func:`_emulator_compare`: the same
    type-inference check, the emulator's outputs against the test's ``expected_outputs`` at its
    ``atol``/``rtol``). Only the numpy-reference tests can run here: ``TestGRU`` (its only use of
    torch is ``torch.manual_seed``) and ``TestLSTM.test_numpy_numerical`` (activations, clip,
    peephole); the torch-reference ones (unilstm, bidirlstm, rnn) are replaced by (b);
(b) TensorFlow/Keras ``LSTM``, ``GRU`` (both ``reset_after`` forms), ``SimpleRNN`` and
    ``Bidirectional(LSTM)`` with the same weights, ``go_backwards`` for the reverse direction.
"""

from __future__ import annotations

import itertools
import types as pytypes

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

import _emu_helpers as H
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Function, Program
from coremltools.converters.mil.mil.ops.tests.iOS14 import test_recurrent as ct_recurrent

from precision_sweep.emulator import Emulator

IOS15, IOS17, IOS18 = ct.target.iOS15, ct.target.iOS17, ct.target.iOS18
RNG = np.random.default_rng(23)


# ---------------------------------------------------------------- helpers
def _emulator_compare(build, input_placeholders, input_values=None, expected_output_types=None,
                      expected_outputs=None, backend=None, atol=1e-4, rtol=1e-5, **_ignored):
    """coremltools' ``run_compare_builder`` with the emulator predicting: the program built as
    there, its output shapes checked against ``expected_output_types`` (symbols skipped), its
    outputs against ``expected_outputs``."""
    opset = backend.opset_version if backend is not None else IOS15
    with Function(input_placeholders, opset_version=opset) as function:
        outs = build(**function.inputs)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        function.set_outputs(outs)
    program = Program()
    program.add_function("main", function)
    expected_types = expected_output_types if isinstance(expected_output_types, list) else [expected_output_types]
    for var, wanted in zip(outs, expected_types):
        assert len(var.shape) == len(wanted) - 1
        for got, want in zip(var.shape, wanted[:-1]):
            if isinstance(want, (int, np.integer)):
                assert int(got) == int(want), (var.name, var.shape, wanted)
    emulator = Emulator(program, compute_units="cpu_only")
    got = emulator.predict(dict(input_values))
    expected = expected_outputs if isinstance(expected_outputs, list) else [expected_outputs]
    assert len(expected) == len(outs)
    for var, want in zip(outs, expected):
        np.testing.assert_allclose(got[var.name], want, atol=atol, rtol=rtol)


@pytest.fixture
def ct_reference(monkeypatch):
    """coremltools' iOS14 recurrent test module, comparing through the emulator."""
    monkeypatch.setattr(ct_recurrent, "run_compare_builder", _emulator_compare)
    # TestGRU seeds torch (unused otherwise; its reference is numpy): torch is not installed here
    monkeypatch.setattr(ct_recurrent, "torch", pytypes.SimpleNamespace(manual_seed=lambda seed: None), raising=False)
    return ct_recurrent


def _backend(opset):
    return pytypes.SimpleNamespace(backend="mlprogram", precision="fp32", opset_version=opset)


def run(build, inputs: dict, opset=IOS15, compute_units="cpu_only"):
    """Outputs (in the program's order) of ``build(**inputs)`` with every input a program input."""
    emulator = Emulator(H.mil_program(build, inputs, opset), compute_units=compute_units)
    out = emulator.predict(dict(zip(emulator.input_names, inputs.values())))
    return [out[n] for n in emulator.output_names]


# ---------------------------------------------------------------- (a) coremltools' references
@pytest.mark.parametrize(
    "seq_len, input_size, hidden_size, has_bias, output_sequence, direction, activations, symbolic",
    [(3, 2, 2, *rest) for rest in itertools.product([True, False], [True, False], ["forward", "reverse"],
                                                      [["tanh", "sigmoid"], ["sigmoid", "tanh"]], [False, True])]
    + [(1, 1, 1, True, True, "forward", ["tanh", "sigmoid"], False)],
)
def test_gru_coremltools_reference(ct_reference, seq_len, input_size, hidden_size, has_bias, output_sequence,
                                   direction, activations, symbolic):
    """``iOS14/test_recurrent.py::TestGRU::test_builder_to_backend_smoke`` (numpy reference)."""
    np.random.seed(seq_len * 7 + hidden_size)
    ct_reference.TestGRU().test_builder_to_backend_smoke(
        None, _backend(IOS15), seq_len, 1, input_size, hidden_size, has_bias, output_sequence, direction,
        activations, symbolic, np.float32)


@pytest.mark.parametrize(
    "output_dim, outer_activation, return_seq, has_bias, forget_bias, has_peephole, clip",
    list(itertools.product([1, 4], ["relu", "scaled_tanh", "hard_sigmoid", "linear"], [False, True], [True],
                           [False, True], [True, False], [50.0, 0.01]))
    + [(4, "relu", True, False, False, False, 0.2)],
)
def test_lstm_coremltools_reference(ct_reference, output_dim, outer_activation, return_seq, has_bias, forget_bias,
                                    has_peephole, clip):
    """``iOS14/test_recurrent.py::TestLSTM::test_numpy_numerical``: peepholes, cell clip (0.01
    binds: a clip of the gate instead of the cell state fails), the four outer activations."""
    np.random.seed(output_dim)
    ct_reference.TestLSTM().test_numpy_numerical(
        None, _backend(IOS15), [8, 32, 32], output_dim, "sigmoid", "tanh", outer_activation, return_seq, has_bias,
        forget_bias, has_peephole, False, clip, np.float32)


# ---------------------------------------------------------------- (b) TensorFlow / Keras
keras = pytest.importorskip("keras")

SEQ, BATCH, FEATURES, UNITS = 5, 2, 3, 4


def _keras_run(layer, x):
    out = layer(x)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def _random_weights(layer, x):
    layer(x)  # builds it
    layer.set_weights([RNG.uniform(-0.8, 0.8, w.shape).astype(np.float32) for w in layer.get_weights()])


def _lstm_mil_weights(kernel, recurrent, bias):
    """Keras' ``[i, f, c, o]`` columns as MIL's ``[i, f, o, z]`` rows."""
    def ifoz(w):
        i, f, c, o = np.split(w, 4, axis=-1)
        return np.concatenate([i, f, o, c], axis=-1)

    return ifoz(kernel).T, ifoz(recurrent).T, ifoz(bias)


def _gru_mil(w):
    """Keras' ``[z, r, h]`` columns as MIL's ``[r, o, z]`` rows."""
    z, r, h = np.split(w, 3, axis=-1)
    return np.concatenate([r, h, z], axis=-1)


@pytest.mark.parametrize("return_sequences, go_backwards", [(True, False), (False, False), (True, True), (False, True)])
def test_lstm_matches_keras(return_sequences, go_backwards):
    x = RNG.standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32)
    layer = keras.layers.LSTM(UNITS, return_sequences=return_sequences, return_state=True, go_backwards=go_backwards)
    _random_weights(layer, x)
    y, h, c = _keras_run(layer, x)
    w_ih, w_hh, b = _lstm_mil_weights(*layer.get_weights())
    h0 = np.zeros((BATCH, UNITS), np.float32)

    def build(x):
        return mb.lstm(x=mb.transpose(x=x, perm=[1, 0, 2]), initial_h=h0, initial_c=h0, weight_ih=w_ih,
                       weight_hh=w_hh, bias=b, output_sequence=return_sequences,
                       direction="reverse" if go_backwards else "forward")

    got_y, got_h, got_c = run(build, {"x": x})
    want_y = y.transpose(1, 0, 2) if return_sequences else y[None]
    np.testing.assert_allclose(got_y, want_y, atol=1e-5)
    np.testing.assert_allclose(got_h, h, atol=1e-5)
    np.testing.assert_allclose(got_c, c, atol=1e-5)


@pytest.mark.parametrize("reset_after", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gru_matches_keras(reset_after, go_backwards):
    """``reset_after=False``: the iOS15 gru (one bias); ``True`` (Keras' default): the iOS18
    gru with ``input_bias`` and the hidden-side ``bias``."""
    x = RNG.standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32)
    layer = keras.layers.GRU(UNITS, return_sequences=True, return_state=True, reset_after=reset_after,
                             go_backwards=go_backwards)
    _random_weights(layer, x)
    y, h = _keras_run(layer, x)
    kernel, recurrent, bias = layer.get_weights()
    h0 = np.zeros((BATCH, UNITS), np.float32)
    kwargs = {"weight_ih": _gru_mil(kernel).T, "weight_hh": _gru_mil(recurrent).T, "output_sequence": True,
              "direction": "reverse" if go_backwards else "forward"}
    if reset_after:
        kwargs.update(reset_after=True, input_bias=_gru_mil(bias[0]), bias=_gru_mil(bias[1]))
    else:
        kwargs["bias"] = _gru_mil(bias)

    def build(x):
        return mb.gru(x=mb.transpose(x=x, perm=[1, 0, 2]), initial_h=h0, **kwargs)

    got_y, got_h = run(build, {"x": x}, opset=IOS18 if reset_after else IOS15)
    np.testing.assert_allclose(got_y, y.transpose(1, 0, 2), atol=1e-5)
    np.testing.assert_allclose(got_h, h, atol=1e-5)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_rnn_matches_keras(activation):
    x = RNG.standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32)
    layer = keras.layers.SimpleRNN(UNITS, activation=activation, return_sequences=True, return_state=True)
    _random_weights(layer, x)
    y, h = _keras_run(layer, x)
    kernel, recurrent, bias = layer.get_weights()
    h0 = np.zeros((BATCH, UNITS), np.float32)

    def build(x):
        return mb.rnn(x=mb.transpose(x=x, perm=[1, 0, 2]), initial_h=h0, weight_ih=kernel.T, weight_hh=recurrent.T,
                      bias=bias, output_sequence=True, activation=activation)

    got_y, got_h = run(build, {"x": x})
    np.testing.assert_allclose(got_y, y.transpose(1, 0, 2), atol=1e-5)
    np.testing.assert_allclose(got_h, h, atol=1e-5)


@pytest.mark.parametrize("output_sequence", [True, False])
def test_bidirectional_lstm_matches_keras(output_sequence):
    """Keras' ``Bidirectional`` writes the backward sequence back in input order, as MIL does;
    its last step is ``[forward at s-1, backward at 0]``; initial states given per half."""
    x = RNG.standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32)
    states = [RNG.standard_normal((BATCH, UNITS)).astype(np.float32) for _ in range(4)]  # h_f, c_f, h_b, c_b
    layer = keras.layers.Bidirectional(keras.layers.LSTM(UNITS, return_sequences=output_sequence, return_state=True))
    layer(x, initial_state=states)
    layer.set_weights([RNG.uniform(-0.8, 0.8, w.shape).astype(np.float32) for w in layer.get_weights()])
    y, h_f, c_f, h_b, c_b = [np.asarray(o) for o in layer(x, initial_state=states)]
    forward, backward = layer.forward_layer.get_weights(), layer.backward_layer.get_weights()
    w_ih, w_hh, b = _lstm_mil_weights(*forward)
    w_ih_back, w_hh_back, b_back = _lstm_mil_weights(*backward)
    h0, c0 = np.concatenate([states[0], states[2]], -1), np.concatenate([states[1], states[3]], -1)

    def build(x, h0, c0):
        return mb.lstm(x=mb.transpose(x=x, perm=[1, 0, 2]), initial_h=h0, initial_c=c0, weight_ih=w_ih,
                       weight_hh=w_hh, bias=b, weight_ih_back=w_ih_back, weight_hh_back=w_hh_back,
                       bias_back=b_back, direction="bidirectional", output_sequence=output_sequence)

    got_y, got_h, got_c = run(build, {"x": x, "h0": h0, "c0": c0})
    want_y = y.transpose(1, 0, 2) if output_sequence else y[None]
    np.testing.assert_allclose(got_y, want_y, atol=1e-5)
    np.testing.assert_allclose(got_h, np.concatenate([h_f, h_b], -1), atol=1e-5)
    np.testing.assert_allclose(got_c, np.concatenate([c_f, c_b], -1), atol=1e-5)


# ---------------------------------------------------------------- dtypes and shapes
def test_fp16_program_computes_and_stores_fp16():
    """An iOS17 fp16 lstm: outputs are fp16, within fp16 rounding of the fp32 program."""
    x = RNG.standard_normal((SEQ, BATCH, FEATURES)).astype(np.float32)
    w_ih = RNG.uniform(-0.5, 0.5, (4 * UNITS, FEATURES)).astype(np.float32)
    w_hh = RNG.uniform(-0.5, 0.5, (4 * UNITS, UNITS)).astype(np.float32)
    h0 = np.zeros((BATCH, UNITS), np.float32)

    def build(dtype):
        def body(x):
            return mb.lstm(x=x, initial_h=h0.astype(dtype), initial_c=h0.astype(dtype), weight_ih=w_ih.astype(dtype),
                           weight_hh=w_hh.astype(dtype), output_sequence=True)
        return body

    full = run(build(np.float32), {"x": x}, opset=IOS17)
    half = run(build(np.float16), {"x": x.astype(np.float16)}, opset=IOS17)
    for got, want in zip(half, full):
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype(np.float32), want, atol=5e-3)


def test_shapes_follow_type_inference_with_symbolic_sequence():
    """Output shapes are those ``type_inference`` gives, also for a sequence length the program
    leaves open (``<1, b, H>`` without ``output_sequence``)."""
    from coremltools.converters.mil.mil import get_new_symbol

    seq = get_new_symbol()
    placeholders = {"x": mb.placeholder(shape=(seq, 2, 3))}
    w_ih, w_hh = RNG.standard_normal((5, 3)).astype(np.float32), RNG.standard_normal((5, 5)).astype(np.float32)

    def build(x):
        return mb.rnn(x=x, initial_h=np.zeros((2, 5), np.float32), weight_ih=w_ih, weight_hh=w_hh)

    x = RNG.standard_normal((7, 2, 3)).astype(np.float32)
    h = np.zeros((2, 5), np.float32)
    for step in x:
        h = np.tanh(step @ w_ih.T + h @ w_hh.T)
    _emulator_compare(build, placeholders, {"x": x}, [(1, 2, 5, None), (2, 5, None)], [h[None], h], atol=1e-5)


def test_unknown_activation_is_refused():
    from precision_sweep.emulator.ops.recurrent import rnn

    with pytest.raises(ValueError, match="activation 'softsign' not supported"):
        rnn(np.zeros((1, 1, 1), np.float32), np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32),
            np.ones((1, 1), np.float32), activation="softsign")
