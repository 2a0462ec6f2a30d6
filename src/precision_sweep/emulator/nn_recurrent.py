"""NeuralNetwork recurrent layers (``uniDirectionalLSTM``, ``biDirectionalLSTM``, ``gru``,
``simpleRecurrent``) as MIL ``lstm``/``gru``/``rnn`` ops: coremltools' NN backend
(``op_mapping.lstm``/``gru``/``rnn``) read backwards. Importing this module registers the
adapters in :data:`~precision_sweep.emulator.nn_layers.LAYERS` (``nn_program`` imports it).

Conventions of ``NeuralNetwork.proto`` the adapters follow where MIL differs:

* blobs are rank 5: the sequence ``[Seq, Batch, C, 1, 1]``, states ``[1, Batch, H, 1, 1]``
  (the NN backend's own ``rnn`` writes its initial state ``[Batch, H, 1, 1, 1]``: a state is
  read as its ``Batch * H`` values); a layer's state inputs and outputs may be left out (zeros
  in, fewer blobs out);
* weights are one matrix per gate, ``W`` ``[H, C]`` and ``R`` ``[H, H]``, in the proto's field
  names; MIL concatenates them in its own gate orders (lstm ``[i, f, o, z]``, gru ``[r, o, z]``
  where the proto's gru lists ``z, r, o``);
* recurrent activations are ``ActivationParams`` whose parameters coremltools leaves unset
  (``sigmoidHard``, ``scaledTanh``, ``linear`` with alpha = beta = 0, and Core ML computes
  them with their standard parameters, as coremltools' own op tests on the NN backend show):
  unset or standard parameters become MIL's ``hard_sigmoid``/``scaled_tanh``/``linear``; other
  values are refused (MIL's recurrent ops take no activation parameters);
* ``LSTMParams``: ``forgetBias`` adds 1 to the forget gate's bias; ``cellClipThreshold``
  bounds the cell state (MIL ``clip``; 0, never written by coremltools, is read as no bound);
  ``coupledInputAndForgetGate`` is refused (MIL has no such lstm); a bidirectional layer with
  different forward and backward activations is refused (MIL's lstm has one set);
* ``reverseInput``: MIL's ``reverse`` direction, the output sequence in the order computed,
  as the NN backend maps it; ``biDirectionalLSTM``'s backward half is in input order, as MIL's.

Not modelled: the proto's ``clip()`` of every gate's pre-activation to [-50, 50]. It changes
no result of sigmoid, tanh, hard sigmoid or scaled tanh (all saturated there, in fp32), only
relu and linear activations fed a pre-activation beyond +-50.
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.nn_layers import UnsupportedLayerError, layer, mil_builder, weight_values

# ActivationParams kind -> (MIL name, its standard (alpha, beta) or None if it has none)
_ACTIVATIONS = {
    "sigmoid": ("sigmoid", None),
    "tanh": ("tanh", None),
    "ReLU": ("relu", None),
    "sigmoidHard": ("hard_sigmoid", (0.2, 0.5)),
    "scaledTanh": ("scaled_tanh", (1.0, 1.0)),
    "linear": ("linear", (1.0, 0.0)),
}


def _activation(params, where: str) -> str:
    kind = params.WhichOneof("NonlinearityType")
    if kind not in _ACTIVATIONS:
        raise UnsupportedLayerError(f"{where}: recurrent activation {kind}")
    mil_name, standard = _ACTIVATIONS[kind]
    if standard is not None:
        given = (float(getattr(params, kind).alpha), float(getattr(params, kind).beta))
        if given != (0.0, 0.0) and not np.allclose(given, standard):
            raise UnsupportedLayerError(f"{where}: recurrent activation {kind} with alpha, beta = {given}")
    return mil_name


def _sequence(x):
    """The rank-5 ``[Seq, Batch, C, 1, 1]`` input as MIL's ``[Seq, Batch, C]``."""
    return mil_builder().squeeze(x=x, axes=[-2, -1]) if x.rank == 5 else x


def _state(inputs, index: int, x, hidden: int):
    """State input ``index`` as ``[Batch, H]``, or zeros when the layer has no such input."""
    mb = mil_builder()
    if index < len(inputs):
        return mb.reshape(x=inputs[index], shape=[-1, hidden])
    batch = x.shape[1]
    if isinstance(batch, (int, np.integer)):
        return np.zeros((int(batch), hidden), np.float32)
    rows = mb.slice_by_index(x=mb.shape(x=x), begin=[1], end=[2])
    return mb.fill(shape=mb.concat(values=[rows, np.array([hidden], np.int32)], axis=0), value=np.float32(0))


def _rank5(results, count: int) -> list:
    """MIL's ``[Seq or 1, Batch, H]`` output and ``[Batch, H]`` states as the proto's rank-5
    blobs, as many as the layer lists."""
    mb = mil_builder()
    y, *states = results
    out = [mb.expand_dims(x=y, axes=[3, 4])] + [mb.expand_dims(x=s, axes=[0, 3, 4]) for s in states]
    return out[:count]


def _lstm_weights(w, input_size: int, hidden: int, p):
    """One direction's ``LSTMWeightParams`` in MIL's ``[i, f, o, z]`` order."""
    gates = ("inputGate", "forgetGate", "outputGate", "blockInput")
    weight_ih = np.concatenate([weight_values(getattr(w, f"{g}WeightMatrix"), (hidden, input_size)) for g in gates])
    weight_hh = np.concatenate([weight_values(getattr(w, f"{g}RecursionMatrix"), (hidden, hidden)) for g in gates])
    bias = (np.concatenate([weight_values(getattr(w, f"{g}BiasVector"), (hidden,)) for g in gates])
            if p.hasBiasVectors else np.zeros(4 * hidden, np.float32))
    if p.forgetBias:
        bias = bias.copy()
        bias[hidden:2 * hidden] += 1.0
    peephole = (np.concatenate([weight_values(getattr(w, f"{g}PeepholeVector"), (hidden,)) for g in gates[:3]])
                if p.hasPeepholeVectors else np.zeros(3 * hidden, np.float32))
    return weight_ih, weight_hh, bias.astype(np.float32), peephole


def _lstm_options(p, activations, where: str) -> dict:
    if p.coupledInputAndForgetGate:
        raise UnsupportedLayerError(f"{where}: LSTM with coupledInputAndForgetGate")
    names = [_activation(a, where) for a in activations] or ["sigmoid", "tanh", "tanh"]
    options = {"recurrent_activation": names[0], "cell_activation": names[1], "activation": names[2],
               "output_sequence": bool(p.sequenceOutput)}
    if p.cellClipThreshold:
        options["clip"] = np.float32(p.cellClipThreshold)
    return options


@layer("uniDirectionalLSTM")
def _uni_lstm(p, inputs, name, lay):
    """``UniDirectionalLSTMLayerParams``: inputs ``x, h, c``, outputs ``y, h, c`` (module
    docstring for the conventions)."""
    mb = mil_builder()
    hidden, size = int(p.outputVectorSize), int(p.inputVectorSize)
    x = _sequence(inputs[0])
    weight_ih, weight_hh, bias, peephole = _lstm_weights(p.weightParams, size, hidden, p.params)
    results = mb.lstm(x=x, initial_h=_state(inputs, 1, x, hidden), initial_c=_state(inputs, 2, x, hidden),
                      weight_ih=weight_ih, weight_hh=weight_hh, bias=bias, peephole=peephole,
                      direction="reverse" if p.reverseInput else "forward",
                      **_lstm_options(p.params, p.activations, f"layer {lay.name!r}"))
    return _rank5(results, len(lay.output))


@layer("biDirectionalLSTM")
def _bi_lstm(p, inputs, name, lay):
    """``BiDirectionalLSTMLayerParams``: inputs ``x, h, c, h_reverse, c_reverse``, outputs
    ``y, h, c, h_reverse, c_reverse``; ``weightParams`` [forward, backward]; ``y`` is
    ``[forward, backward]`` on the channel axis (module docstring for the conventions)."""
    mb = mil_builder()
    where = f"layer {lay.name!r}"
    hidden, size = int(p.outputVectorSize), int(p.inputVectorSize)
    forward = [a.SerializeToString() for a in p.activationsForwardLSTM]
    if forward != [a.SerializeToString() for a in p.activationsBackwardLSTM]:
        raise UnsupportedLayerError(f"{where}: bidirectional LSTM with different forward and backward activations")
    x = _sequence(inputs[0])
    states = [_state(inputs, i, x, hidden) for i in range(1, 5)]  # h, c, h_reverse, c_reverse
    w_ih, w_hh, bias, peephole = _lstm_weights(p.weightParams[0], size, hidden, p.params)
    w_ih_back, w_hh_back, bias_back, peephole_back = _lstm_weights(p.weightParams[1], size, hidden, p.params)
    y, h, c = mb.lstm(x=x, initial_h=mb.concat(values=[states[0], states[2]], axis=-1),
                      initial_c=mb.concat(values=[states[1], states[3]], axis=-1), weight_ih=w_ih, weight_hh=w_hh,
                      bias=bias, peephole=peephole, weight_ih_back=w_ih_back, weight_hh_back=w_hh_back,
                      bias_back=bias_back, peephole_back=peephole_back, direction="bidirectional",
                      **_lstm_options(p.params, p.activationsForwardLSTM, where))
    h_f, h_b = mb.split(x=h, num_splits=2, axis=-1)
    c_f, c_b = mb.split(x=c, num_splits=2, axis=-1)
    return _rank5([y, h_f, c_f, h_b, c_b], len(lay.output))


@layer("gru")
def _gru(p, inputs, name, lay):
    """``GRULayerParams``: inputs ``x, h``, outputs ``y, h``; the proto's gates ``z, r, o``
    as MIL's ``[r, o, z]``; activations ``[f (update and reset gates), g (output gate)]``;
    ``o_t = g(W_o x_t + R_o (r_t * h_{t-1}) + b_o)``, MIL's iOS15 gru (module docstring)."""
    mb = mil_builder()
    where = f"layer {lay.name!r}"
    hidden, size = int(p.outputVectorSize), int(p.inputVectorSize)
    gates = ("resetGate", "outputGate", "updateGate")
    weight_ih = np.concatenate([weight_values(getattr(p, f"{g}WeightMatrix"), (hidden, size)) for g in gates])
    weight_hh = np.concatenate([weight_values(getattr(p, f"{g}RecursionMatrix"), (hidden, hidden)) for g in gates])
    bias = (np.concatenate([weight_values(getattr(p, f"{g}BiasVector"), (hidden,)) for g in gates])
            if p.hasBiasVectors else np.zeros(3 * hidden, np.float32))
    names = [_activation(a, where) for a in p.activations] or ["hard_sigmoid", "tanh"]
    x = _sequence(inputs[0])
    results = mb.gru(x=x, initial_h=_state(inputs, 1, x, hidden), weight_ih=weight_ih, weight_hh=weight_hh,
                     bias=bias, direction="reverse" if p.reverseInput else "forward",
                     output_sequence=bool(p.sequenceOutput), recurrent_activation=names[0], activation=names[1])
    return _rank5(results, len(lay.output))


@layer("simpleRecurrent")
def _simple_recurrent(p, inputs, name, lay):
    """``SimpleRecurrentLayerParams``: inputs ``x, h``, outputs ``y, h``;
    ``y_t = f(W x_t + R y_{t-1} + b)``, MIL's rnn (module docstring)."""
    mb = mil_builder()
    hidden, size = int(p.outputVectorSize), int(p.inputVectorSize)
    bias = weight_values(p.biasVector, (hidden,)) if p.hasBiasVector else np.zeros(hidden, np.float32)
    activation = _activation(p.activation, f"layer {lay.name!r}") if p.HasField("activation") else "tanh"
    x = _sequence(inputs[0])
    results = mb.rnn(x=x, initial_h=_state(inputs, 1, x, hidden), weight_ih=weight_values(p.weightMatrix, (hidden, size)),
                     weight_hh=weight_values(p.recursionMatrix, (hidden, hidden)), bias=bias,
                     direction="reverse" if p.reverseInput else "forward", output_sequence=bool(p.sequenceOutput),
                     activation=activation)
    return _rank5(results, len(lay.output))
