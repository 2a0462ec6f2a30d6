"""Shape and layout ops (spec: ops/defs/iOS15/tensor_transformation.py, iOS16/17/18 updates)."""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.registry import kernel


def _ints(values):
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _zeros_copied(from_shape, to_shape):
    """Each ``0`` of ``to_shape`` takes the dim of ``from_shape`` it is right-aligned with,
    or 1 past its start (iOS17 ``reshape.replace_zeros_in_shape``; iOS15 requires equal
    lengths, where right and left alignment agree)."""
    from_reversed = list(from_shape)[::-1]
    out = list(to_shape)[::-1]
    for i, dim in enumerate(out):
        if dim == 0:
            out[i] = from_reversed[i] if i < len(from_reversed) else 1
    return out[::-1]


@kernel("reshape")
def reshape(x, shape):
    """``x`` with ``shape`` (spec: iOS15/iOS17 ``tensor_transformation.py``, ``reshape``):
    ``-1`` is inferred, ``0`` copies an input dim (:func:`_zeros_copied`)."""
    return np.reshape(x, _zeros_copied(x.shape, _ints(shape)))


@kernel("reshape_like")
def reshape_like(x, ref_tensors, begins, ends, end_masks):
    shape = []
    for ref, begin, end, end_mask in zip(ref_tensors, _ints(begins), _ints(ends), end_masks):
        shape.extend(ref.shape[begin:] if end_mask else ref.shape[begin:end])
    return np.reshape(x, shape)


@kernel("transpose")
def transpose(x, perm):
    return np.transpose(x, _ints(perm))


@kernel("squeeze")
def squeeze(x, axes=None):
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(_ints(axes)))


@kernel("expand_dims")
def expand_dims(x, axes):
    rank = x.ndim + len(_ints(axes))
    return np.expand_dims(x, tuple(sorted(a % rank for a in _ints(axes))))


@kernel("slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    begin, end = _ints(begin), _ints(end)
    rank = len(begin)
    stride = _ints(stride) if stride is not None else [1] * rank
    begin_mask = list(np.asarray(begin_mask).reshape(-1)) if begin_mask is not None else [False] * rank
    end_mask = list(np.asarray(end_mask).reshape(-1)) if end_mask is not None else [False] * rank
    squeeze_mask = list(np.asarray(squeeze_mask).reshape(-1)) if squeeze_mask is not None else [False] * rank
    index = []
    for axis in range(rank):
        if squeeze_mask[axis]:
            index.append(begin[axis])
            continue
        start = None if begin_mask[axis] else begin[axis]
        stop = None if end_mask[axis] else end[axis]
        index.append(slice(start, stop, stride[axis]))
    return x[tuple(index)]


@kernel("slice_by_size")
def slice_by_size(x, begin, size):
    index = []
    for b, s, dim in zip(_ints(begin), _ints(size), x.shape):
        index.append(slice(b, dim if s == -1 else b + s))
    return x[tuple(index)]


@kernel("depth_to_space")
def depth_to_space(x, block_size):
    n, c, h, w = x.shape
    b = int(block_size)
    y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (b * b), h * b, w * b)


@kernel("space_to_depth")
def space_to_depth(x, block_size):
    n, c, h, w = x.shape
    b = int(block_size)
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


@kernel("space_to_batch")
def space_to_batch(x, block_shape, paddings):
    """Spatial blocks into the batch (spec: iOS15 ``tensor_transformation.py``, ``space_to_batch``).

    ``x`` (n, C, H, W) is zero-padded by ``paddings`` [[top, bottom], [left, right]]; output
    batch ``(i * bw + j) * n + b`` holds ``padded[b, :, i::bh, j::bw]`` (TF's
    ``space_to_batch_nd`` order), shape (n * bh * bw, C, H' / bh, W' / bw).
    """
    bh, bw = _ints(block_shape)
    pads = np.asarray(paddings).astype(np.intp).reshape(2, 2)
    padded = np.pad(x, [(0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])])
    n, c, h, w = padded.shape
    blocks = padded.reshape(n, c, h // bh, bh, w // bw, bw).transpose(3, 5, 0, 1, 2, 4)
    return blocks.reshape(bh * bw * n, c, h // bh, w // bw)


@kernel("batch_to_space")
def batch_to_space(x, block_shape, crops):
    """Inverse of ``space_to_batch`` (spec: iOS15 ``tensor_transformation.py``, ``batch_to_space``):
    batch ``(i * bw + j) * n + b`` goes to ``out[b, :, i::bh, j::bw]``, then ``crops``
    [[top, bottom], [left, right]] are removed; shape (n, C, H * bh - crops, W * bw - crops).
    """
    bh, bw = _ints(block_shape)
    top, bottom, left, right = _ints(crops)
    nb, c, h, w = x.shape
    n = nb // (bh * bw)
    full = x.reshape(bh, bw, n, c, h, w).transpose(2, 3, 4, 0, 5, 1).reshape(n, c, h * bh, w * bw)
    return full[:, :, top : h * bh - bottom, left : w * bw - right]


@kernel("pixel_shuffle")
def pixel_shuffle(x, upscale_factor):
    n, c, h, w = x.shape
    f = int(upscale_factor)
    y = x.reshape(n, c // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (f * f), h * f, w * f)


@kernel("flatten2d")
def flatten2d(x, axis=1):
    axis = int(axis) % x.ndim if x.ndim else 0
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@kernel("reverse")
def reverse(x, axes=None):
    return np.flip(x, axis=None if axes is None else tuple(_ints(axes)))


@kernel("reverse_sequence")
def reverse_sequence(x, lengths, seq_axis=0, batch_axis=0):
    """Reverse the first ``lengths[b]`` entries along ``seq_axis`` of every batch entry ``b``."""
    seq_axis, batch_axis = int(seq_axis) % x.ndim, int(batch_axis) % x.ndim
    steps = np.arange(x.shape[seq_axis])
    lengths = np.asarray(lengths).reshape(-1, 1)
    source = np.where(steps < lengths, lengths - 1 - steps, steps)  # (B, T)
    shape = [1] * x.ndim
    shape[batch_axis], shape[seq_axis] = source.shape
    if batch_axis > seq_axis:
        source = source.T
        shape[seq_axis], shape[batch_axis] = source.shape
    return np.take_along_axis(x, source.reshape(shape), axis=seq_axis)


@kernel("sliding_windows")
def sliding_windows(x, axis, size, stride=1):
    """Windows of ``size`` along ``axis`` every ``stride``: shape ``(..., n_windows, size, ...)``."""
    axis = int(axis) % x.ndim
    view = np.lib.stride_tricks.sliding_window_view(x, int(size), axis=axis)
    view = view[(slice(None),) * axis + (slice(None, None, int(stride)),)]
    return np.moveaxis(view, -1, axis + 1)


@kernel("pixel_unshuffle")
def pixel_unshuffle(x, downscale_factor):
    n, c, h, w = x.shape
    f = int(downscale_factor)
    y = x.reshape(n, c, h // f, f, w // f, f).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * f * f, h // f, w // f)


@kernel("slice_update")
def slice_update(x, update, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """Copy of ``x`` whose ``slice_by_index`` region (same arguments) is replaced by ``update``."""
    begin, end = _ints(begin), _ints(end)
    rank = len(begin)
    stride = _ints(stride) if stride is not None else [1] * rank
    masks = [
        list(np.asarray(m).reshape(-1)) if m is not None else [False] * rank
        for m in (begin_mask, end_mask, squeeze_mask)
    ]
    index = []
    for axis in range(rank):
        if masks[2][axis]:
            index.append(begin[axis])
            continue
        start = None if masks[0][axis] else begin[axis]
        stop = None if masks[1][axis] else end[axis]
        index.append(slice(start, stop, stride[axis]))
    out = np.array(x, copy=True)
    out[tuple(index)] = np.reshape(update, out[tuple(index)].shape)
    return out
