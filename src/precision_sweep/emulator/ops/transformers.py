"""Transformer ops (spec: ops/defs/iOS18/transformers.py): scaled_dot_product_attention."""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops._accumulate import FP32
from precision_sweep.emulator.ops._casts import round_float16_in_float32
from precision_sweep.emulator.ops.activation import softmax
from precision_sweep.emulator.registry import kernel


@kernel("scaled_dot_product_attention")
def scaled_dot_product_attention(query, key, value, attn_mask=None, *, accumulator=FP32):
    """``softmax(Q K^T / sqrt(E) + mask) V``; a bool mask sets -inf where it is False. Both
    products and the softmax's sum go through the op's accumulator."""
    scores = accumulator.matmul(query, np.swapaxes(key, -1, -2))
    scores = scores / np.sqrt(np.asarray(query.shape[-1], dtype=scores.dtype))
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            scores = np.where(attn_mask, scores, np.asarray(-np.inf, dtype=scores.dtype))
        else:
            scores = scores + attn_mask.astype(scores.dtype)
    probabilities = softmax(scores, axis=-1, accumulator=accumulator)
    if accumulator.rounds_to_fp16:  # the fp16 models multiply fp16 values: the stored softmax
        probabilities = round_float16_in_float32(probabilities)
    return accumulator.matmul(probabilities.astype(value.dtype), value)
