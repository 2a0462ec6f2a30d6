"""Sampling an NCHW image at real-valued points, shared by ``resample``, ``affine`` and ``crop_resize``.

Follows ``resample`` in coremltools' ``ops/defs/iOS15/image_resizing.py`` (and its iOS16/17
updates):

* :func:`to_pixels` turns coordinates given in one of the spec's ``coordinates_mode`` values
  into pixel units (``0`` is the first pixel's centre, ``size - 1`` the last one's);
* :func:`bilinear` blends the four neighbours of each point, and :func:`nearest` takes the
  neighbour at ``floor(p + 0.5)``; under ``padding_mode="constant"`` a neighbour outside the
  image reads ``padding_value`` (``|1, 2, 3| -> |0, 0, 0, 1, 2, 3, 0, 0, 0|``).
* The other padding modes map a point back into the image: ``border`` clamps it to
  ``[0, size - 1]``, ``reflection`` mirrors it about the first and last pixel centres
  (``|1, 2, 3| -> |2, 3, 2, 1, 2, 3, 2, 1, 2|``) and ``symmetric`` about the image edges
  (``|1, 2, 3| -> |3, 2, 1, 1, 2, 3, 3, 2, 1|``). The mirror acts on the real coordinate
  before bilinear blending, which is what the expected outputs of coremltools' own
  ``TestResample`` require; nearest rounds first, then mirrors the integer index.
"""

from __future__ import annotations

import numpy as np


def to_pixels(coordinate: np.ndarray, size: int, mode: str, align_corners: bool) -> np.ndarray:
    """Pixel coordinate along an axis of ``size`` pixels from a ``coordinates_mode`` value.

    ``unnormalized`` is already in pixels. The normalized modes put ``-1``/``0`` and ``1`` at
    the centres of the first and last pixels when ``align_corners``, at their outer edges
    otherwise.
    """
    c = np.asarray(coordinate, dtype=np.float64)
    mode = str(mode).lower()
    if mode == "unnormalized":
        return c
    if mode == "normalized_minus_one_to_one":
        unit = (c + 1.0) / 2.0
    elif mode == "normalized_zero_to_one":
        unit = c
    else:
        raise ValueError(f"unknown coordinates_mode {mode!r}")
    if align_corners:
        return unit * (size - 1)
    return unit * size - 0.5


def _mirror(p: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold ``p`` into ``[low, high]`` by repeated reflection about both ends."""
    span = high - low
    if span <= 0:
        return np.full_like(p, low)
    folded = np.mod(p - low, 2.0 * span)
    return low + np.where(folded > span, 2.0 * span - folded, folded)


def fold_into_image(p: np.ndarray, size: int, padding_mode: str) -> np.ndarray:
    """Map a real pixel coordinate into the image under a non-constant ``padding_mode``."""
    padding_mode = str(padding_mode).lower()
    if padding_mode == "border":
        return np.clip(p, 0, size - 1)
    if padding_mode == "reflection":
        return _mirror(p, 0.0, size - 1.0)
    if padding_mode == "symmetric":
        return np.clip(_mirror(p, -0.5, size - 0.5), 0, size - 1)
    if padding_mode == "constant":
        return p
    raise ValueError(f"unknown padding_mode {padding_mode!r}")


def _read(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, pad) -> np.ndarray:
    """``image[b, :, rows, cols]`` per batch (rows/cols ``(B, *P)`` ints); ``pad`` outside."""
    b, _, h, w = image.shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    r = np.clip(rows, 0, h - 1)
    c = np.clip(cols, 0, w - 1)
    batch = np.arange(b).reshape((b,) + (1,) * (rows.ndim - 1))
    values = image[batch, :, r, c]  # (B, *P, C)
    values = np.moveaxis(values, -1, 1)  # (B, C, *P)
    if pad is None:
        return values
    return np.where(inside[:, None], values, np.asarray(pad, dtype=values.dtype))


def bilinear(image: np.ndarray, py: np.ndarray, px: np.ndarray, pad=None) -> np.ndarray:
    """Bilinear samples of ``image`` (B, C, H, W) at pixel points ``(py, px)`` of shape (B, *P).

    Returns (B, C, *P). Neighbours outside the image read ``pad`` (``None``: the points were
    folded into the image already).
    """
    y0 = np.floor(py)
    x0 = np.floor(px)
    fy = (py - y0)[:, None]
    fx = (px - x0)[:, None]
    y0 = y0.astype(np.intp)
    x0 = x0.astype(np.intp)
    top = _read(image, y0, x0, pad) * (1 - fx) + _read(image, y0, x0 + 1, pad) * fx
    bottom = _read(image, y0 + 1, x0, pad) * (1 - fx) + _read(image, y0 + 1, x0 + 1, pad) * fx
    return top * (1 - fy) + bottom * fy


def nearest_index(p: np.ndarray) -> np.ndarray:
    """The nearest pixel index, halves rounded up: ``floor(p + 0.5)``."""
    return np.floor(p + 0.5).astype(np.intp)


def sample(image, py, px, sampling_mode="bilinear", padding_mode="constant", padding_value=0.0):
    """Sample ``image`` (B, C, H, W) at pixel points ``(py, px)`` (B, *P) as ``resample`` does."""
    h, w = image.shape[-2:]
    padding_mode = str(padding_mode).lower()
    pad = padding_value if padding_mode == "constant" else None
    if str(sampling_mode).lower() == "nearest":
        rows = nearest_index(py).astype(np.float64)
        cols = nearest_index(px).astype(np.float64)
        rows = fold_into_image(rows, h, padding_mode)
        cols = fold_into_image(cols, w, padding_mode)
        return _read(image, np.rint(rows).astype(np.intp), np.rint(cols).astype(np.intp), pad)
    if str(sampling_mode).lower() != "bilinear":
        raise ValueError(f"unknown sampling_mode {sampling_mode!r}")
    py = fold_into_image(py, h, padding_mode)
    px = fold_into_image(px, w, padding_mode)
    return bilinear(image, py, px, pad)
