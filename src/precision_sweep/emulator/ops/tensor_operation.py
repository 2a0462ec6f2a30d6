"""Tensor-building and selecting ops (spec: ops/defs/iOS15/tensor_operation.py and its iOS16/17 updates).

Two ops have data-dependent results: ``non_zero`` (its output's first dim is the count of
non-zero elements) and ``non_maximum_suppression`` (padded to ``max_boxes``; the greedy
selection lives in :mod:`._suppression`).
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.ops import _suppression
from precision_sweep.emulator.ops._accumulate import FP32
from precision_sweep.emulator.registry import kernel


def _ints(values):
    return [int(v) for v in np.asarray(values).reshape(-1)]


@kernel("concat")
def concat(values, axis, interleave=False):
    """Join ``values`` along ``axis``; 0-D values (all of them, ranks must agree) give a 1-D
    tensor of one element each, as the spec's type and value inference do."""
    axis = int(axis)
    if all(np.ndim(v) == 0 for v in values):
        return np.stack(values, axis=0)
    if not interleave:
        return np.concatenate(values, axis=axis)
    stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
    shape = list(values[0].shape)
    shape[axis] = sum(v.shape[axis] for v in values)
    return stacked.reshape(shape)


@kernel("stack")
def stack(values, axis):
    return np.stack(values, axis=int(axis))


@kernel("split")
def split(x, axis, num_splits=None, split_sizes=None):
    axis = int(axis)
    if split_sizes is not None:
        return tuple(np.split(x, np.cumsum(_ints(split_sizes))[:-1], axis=axis))
    return tuple(np.split(x, int(num_splits), axis=axis))


@kernel("tile")
def tile(x, reps):
    return np.tile(x, _ints(reps))


@kernel("pad")
def pad(x, pad, mode="constant", constant_val=0.0):
    amounts = _ints(pad)
    pairs = [(0, 0)] * (x.ndim - len(amounts) // 2)
    pairs += [(amounts[2 * i], amounts[2 * i + 1]) for i in range(len(amounts) // 2)]
    mode = str(mode)
    if mode == "constant":
        return np.pad(x, pairs, mode="constant", constant_values=constant_val)
    return np.pad(x, pairs, mode={"reflect": "reflect", "replicate": "edge"}[mode])


@kernel("fill")
def fill(shape, value=0.0):
    """A tensor of ``shape`` (a runtime int32 vector: symbolic shapes arrive as values) filled
    with ``value``."""
    return np.full(_ints(shape), np.asarray(value).reshape(()))


@kernel("fill_like")
def fill_like(ref_tensor, value=0.0):
    return np.full(ref_tensor.shape, value)


@kernel("shape")
def shape(x):
    return np.asarray(x.shape, dtype=np.int32)


@kernel("range_1d")
def range_1d(end, start, step):
    return np.arange(start, end, step)


@kernel("identity")
def identity(x):
    return x


@kernel("select")
def select(cond, a, b):
    return np.where(cond, a, b)


def _sort_key(x, ascending):
    """Values whose ascending stable order is the wanted order (unsigned ints widened so that
    negating them cannot wrap)."""
    if ascending:
        return x
    if x.dtype.kind in "ub":
        return -x.astype(np.int64)
    return -x


@kernel("argsort")
def argsort(x, axis=-1, ascending=False):
    """Indices that sort ``x`` along ``axis``; ties keep their order (iOS15 ``argsort``)."""
    return np.argsort(_sort_key(x, bool(ascending)), axis=int(axis), kind="stable")


@kernel("topk")
def topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, output_indices_dtype="int32"):
    """Top (or bottom, ``ascending``) ``k`` values of ``x`` along ``axis`` and their indices
    (spec: iOS15/16/17 ``tensor_operation.py``, ``topk``).

    iOS17's ``k = -1`` selects every element. ``sort=False`` leaves the order open ("no
    particular ordering is guaranteed"): this kernel returns them sorted, which is one valid
    order. With ``return_indices=False`` (iOS16+) the op has one output, the values;
    ``output_indices_dtype`` is the executor's business (it casts to the declared dtype).
    """
    axis = int(axis)
    k = x.shape[axis] if int(k) == -1 else int(k)
    order = argsort(x, axis, ascending)
    index = np.take(order, np.arange(k), axis=axis)
    values = np.take_along_axis(x, index, axis=axis)
    if not bool(return_indices):
        return values
    return values, index.astype(np.int32)


@kernel("one_hot")
def one_hot(indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0):
    eye = np.arange(int(one_hot_vector_size))
    hot = np.expand_dims(indices, -1) == eye
    out = np.where(hot, on_value, off_value)
    return np.moveaxis(out, -1, int(axis)) if int(axis) != -1 else out


@kernel("cumsum")
def cumsum(x, axis=0, exclusive=False, reverse=False, *, accumulator=FP32):
    """Cumulative sum; ``exclusive`` shifts in a zero, ``reverse`` sums from the end."""
    axis = int(axis)
    data = np.flip(x, axis=axis) if reverse else x
    out = accumulator.cumsum(data, axis).astype(x.dtype, copy=False)
    if exclusive:
        zero = np.zeros_like(np.take(out, [0], axis=axis))
        out = np.concatenate([zero, np.delete(out, -1, axis=axis)], axis=axis)
    return np.flip(out, axis=axis) if reverse else out


@kernel("band_part")
def band_part(x, lower=-1, upper=-1):
    """Zero everything outside the band ``(m - n) <= lower`` and ``(n - m) <= upper``."""
    m = np.arange(x.shape[-2]).reshape(-1, 1)
    n = np.arange(x.shape[-1]).reshape(1, -1)
    lower, upper = int(lower), int(upper)
    keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    return np.where(keep, x, np.zeros((), dtype=x.dtype))


@kernel("non_zero")
def non_zero(x):
    """Indices (N, rank) of the non-zero elements of ``x`` in row-major order (spec: iOS15
    ``tensor_operation.py``, ``non_zero``: ``np.transpose(np.nonzero(x))``)."""
    return np.transpose(np.nonzero(x)).astype(np.int32)


def _suppress_batch(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class):
    """One batch entry: (max_boxes, 4) boxes, (max_boxes, K) scores, (max_boxes,) indices
    (padding: zeros and index -1, as the op tests' reference) and the kept count."""
    kept = _suppression.select(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class)
    out_boxes = np.zeros((max_boxes, 4), dtype=boxes.dtype)
    out_scores = np.zeros((max_boxes, scores.shape[-1]), dtype=scores.dtype)
    out_indices = np.full(max_boxes, -1, dtype=np.int32)
    out_boxes[: len(kept)] = boxes[kept]
    out_scores[: len(kept)] = scores[kept]
    out_indices[: len(kept)] = kept
    return out_boxes, out_scores, out_indices, len(kept)


@kernel("non_maximum_suppression")
def non_maximum_suppression(boxes, scores, iou_threshold, max_boxes, score_threshold=None, per_class_suppression=False):
    """Greedy NMS per batch entry (spec: iOS15 and iOS17 ``tensor_operation.py``,
    ``non_maximum_suppression``; the selection rules are :mod:`._suppression`'s).

    iOS15: ``boxes`` (n, B, 4), ``scores`` (n, B, K) and ``score_threshold``; returns boxes
    (n, max_boxes, 4), scores (n, max_boxes, K), indices (n, max_boxes) and the count (n,).
    iOS17 (no ``score_threshold`` input): boxes (n, 4, B) and scores (n, K, B) with the boxes
    last, the same layout out, and no count.
    """
    ios17 = score_threshold is None
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    if ios17:
        boxes, scores = np.swapaxes(boxes, 1, 2), np.swapaxes(scores, 1, 2)
    threshold = None if ios17 else float(score_threshold)
    per_batch = [
        _suppress_batch(boxes[b], scores[b], float(iou_threshold), threshold, int(max_boxes), bool(per_class_suppression))
        for b in range(boxes.shape[0])
    ]
    out_boxes, out_scores, out_indices, counts = (np.stack([p[i] for p in per_batch]) for i in range(4))
    if ios17:
        return np.swapaxes(out_boxes, 1, 2), np.swapaxes(out_scores, 1, 2), out_indices
    return out_boxes, out_scores, out_indices, counts.astype(np.int32)
