"""Resizing and resampling ops (spec: ops/defs/iOS15/image_resizing.py, iOS16 and iOS17 updates).

Every op resizes or resamples the trailing spatial dims (H, W) of ``x``. Bilinear resizing is
separable: each axis is a gather of two neighbour rows plus a linear blend, so there is no
per-pixel Python loop. The sampling grids are the ones the spec's docstrings spell out.
``crop_resize`` samples a grid per box, ``affine`` and ``resample`` sample at arbitrary
points (through :mod:`._sampling`).
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops import _sampling
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


# ---------------------------------------------------------------- crop_resize
def _box_corners(boxes: np.ndarray, mode: str) -> tuple[np.ndarray, ...]:
    """``(h_start, w_start, h_end, w_end)`` of ``boxes`` (N, 4) in a ``box_coordinate_mode``."""
    a, b, c, d = (boxes[:, i].astype(np.float64) for i in range(4))
    if mode == "CORNERS_HEIGHT_FIRST":
        return a, b, c, d
    if mode == "CORNERS_WIDTH_FIRST":
        return b, a, d, c
    if mode == "CENTER_SIZE_HEIGHT_FIRST":
        return a - c / 2, b - d / 2, a + c / 2, b + d / 2
    if mode == "CENTER_SIZE_WIDTH_FIRST":
        return b - d / 2, a - c / 2, b + d / 2, a + c / 2
    raise ValueError(f"unknown box_coordinate_mode {mode!r}")


def box_grid(start: np.ndarray, end: np.ndarray, size_out: int, mode: str) -> np.ndarray:
    """Sample positions (N, size_out) inside boxes ``[start, end]`` (N,) along one axis.

    The ``resize_bilinear`` grid of ``sampling_mode`` laid over the box: the box spans
    ``X = end - start + 1`` pixels (so ``ALIGN_CORNERS`` samples ``start`` and ``end``) and
    each offset from ``start`` is kept within ``[0, X - 1]`` as that grid is. An inverted box
    (``end < start``) samples backwards.
    """
    extent = (end - start)[:, None]  # X - 1
    size_in = extent + 1.0
    i = np.arange(size_out, dtype=np.float64)[None, :]
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if size_out == 1:
            offset = extent * (0.0 if mode == "STRICT_ALIGN_CORNERS" else 0.5) + 0 * i
        else:
            offset = i * extent / (size_out - 1)
    elif mode == "DEFAULT":
        spacing = (size_in - size_in / size_out) / (size_out - 1) if size_out > 1 else 0.0 * extent
        offset = i * spacing
    elif mode == "OFFSET_CORNERS":
        delta = np.maximum(1.0, extent) / size_out
        offset = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        spacing = size_in / size_out
        offset = i * spacing + 0.5 * spacing - 0.5
    else:
        raise ValueError(f"unknown sampling_mode {mode!r}")
    offset = np.clip(offset, np.minimum(extent, 0.0), np.maximum(extent, 0.0))
    return start[:, None] + offset


def _crop(x, boxes, box_indices, target_height, target_width, normalized, spatial_scale, box_mode, sampling_mode, pad_value):
    """Crops (N, C, th, tw): box ``n`` of ``boxes`` (N, 4) sampled from image ``box_indices[n]``.

    A sample outside ``[0, H - 1] x [0, W - 1]`` is ``pad_value`` (TF's
    ``extrapolation_value``); inside, the bilinear blend of its four neighbours.
    """
    h, w = x.shape[-2:]
    h0, w0, h1, w1 = _box_corners(np.asarray(boxes), str(box_mode))
    scale_h = (h - 1) if normalized else 1.0
    scale_w = (w - 1) if normalized else 1.0
    scale = float(spatial_scale)
    rows = box_grid(h0 * scale_h * scale, h1 * scale_h * scale, int(target_height), str(sampling_mode))
    cols = box_grid(w0 * scale_w * scale, w1 * scale_w * scale, int(target_width), str(sampling_mode))
    py = np.broadcast_to(rows[:, :, None], rows.shape + (cols.shape[1],))
    px = np.broadcast_to(cols[:, None, :], (cols.shape[0], rows.shape[1], cols.shape[1]))
    inside = (py >= 0) & (py <= h - 1) & (px >= 0) & (px <= w - 1)
    images = x[np.asarray(box_indices).astype(np.intp).reshape(-1)]
    crops = _sampling.bilinear(images, np.clip(py, 0, h - 1), np.clip(px, 0, w - 1))
    return np.where(inside[:, None], crops, np.asarray(pad_value, dtype=crops.dtype))


@kernel("crop_resize")
def crop_resize(x, roi=None, boxes=None, box_indices=None, target_height=1, target_width=1,
                normalized_coordinates=False, spatial_scale=1.0, box_coordinate_mode="CORNERS_HEIGHT_FIRST",
                sampling_mode="DEFAULT", pad_value=0.0):
    """Bilinear crops of ``x`` (B, C, H, W) (spec: iOS15/16/17 ``image_resizing.py``, ``crop_resize``).

    iOS15/16 take ``roi`` (N, 1, 4 or 5, 1, 1): four coordinates crop every image, giving
    (N, B, C, th, tw); five start with the image index, giving (N, 1, C, th, tw). iOS17 takes
    ``boxes`` (N, 4) and ``box_indices`` (N,) (default ``arange(N)``), giving (N, C, th, tw).
    ``normalized_coordinates`` scales heights by ``H - 1`` and widths by ``W - 1``; every
    coordinate is then multiplied by ``spatial_scale``. The sample grid is :func:`box_grid`;
    ``pad_value`` (iOS16+) fills samples outside the image.
    """
    args = (target_height, target_width, bool(normalized_coordinates), spatial_scale,
            box_coordinate_mode, sampling_mode, 0.0 if pad_value is None else pad_value)
    if roi is None:
        n = np.asarray(boxes).shape[0]
        indices = np.arange(n) if box_indices is None else box_indices
        return _crop(x, np.asarray(boxes), indices, *args)
    roi = np.asarray(roi).reshape(np.shape(roi)[0], -1)
    if roi.shape[1] == 5:
        crops = _crop(x, roi[:, 1:], roi[:, 0], *args)
        return crops[:, None]
    n, b = roi.shape[0], x.shape[0]
    crops = _crop(x, np.repeat(roi, b, axis=0), np.tile(np.arange(b), n), *args)
    return crops.reshape((n, b) + crops.shape[1:])


# ---------------------------------------------------------------- affine, resample
def _output_grid(size: int, align_corners: bool) -> np.ndarray:
    """Normalized ``[-1, 1]`` coordinate of each output position along one axis."""
    i = np.arange(size, dtype=np.float64)
    if align_corners:
        return np.zeros(1) if size == 1 else -1.0 + 2.0 * i / (size - 1)
    return (2.0 * i + 1.0) / size - 1.0


@kernel("affine")
def affine(x, transform_matrix, output_height, output_width, sampling_mode="bilinear", padding_mode="constant",
           padding_value=0.0, coordinates_mode="normalized_minus_one_to_one", align_corners=True):
    """Affine warp of ``x`` (B, C, H, W) (spec: iOS15 ``image_resizing.py``, ``affine``).

    Output position ``(x, y)`` (normalized ``[-1, 1]`` over the output grid, corners at pixel
    centres when ``align_corners``) reads the input at ``x' = a0 x + a1 y + a2``,
    ``y' = b0 x + b1 y + b2`` (same coordinate convention over the input), one matrix row per
    batch entry or one for all (``D == 1``); sampled and padded as ``resample``.
    """
    matrix = np.asarray(transform_matrix, dtype=np.float64).reshape(-1, 6)
    b = x.shape[0]
    matrix = np.broadcast_to(matrix, (b, 6)) if matrix.shape[0] == 1 else matrix
    gy = _output_grid(int(output_height), bool(align_corners))
    gx = _output_grid(int(output_width), bool(align_corners))
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    a0, a1, a2, b0, b1, b2 = (matrix[:, k].reshape(b, 1, 1) for k in range(6))
    coordinates = np.stack([a0 * xx + a1 * yy + a2, b0 * xx + b1 * yy + b2], axis=-1)
    return resample(x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners)


@kernel("resample")
def resample(x, coordinates, sampling_mode="bilinear", padding_mode="constant", padding_value=0.0,
             coordinates_mode="unnormalized", align_corners=False):
    """Sample ``x`` (B, C, H1, W1) at ``coordinates`` (B, H2, W2, 2) given as ``(x, y)``
    (spec: iOS15/16/17 ``image_resizing.py``, ``resample``); output (B, C, H2, W2).

    Coordinate modes, padding modes and rounding as :mod:`._sampling` spells out.
    """
    h, w = x.shape[-2:]
    coordinates = np.asarray(coordinates)
    mode, align = str(coordinates_mode), bool(align_corners)
    px = _sampling.to_pixels(coordinates[..., 0], w, mode, align)
    py = _sampling.to_pixels(coordinates[..., 1], h, mode, align)
    return _sampling.sample(x, py, px, sampling_mode, padding_mode, padding_value)
