"""Transformer ops (spec: ops/defs/iOS18/transformers.py): scaled_dot_product_attention."""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops import _accumulate
from precision_sweep.emulator.ops.activation import softmax
from precision_sweep.emulator.registry import kernel


@kernel("scaled_dot_product_attention")
def scaled_dot_product_attention(query, key, value, attn_mask=None):
    """``softmax(Q K^T / sqrt(E) + mask) V``; a bool mask sets -inf where it is False."""
    scores = _accumulate.matmul(query, np.swapaxes(key, -1, -2))
    scores = scores / np.sqrt(np.asarray(query.shape[-1], dtype=scores.dtype))
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            scores = np.where(attn_mask, scores, np.asarray(-np.inf, dtype=scores.dtype))
        else:
            scores = scores + attn_mask.astype(scores.dtype)
    return _accumulate.matmul(softmax(scores, axis=-1).astype(value.dtype), value)
