"""Resizing ops (spec: ops/defs/iOS15/image_resizing.py, iOS16 and iOS17 updates).

Every op resizes the trailing spatial dims (H, W) of ``x``. Bilinear resizing is separable:
each axis is a gather of two neighbour rows plus a linear blend, so there is no per-pixel
Python loop. The sampling grids are the ones the spec's docstrings spell out.
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.registry import kernel


def grid(size_in: int, size_out: int, mode: str) -> np.ndarray:
    """Source coordinate of every output position along one axis (``resize_bilinear`` modes).

    ``mode`` is one of ``STRICT_ALIGN_CORNERS``, ``ALIGN_CORNERS``, ``DEFAULT``,
    ``OFFSET_CORNERS``, ``UNALIGN_CORNERS``; the result is clipped to ``[0, size_in - 1]``.
    """
    i = np.arange(size_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if size_out == 1:
            point = np.full(1, 0.0 if mode == "STRICT_ALIGN_CORNERS" else (size_in - 1) / 2.0)
        else:
            point = i * ((size_in - 1) / (size_out - 1))
    elif mode == "DEFAULT":
        spacing = (size_in - size_in / size_out) / (size_out - 1) if size_out > 1 else 0.0
        point = i * spacing
    elif mode == "OFFSET_CORNERS":
        delta = max(1, size_in - 1) / size_out
        point = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        spacing = size_in / size_out
        point = i * spacing + 0.5 * spacing - 0.5
    else:
        raise ValueError(f"unknown sampling_mode {mode!r}")
    return np.clip(point, 0, size_in - 1)


def _linear_axis(x: np.ndarray, axis: int, point: np.ndarray) -> np.ndarray:
    lo = np.floor(point).astype(np.intp)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (point - lo).astype(np.float32 if x.dtype != np.float64 else np.float64)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape).astype(x.dtype if x.dtype.kind == "f" else np.float32)
    a = np.take(x, lo, axis=axis)
    b = np.take(x, hi, axis=axis)
    return a + (b - a) * frac


def _bilinear(x, out_h, out_w, mode_h, mode_w=None):
    mode_w = mode_w or mode_h
    y = _linear_axis(x, x.ndim - 2, grid(x.shape[-2], out_h, mode_h))
    return _linear_axis(y, x.ndim - 1, grid(x.shape[-1], out_w, mode_w))


def _nearest_axis(x: np.ndarray, axis: int, source: np.ndarray) -> np.ndarray:
    source = np.clip(source, 0, x.shape[axis] - 1).astype(np.intp)
    return np.take(x, source, axis=axis)


def _half_pixel_nearest(size_in, size_out):
    # TF ResizeNearestNeighbor(half_pixel_centers=True), which the TF frontend maps here.
    return np.floor((np.arange(size_out) + 0.5) * (size_in / size_out))


@kernel("upsample_nearest_neighbor")
def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1):
    """Output ``floor(H * scale)``; output row ``i`` reads input row ``floor(i * H / H_out)``.

    The scale is recomputed from the output size (as ``upsample_bilinear`` documents), so
    the TF frontend's ``(H_out + 1e-4) / H`` scale factors map like TF's legacy nearest.
    """
    h, w = x.shape[-2:]
    out_h = int(np.floor(h * float(scale_factor_height)))
    out_w = int(np.floor(w * float(scale_factor_width)))
    y = _nearest_axis(x, x.ndim - 2, (np.arange(out_h) * h) // out_h)
    return _nearest_axis(y, x.ndim - 1, (np.arange(out_w) * w) // out_w)


@kernel("resize_nearest_neighbor")
def resize_nearest_neighbor(x, target_size_height, target_size_width):
    """Nearest neighbour at half-pixel centres: row ``floor((i + 0.5) * H_in / H_out)``."""
    h, w = x.shape[-2:]
    th, tw = int(target_size_height), int(target_size_width)
    y = _nearest_axis(x, x.ndim - 2, _half_pixel_nearest(h, th))
    return _nearest_axis(y, x.ndim - 1, _half_pixel_nearest(w, tw))


@kernel("upsample_bilinear")
def upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True, half_pixel_centers=None):
    """Bilinear upsampling with the scale recomputed from the output size.

    ``align_corners``: grid ``i * (Xin - 1) / (Xout - 1)``. Otherwise spacing ``Xin / Xout``
    and grid ``i * spacing + 0.5 * spacing - 0.5`` if ``half_pixel_centers`` (iOS16; defaults
    to ``not align_corners``) else ``i * spacing``.
    """
    h, w = x.shape[-2:]
    out_h = int(np.floor(h * float(scale_factor_height)))
    out_w = int(np.floor(w * float(scale_factor_width)))
    align_corners = bool(align_corners)
    half = (not align_corners) if half_pixel_centers is None else bool(half_pixel_centers)
    if align_corners:
        mode = "STRICT_ALIGN_CORNERS"
    elif half:
        mode = "UNALIGN_CORNERS"
    else:
        mode = "DEFAULT"
    return _bilinear(x, out_h, out_w, mode)


@kernel("resize_bilinear")
def resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    return _bilinear(x, int(target_size_height), int(target_size_width), str(sampling_mode))


@kernel("resize")
def resize(x, shape, resized_dims, interpolation_mode="LINEAR", sampling_mode="DEFAULT"):
    """iOS17 resize of the trailing ``resized_dims`` dims to the tail of ``shape`` (0 keeps).

    ``NEAREST_NEIGHBOR`` reads the source index ``floor((i + 0.5) * Xin / Xout)`` (half-pixel
    centres, the TF mapping the frontend uses), or the rounded grid point for the two
    align-corners modes.
    """
    shape = [int(s) for s in np.asarray(shape).reshape(-1)]
    k = int(resized_dims)
    targets = shape[len(shape) - k :]
    mode = str(sampling_mode)
    y = x
    for offset, target in enumerate(targets):
        axis = x.ndim - k + offset
        size_in = x.shape[axis]
        target = size_in if target == 0 else target
        if str(interpolation_mode) == "NEAREST_NEIGHBOR":
            if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
                source = np.floor(grid(size_in, target, mode) + 0.5)
            else:
                source = _half_pixel_nearest(size_in, target)
            y = _nearest_axis(y, axis, source)
        else:
            y = _linear_axis(y.astype(np.float32) if y.dtype.kind != "f" else y, axis, grid(size_in, target, mode))
    return y


@kernel("crop")
def crop(x, crop_height, crop_width):
    ch = [int(v) for v in np.asarray(crop_height).reshape(-1)]
    cw = [int(v) for v in np.asarray(crop_width).reshape(-1)]
    h, w = x.shape[-2:]
    return x[..., ch[0] : h - ch[1], cw[0] : w - cw[1]]
