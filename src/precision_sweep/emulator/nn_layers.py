"""The NeuralNetwork loader's registry of layer adapters and what every adapter reads with.

:data:`LAYERS` maps an NN layer type to its adapter (registered with :func:`layer` by
:mod:`~precision_sweep.emulator.nn_program` and :mod:`~precision_sweep.emulator.nn_recurrent`);
:func:`weight_values` reads a layer's ``WeightParams`` (float, float16 or quantized) back to
float32 as the runtime does at load; :func:`mil_builder` is coremltools' MIL builder the
adapters build with.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

LAYERS: dict[str, Callable] = {}


class UnsupportedLayerError(NotImplementedError):
    """The NeuralNetwork spec holds a layer type without an adapter."""


def layer(*layer_types: str):
    """Register an adapter ``fn(params, inputs, name, layer) -> Var | list[Var]``."""

    def register(fn):
        for layer_type in layer_types:
            LAYERS[layer_type] = fn
        return fn

    return register


def mil_builder():
    """coremltools' MIL builder (imported when a spec is first read)."""
    from coremltools.converters.mil.mil import Builder

    return Builder


def weight_values(params, shape=None, axis: int = 0) -> np.ndarray:
    """The float32 values of a ``WeightParams``: float, float16, or quantized.

    Quantized weights (``quantization`` with ``numberOfBits`` n, codes packed most significant
    bit first in ``rawValue``, as coremltools' ``quantization_utils`` writes them) are read back
    as the runtime does at load: linear ``code * scale + bias`` or a look-up table, either one
    for the whole tensor or one per channel along ``axis`` (the output channels; a
    deconvolution's are axis 1).
    """
    if len(params.floatValue):
        values = np.asarray(params.floatValue, dtype=np.float32)
    elif len(params.float16Value):
        values = np.frombuffer(params.float16Value, dtype=np.float16).astype(np.float32)
    elif params.HasField("quantization"):
        return _dequantized(params, tuple(shape), axis)
    elif len(params.rawValue):
        values = np.frombuffer(params.rawValue, dtype=np.float32).copy()
    else:
        values = np.zeros(0, dtype=np.float32)
    return values.reshape(shape) if shape is not None else values


def _dequantized(params, shape: tuple, axis: int) -> np.ndarray:
    quantization = params.quantization
    nbits = int(quantization.numberOfBits)
    count = int(np.prod(shape))
    raw = np.frombuffer(params.rawValue, dtype=np.uint8)
    if nbits == 8:
        codes = raw[:count].astype(np.int64)
    else:
        bits = np.unpackbits(raw)[: count * nbits].reshape(count, nbits).astype(np.int64)
        codes = bits @ (1 << np.arange(nbits - 1, -1, -1))
    codes = np.moveaxis(codes.reshape(shape), axis, 0)
    channels = codes.shape[0]
    if quantization.WhichOneof("QuantizationType") == "linearQuantization":
        # in float64, rounded once to float32, as coremltools' own _dequantize_linear computes it
        scale = np.asarray(quantization.linearQuantization.scale, dtype=np.float64)
        bias = np.asarray(quantization.linearQuantization.bias, dtype=np.float64)
        per = (channels,) + (1,) * (codes.ndim - 1)
        scale = scale.reshape(per) if scale.size == channels and channels > 1 else scale.reshape(-1)[0]
        bias = bias.reshape(per) if bias.size == channels and channels > 1 else bias.reshape(-1)[0]
        values = codes.astype(np.float64) * scale + bias
    else:
        table = np.asarray(quantization.lookupTableQuantization.floatValue, dtype=np.float32).reshape(-1, 1 << nbits)
        if table.shape[0] == 1:
            values = table[0][codes]
        else:
            values = np.take_along_axis(table, codes.reshape(channels, -1), axis=1).reshape(codes.shape)
    return np.ascontiguousarray(np.moveaxis(values.astype(np.float32), 0, axis))
