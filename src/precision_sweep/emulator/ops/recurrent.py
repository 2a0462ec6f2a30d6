"""lstm, gru, rnn (spec: ops/defs/iOS15/recurrent.py; iOS17 adds fp16, iOS18 gru's
``reset_after`` and ``input_bias``).

``x`` is ``[s, b, I]``; states are ``[b, H]`` (``[b, 2H]`` for a bidirectional lstm: forward
half first). Where the op definitions' prose is ambiguous, coremltools' own reference
outputs (``ops/tests/iOS14/test_recurrent.py``) decide, and this module follows them:

* ``direction="reverse"`` reads the sequence from its end and writes the output sequence in
  the order it computed it (step 0 is the last input), as a forward op on the reversed input;
  a bidirectional lstm's backward half is written back in input order (PyTorch's layout), and
  its last step (``output_sequence=False``) is ``[forward at s-1, backward at 0]``;
* gru's candidate is ``activation(W_io x + b_io + W_ho (r * h) + b_ho)``: the reset gate
  scales ``h`` before the product (with iOS18's ``reset_after``, after it:
  ``r * (W_ho h + b_ho)``, PyTorch's and Keras' form);
* lstm's ``clip`` bounds the cell state ``c_t`` after its update (the output gate's peephole
  reads the clipped value); peepholes of the input and forget gates read ``c_{t-1}``;
* activations take the standard parameters of their MIL ops: ``hard_sigmoid`` (or
  ``sigmoid_hard``) is ``sigmoid_hard``'s ``clip(0.2 x + 0.5, 0, 1)``, ``scaled_tanh`` is
  ``tanh`` (alpha = beta = 1), ``linear`` the identity (alpha 1, beta 0).

Every step computes in ``x``'s dtype (weights are cast to it), so an fp16 op sees the executor's
fp32 copies or fp16 values as its unit model says, like every other kernel.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from precision_sweep.emulator.ops.activation import (
    linear_activation,
    relu,
    scaled_tanh,
    sigmoid,
    sigmoid_hard,
    tanh,
)
from precision_sweep.emulator.registry import kernel

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "scaled_tanh": scaled_tanh,
    "hard_sigmoid": sigmoid_hard,
    "sigmoid_hard": sigmoid_hard,
    "linear": lambda x: linear_activation(x, 1.0, 0.0),
}


def _activation(name) -> Callable[[np.ndarray], np.ndarray]:
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} not supported; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[key]


def _typed(value, dtype, shape) -> np.ndarray:
    """An optional weight as an array of ``dtype`` (zeros of ``shape`` when absent)."""
    if value is None:
        return np.zeros(shape, dtype)
    return np.asarray(value).astype(dtype, copy=False)


def _sequence(outputs: list[np.ndarray], output_sequence) -> np.ndarray:
    """``[s, b, H]`` (every step) or ``[1, b, H]`` (the last one)."""
    return np.stack(outputs) if bool(output_sequence) else outputs[-1][None]


def _lstm_pass(x, h, c, weight_ih, weight_hh, bias, peephole, clip, acts):
    """One direction over ``x`` in the order given: every step's ``h``, and the final ``h``, ``c``."""
    recurrent, cell, output = acts
    hidden = weight_hh.shape[1]
    p_i, p_f, p_o = np.split(peephole, 3)
    from_x = x @ weight_ih.T + bias  # [s, b, 4H]: the input terms of every step at once
    outputs = []
    for t in range(x.shape[0]):
        gates = from_x[t] + h @ weight_hh.T
        g_i, g_f, g_o, g_z = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
        i = recurrent(g_i + c * p_i)
        f = recurrent(g_f + c * p_f)
        z = cell(g_z)
        c = f * c + i * z
        if clip is not None:
            c = np.clip(c, -clip, clip)
        o = recurrent(g_o + c * p_o)
        h = o * output(c)
        outputs.append(h)
    return outputs, h, c


@kernel("lstm")
def lstm(
    x,
    initial_h,
    initial_c,
    weight_ih,
    weight_hh,
    bias=None,
    peephole=None,
    weight_ih_back=None,
    weight_hh_back=None,
    bias_back=None,
    peephole_back=None,
    direction="forward",
    output_sequence=False,
    recurrent_activation="sigmoid",
    cell_activation="tanh",
    activation="tanh",
    clip=None,
):
    """Outputs ``[s or 1, b, D*H]``, ``h [b, D*H]``, ``c [b, D*H]`` (D = 2 if bidirectional)."""
    dtype = x.dtype
    direction = str(direction)
    hidden = weight_hh.shape[1]
    acts = (_activation(recurrent_activation), _activation(cell_activation), _activation(activation))
    bound = None if clip is None else dtype.type(clip)

    def weights(w_ih, w_hh, b, p):
        return (w_ih.astype(dtype, copy=False), w_hh.astype(dtype, copy=False),
                _typed(b, dtype, 4 * hidden), _typed(p, dtype, 3 * hidden))

    h0, c0 = initial_h.astype(dtype, copy=False), initial_c.astype(dtype, copy=False)
    if direction in ("forward", "reverse"):
        steps = x[::-1] if direction == "reverse" else x
        outputs, h, c = _lstm_pass(steps, h0, c0, *weights(weight_ih, weight_hh, bias, peephole), bound, acts)
        return _sequence(outputs, output_sequence), h, c
    if direction != "bidirectional":
        raise ValueError(f"lstm direction {direction!r}: forward, reverse or bidirectional")
    if weight_ih_back is None or weight_hh_back is None:
        raise ValueError("a bidirectional lstm needs weight_ih_back and weight_hh_back")
    forward, h_f, c_f = _lstm_pass(x, h0[:, :hidden], c0[:, :hidden],
                                   *weights(weight_ih, weight_hh, bias, peephole), bound, acts)
    backward, h_b, c_b = _lstm_pass(x[::-1], h0[:, hidden:], c0[:, hidden:],
                                    *weights(weight_ih_back, weight_hh_back, bias_back, peephole_back), bound, acts)
    if bool(output_sequence):
        y = np.concatenate([np.stack(forward), np.stack(backward[::-1])], axis=-1)
    else:
        y = np.concatenate([forward[-1], backward[-1]], axis=-1)[None]
    return y, np.concatenate([h_f, h_b], axis=-1), np.concatenate([c_f, c_b], axis=-1)


def _one_direction(direction) -> bool:
    """Whether a gru/rnn reads its sequence reversed (they have no bidirectional form)."""
    direction = str(direction)
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction {direction!r}: forward or reverse")
    return direction == "reverse"


@kernel("gru")
def gru(
    x,
    initial_h,
    weight_ih,
    weight_hh,
    bias=None,
    direction="forward",
    output_sequence=False,
    recurrent_activation="sigmoid",
    activation="tanh",
    reset_after=False,
    input_bias=None,
):
    """Outputs ``[s or 1, b, H]`` and ``h [b, H]``. Gate order ``[r, o, z]`` (reset, output,
    update) in ``weight_ih``, ``weight_hh``, ``bias`` and ``input_bias``; ``bias`` belongs to the
    hidden side (it matters only for ``reset_after``), ``input_bias`` (iOS18) to the input side."""
    dtype = x.dtype
    hidden = weight_hh.shape[1]
    recurrent, candidate = _activation(recurrent_activation), _activation(activation)
    w_ih, w_hh = weight_ih.astype(dtype, copy=False), weight_hh.astype(dtype, copy=False)
    w_hr, w_ho, w_hz = (w_hh[k * hidden:(k + 1) * hidden] for k in range(3))
    b_hr, b_ho, b_hz = np.split(_typed(bias, dtype, 3 * hidden), 3)
    steps = x[::-1] if _one_direction(direction) else x
    from_x = steps @ w_ih.T + _typed(input_bias, dtype, 3 * hidden)  # [s, b, 3H]
    h = initial_h.astype(dtype, copy=False)
    outputs = []
    for t in range(steps.shape[0]):
        x_r, x_o, x_z = (from_x[t][:, k * hidden:(k + 1) * hidden] for k in range(3))
        z = recurrent(x_z + h @ w_hz.T + b_hz)
        r = recurrent(x_r + h @ w_hr.T + b_hr)
        if bool(reset_after):
            o = candidate(x_o + r * (h @ w_ho.T + b_ho))
        else:
            o = candidate(x_o + (h * r) @ w_ho.T + b_ho)
        h = (1 - z) * o + z * h
        outputs.append(h)
    return _sequence(outputs, output_sequence), h


@kernel("rnn")
def rnn(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        activation="tanh"):
    """Outputs ``[s or 1, b, H]`` and ``h [b, H]``: ``h_t = activation(W_ih x_t + W_hh h_{t-1} + b)``."""
    dtype = x.dtype
    act = _activation(activation)
    w_hh = weight_hh.astype(dtype, copy=False)
    steps = x[::-1] if _one_direction(direction) else x
    from_x = steps @ weight_ih.astype(dtype, copy=False).T + _typed(bias, dtype, w_hh.shape[0])
    h = initial_h.astype(dtype, copy=False)
    outputs = []
    for t in range(steps.shape[0]):
        h = act(from_x[t] + h @ w_hh.T)
        outputs.append(h)
    return _sequence(outputs, output_sequence), h
