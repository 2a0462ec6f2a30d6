"""NeuralNetwork recurrent layers (``emulator/nn_recurrent.py``) against TensorFlow/Keras.

coremltools' TF frontends write these layers only for TF's fused ``BlockLSTM``/``BlockLSTMV2``
(``tf_lstm_to_core_lstm``). A Keras 2 (tf-keras) ``LSTM``/``GRU``/``SimpleRNN`` with
``unroll=False`` becomes a ``loop`` over TensorList blobs, not a recurrent layer (the fidelity
harness's ``TestRecurrent`` cases), and a Keras 3 one traced into a ``tf.function`` does not
convert at all at iOS13 (an ``IndexError`` in coremltools 9.0's TF2 frontend). So the layers are
tested two ways:

* a real conversion: a ``tf.raw_ops.BlockLSTM`` graph with ``convert_to="neuralnetwork"`` at
  iOS14 (``uniDirectionalLSTM``), against TensorFlow;
* specs written with coremltools' ``NeuralNetworkBuilder`` (``add_unilstm``, ``add_bidirlstm``,
  ``add_gru``, ``add_simple_rnn``: the rank-5 ``[Seq, Batch, C, 1, 1]`` blobs), with the
  weights of a Keras layer, against that layer's predictions. fp32, ``cpu_only``.
"""

from __future__ import annotations

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
keras = pytest.importorskip("keras")

from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder

from precision_sweep.emulator import Emulator
from precision_sweep.emulator.nn_program import UnsupportedLayerError

SEQ, BATCH, FEATURES, UNITS = 5, 2, 3, 4
RNG = np.random.default_rng(7)
ATOL = 1e-5


def _builder(inputs: dict, outputs: list[str]) -> NeuralNetworkBuilder:
    return NeuralNetworkBuilder([(n, datatypes.Array(*s)) for n, s in inputs.items()], [(n, None) for n in outputs],
                                disable_rank5_shape_mapping=True)


def _emulate(builder, tmp_path, feeds: dict) -> dict:
    path = tmp_path / "recurrent.mlmodel"
    ct.utils.save_spec(builder.spec, str(path))
    return Emulator(path, "cpu_only").predict(feeds)


def _keras_layer(layer, x, *extra):
    layer(x, *extra)  # builds it
    layer.set_weights([RNG.uniform(-0.8, 0.8, w.shape).astype(np.float32) for w in layer.get_weights()])
    return layer


def _rank5(x):
    """Keras ``[Batch, Seq, C]`` as the proto's ``[Seq, Batch, C, 1, 1]``."""
    return np.ascontiguousarray(x.transpose(1, 0, 2)[..., None, None])


def _state5(s):
    return s[None, :, :, None, None]


def _lstm_gates(kernel, recurrent, bias):
    """Keras' ``[i, f, c, o]`` columns as the builder's ``[W_i, W_f, W_o, W_z]`` lists."""
    def split(w):
        i, f, c, o = np.split(w, 4, axis=-1)
        return [np.ascontiguousarray(g.T) for g in (i, f, o, c)]

    return split(kernel), split(recurrent), split(bias)


@pytest.mark.parametrize("return_sequences, go_backwards, forget_bias",
                         [(True, False, False), (False, False, True), (True, True, False), (False, True, False)])
def test_unidirectional_lstm_matches_keras(tmp_path, return_sequences, go_backwards, forget_bias):
    """``reverseInput`` is Keras' ``go_backwards`` (the sequence in the order computed);
    ``forgetBias`` adds 1 to the forget gate's bias; initial states from blobs."""
    x = RNG.standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32)
    h0, c0 = (RNG.standard_normal((BATCH, UNITS)).astype(np.float32) for _ in range(2))
    layer = _keras_layer(keras.layers.LSTM(UNITS, return_sequences=return_sequences, return_state=True,
                                           go_backwards=go_backwards), x)
    kernel, recurrent, bias = layer.get_weights()
    w_x, w_h, b = _lstm_gates(kernel, recurrent, bias)
    if forget_bias:  # the NN layer adds the 1 the Keras layer holds in its bias
        b[1] = b[1] - 1.0
    y, h, c = [np.asarray(o) for o in layer(x, initial_state=[h0, c0])]

    builder = _builder({"x": (SEQ, BATCH, FEATURES, 1, 1), "h0": (1, BATCH, UNITS, 1, 1),
                        "c0": (1, BATCH, UNITS, 1, 1)}, ["y", "h", "c"])
    builder.add_unilstm("lstm", W_h=w_h, W_x=w_x, b=b, hidden_size=UNITS, input_size=FEATURES,
                        input_names=["x", "h0", "c0"], output_names=["y", "h", "c"], output_all=return_sequences,
                        forget_bias=forget_bias, reverse_input=go_backwards)
    out = _emulate(builder, tmp_path, {"x": _rank5(x), "h0": _state5(h0), "c0": _state5(c0)})
    want_y = _rank5(y) if return_sequences else _state5(y)
    np.testing.assert_allclose(out["y"], want_y, atol=ATOL)
    np.testing.assert_allclose(out["h"], _state5(h), atol=ATOL)
    np.testing.assert_allclose(out["c"], _state5(c), atol=ATOL)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_lstm_matches_keras(tmp_path, return_sequences):
    """Five inputs and outputs (forward and backward states apart); ``y`` is Keras'
    ``Bidirectional`` concat, the backward half in input order."""
    x = RNG.standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32)
    states = [RNG.standard_normal((BATCH, UNITS)).astype(np.float32) for _ in range(4)]  # h_f, c_f, h_b, c_b
    layer = _keras_layer(keras.layers.Bidirectional(keras.layers.LSTM(UNITS, return_sequences=return_sequences,
                                                                      return_state=True)), x, states)
    y, h_f, c_f, h_b, c_b = [np.asarray(o) for o in layer(x, initial_state=states)]
    w_x, w_h, b = _lstm_gates(*layer.forward_layer.get_weights())
    w_x_back, w_h_back, b_back = _lstm_gates(*layer.backward_layer.get_weights())

    names = ["x", "h0", "c0", "h0_back", "c0_back"]
    outputs = ["y", "h", "c", "h_back", "c_back"]
    builder = _builder({n: (SEQ, BATCH, FEATURES, 1, 1) if n == "x" else (1, BATCH, UNITS, 1, 1) for n in names},
                       outputs)
    builder.add_bidirlstm("bilstm", W_h=w_h, W_x=w_x, b=b, W_h_back=w_h_back, W_x_back=w_x_back, b_back=b_back,
                          hidden_size=UNITS, input_size=FEATURES, input_names=names, output_names=outputs,
                          output_all=return_sequences)
    out = _emulate(builder, tmp_path, {"x": _rank5(x), **{n: _state5(s) for n, s in zip(names[1:], states)}})
    want_y = _rank5(y) if return_sequences else _state5(y)
    np.testing.assert_allclose(out["y"], want_y, atol=ATOL)
    for name, want in zip(outputs[1:], (h_f, c_f, h_b, c_b)):
        np.testing.assert_allclose(out[name], _state5(want), atol=ATOL, err_msg=name)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_gru_matches_keras(tmp_path, go_backwards):
    """The proto's GRU resets ``h`` before its product (Keras ``reset_after=False``); the
    proto's gate lists ``z, r, o`` are Keras' ``z, r, h`` columns; one input and output only
    (zero initial state, no state blob written)."""
    x = RNG.standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32)
    layer = _keras_layer(keras.layers.GRU(UNITS, return_sequences=True, reset_after=False,
                                          go_backwards=go_backwards), x)
    kernel, recurrent, bias = layer.get_weights()
    y = np.asarray(layer(x))

    def split(w):
        return [np.ascontiguousarray(g.T) for g in np.split(w, 3, axis=-1)]  # z, r, h

    builder = _builder({"x": (SEQ, BATCH, FEATURES, 1, 1)}, ["y"])
    builder.add_gru("gru", W_h=split(recurrent), W_x=split(kernel), b=split(bias), hidden_size=UNITS,
                    input_size=FEATURES, input_names=["x"], output_names=["y"], inner_activation="SIGMOID",
                    output_all=True, reverse_input=go_backwards)
    out = _emulate(builder, tmp_path, {"x": _rank5(x)})
    np.testing.assert_allclose(out["y"], _rank5(y), atol=ATOL)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_simple_recurrent_matches_keras(tmp_path, activation):
    x = RNG.standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32)
    h0 = RNG.standard_normal((BATCH, UNITS)).astype(np.float32)
    layer = _keras_layer(keras.layers.SimpleRNN(UNITS, activation=activation, return_sequences=True,
                                                return_state=True), x)
    kernel, recurrent, bias = layer.get_weights()
    y, h = [np.asarray(o) for o in layer(x, initial_state=[h0])]

    # the NN backend's own rnn writes the state [Batch, H, 1, 1, 1]
    builder = _builder({"x": (SEQ, BATCH, FEATURES, 1, 1), "h0": (BATCH, UNITS, 1, 1, 1)}, ["y", "h"])
    builder.add_simple_rnn("rnn", W_h=recurrent.T, W_x=kernel.T, b=bias, hidden_size=UNITS, input_size=FEATURES,
                           activation=activation.upper(), input_names=["x", "h0"], output_names=["y", "h"],
                           output_all=True)
    out = _emulate(builder, tmp_path, {"x": _rank5(x), "h0": h0[..., None, None, None]})
    np.testing.assert_allclose(out["y"], _rank5(y), atol=ATOL)
    np.testing.assert_allclose(out["h"], _state5(h), atol=ATOL)


def test_fused_tf_block_lstm_converts_to_a_unidirectional_lstm_layer(tmp_path):
    """A real conversion: TF's ``BlockLSTM`` (what coremltools fuses into MIL ``lstm``) to a
    NeuralNetwork at iOS14, run against TensorFlow."""
    import tensorflow as tf

    hidden = 6
    w = RNG.uniform(-0.5, 0.5, (FEATURES + hidden, 4 * hidden)).astype(np.float32)
    b = RNG.uniform(-0.5, 0.5, (4 * hidden,)).astype(np.float32)
    zeros = np.zeros((BATCH, hidden), np.float32)

    @tf.function(input_signature=[tf.TensorSpec((SEQ, BATCH, FEATURES), tf.float32, name="x")])
    def fn(x):
        _, cs, _, _, _, _, h = tf.raw_ops.BlockLSTM(
            seq_len_max=np.int64(SEQ), x=x, cs_prev=zeros, h_prev=zeros, w=w, wci=zeros[0], wcf=zeros[0],
            wco=zeros[0], b=b, forget_bias=1.0, cell_clip=-1.0, use_peephole=False)
        return tf.identity(h, name="h_all"), tf.identity(cs[-1], name="c_last")

    mlmodel = ct.convert([fn.get_concrete_function()], source="tensorflow", convert_to="neuralnetwork",
                         minimum_deployment_target=ct.target.iOS14)
    path = tmp_path / "block_lstm.mlmodel"
    mlmodel.save(str(path))
    spec = ct.utils.load_spec(str(path))
    assert "uniDirectionalLSTM" in {lay.WhichOneof("layer") for lay in spec.neuralNetwork.layers}
    x = RNG.standard_normal((SEQ, BATCH, FEATURES)).astype(np.float32)
    emulator = Emulator(path, "cpu_only")
    out = emulator.predict({"x": x})
    expected = [np.asarray(e) for e in fn(tf.constant(x))]
    got = [out[o.name] for o in spec.description.output]
    assert len(got) == len(expected)
    for g, e in zip(sorted(got, key=np.size), sorted(expected, key=np.size)):
        np.testing.assert_allclose(g.reshape(e.shape), e, atol=ATOL)


def _one_unilstm(tmp_path, **kwargs):
    w = [np.ones((1, 1), np.float32)] * 4
    builder = _builder({"x": (2, 1, 1, 1, 1)}, ["y"])
    spec_layer = builder.add_unilstm("odd", W_h=w, W_x=w, b=None, hidden_size=1, input_size=1, input_names=["x"],
                                     output_names=["y"], **kwargs)
    return builder, spec_layer


def test_unmodelled_lstm_options_are_refused_at_load(tmp_path):
    builder, _ = _one_unilstm(tmp_path, coupled_input_forget_gate=True)
    with pytest.raises(UnsupportedLayerError, match="coupledInputAndForgetGate"):
        _emulate(builder, tmp_path, {"x": np.zeros((2, 1, 1, 1, 1), np.float32)})
    builder, spec_layer = _one_unilstm(tmp_path, inner_activation="SIGMOID_HARD")
    spec_layer.uniDirectionalLSTM.activations[0].sigmoidHard.alpha = 0.3
    with pytest.raises(UnsupportedLayerError, match="sigmoidHard with alpha, beta"):
        _emulate(builder, tmp_path, {"x": np.zeros((2, 1, 1, 1, 1), np.float32)})
