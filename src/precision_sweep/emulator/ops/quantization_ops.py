"""Activation quantize/dequantize (spec: ops/defs/iOS17/quantization_ops.py).

quantize:   clip(round(input / scale) + zero_point), clipped to the output dtype's range.
dequantize: (input - zero_point) * scale.
Rounding is round-half-to-even, as numpy's ``rint`` (the spec says "round").
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.registry import kernel

_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def _along(value, rank, axis):
    value = np.asarray(value)
    if value.ndim == 0 or axis is None:
        return value
    shape = [1] * rank
    shape[int(axis) % rank] = value.size
    return value.reshape(shape)


@kernel("quantize")
def quantize(input, scale, output_dtype, zero_point=None, axis=None):  # noqa: A002 (spec name)
    low, high = _RANGES[str(output_dtype)]
    rank = input.ndim
    q = np.rint(input.astype(np.float32) / _along(scale, rank, axis).astype(np.float32))
    if zero_point is not None:
        q = q + _along(zero_point, rank, axis).astype(np.float32)
    return np.clip(q, low, high).astype(str(output_dtype))


@kernel("dequantize")
def dequantize(input, scale, zero_point=None, axis=None):  # noqa: A002 (spec name)
    rank = input.ndim
    x = input.astype(np.float32)
    if zero_point is not None:
        x = x - _along(zero_point, rank, axis).astype(np.float32)
    return x * _along(scale, rank, axis).astype(np.float32)
