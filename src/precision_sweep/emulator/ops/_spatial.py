"""Padding and window helpers shared by the conv and pool families.

Follows ``aggregated_pad`` and ``spatial_dimensions_out_shape`` in coremltools'
``ops/defs/_utils.py``: "same" puts the smaller half of the padding before, "same_lower"
the larger half; "custom" takes ``pad`` as [before_0, after_0, before_1, after_1, ...].
"""

from __future__ import annotations

import math

import numpy as np


def pad_amounts(pad_type, spatial_in, kernel, strides, dilations, pad) -> list[tuple[int, int]]:
    """Per spatial dim ``(before, after)`` padding."""
    pad_type = str(pad_type)
    effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if pad_type == "valid":
        return [(0, 0)] * len(kernel)
    if pad_type == "custom":
        pad = [int(p) for p in np.asarray(pad).reshape(-1)]
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(kernel))]
    if pad_type in ("same", "same_lower"):
        out = []
        for size, k, s in zip(spatial_in, effective, strides):
            total = max(0, s * math.ceil(size / s) - size + k - s)
            small, large = total // 2, total - total // 2
            out.append((small, large) if pad_type == "same" else (large, small))
        return out
    raise ValueError(f"unknown pad_type {pad_type!r}")


def windows(x: np.ndarray, kernel, strides, dilations) -> np.ndarray:
    """Strided view of sliding windows over the trailing spatial dims of ``x`` (N, C, *S).

    Returns shape (N, C, *out, *kernel), no copy.
    """
    nd = len(kernel)
    effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    view = np.lib.stride_tricks.sliding_window_view(x, effective, axis=tuple(range(2, 2 + nd)))
    index = (slice(None), slice(None))
    index += tuple(slice(None, None, s) for s in strides)
    index += tuple(slice(None, None, d) for d in dilations)
    return view[index]
