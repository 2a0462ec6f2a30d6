"""Gather and scatter (spec: ops/defs/iOS15/scatter_gather.py, iOS16 and iOS17 updates).

Negative indices count from the end of the axis (iOS15/16 semantics; iOS17 leaves them
undefined, so wrapping is a valid choice there too). ``validate_indices`` is accepted and
ignored: numpy raises on out-of-range indices anyway.
"""

from __future__ import annotations

import numpy as np

from precision_sweep.emulator.registry import kernel

_SCATTER_MODES = {
    "update": None,
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
}


def _wrap(indices, size):
    indices = np.asarray(indices).astype(np.intp)
    return np.where(indices < 0, indices + size, indices)


@kernel("gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """``K = D[:axis] + N[batch_dims:] + D[axis+1:]`` (tf.gather with batch_dims)."""
    axis = int(axis) % x.ndim
    bd = int(batch_dims)
    indices = _wrap(indices, x.shape[axis])
    if bd == 0:
        return np.take(x, indices, axis=axis)
    batch = x.shape[:bd]
    nb = int(np.prod(batch))
    xb = x.reshape((nb,) + x.shape[bd:])  # (B, pre..., A, post...)
    ib = indices.reshape((nb,) + indices.shape[bd:])  # (B, I...)
    a = axis - bd + 1
    xm = np.moveaxis(xb, a, 1)  # (B, A, pre..., post...)
    rows = np.arange(nb).reshape((nb,) + (1,) * (ib.ndim - 1))
    picked = xm[rows, ib]  # (B, I..., pre..., post...)
    n_i, n_pre = ib.ndim - 1, a - 1
    order = [0] + list(range(1 + n_i, 1 + n_i + n_pre)) + list(range(1, 1 + n_i))
    order += list(range(1 + n_i + n_pre, picked.ndim))
    picked = picked.transpose(order)
    return picked.reshape(batch + picked.shape[1:])


@kernel("gather_along_axis")
def gather_along_axis(x, indices, axis=0, validate_indices=False):
    axis = int(axis)
    return np.take_along_axis(x, _wrap(indices, x.shape[axis]), axis=axis)


@kernel("gather_nd")
def gather_nd(x, indices, batch_dims=0, validate_indices=False):
    """``V = K[:-1] + D[K[-1]:]``; with ``batch_dims`` the leading dims index in lockstep."""
    bd = int(batch_dims)
    indices = np.asarray(indices).astype(np.intp)
    depth = indices.shape[-1]
    batch = x.shape[:bd]
    nb = int(np.prod(batch)) if bd else 1
    xb = x.reshape((nb,) + x.shape[bd:])
    ib = indices.reshape((nb,) + indices.shape[bd:])
    dims = xb.shape[1 : 1 + depth]
    ib = np.where(ib < 0, ib + np.asarray(dims), ib)
    rows = np.arange(nb).reshape((nb,) + (1,) * (ib.ndim - 2))
    picked = xb[(rows,) + tuple(ib[..., d] for d in range(depth))]
    return picked.reshape(batch + picked.shape[1:]) if bd else picked[0]


def _apply(mode, out, index, updates):
    fn = _SCATTER_MODES[str(mode)]
    if fn is None:
        out[index] = updates
    else:
        fn.at(out, index, updates)
    return out


@kernel("scatter")
def scatter(data, indices, updates, axis=0, mode="add", validate_indices=False):
    axis = int(axis) % data.ndim
    out = np.array(data, copy=True)
    idx = _wrap(indices, data.shape[axis]).reshape(-1)
    index = (slice(None),) * axis + (idx,)
    moved_updates = updates
    return _apply(mode, out, index, moved_updates)


@kernel("scatter_along_axis")
def scatter_along_axis(data, indices, updates, axis=0, mode="add", validate_indices=False):
    axis = int(axis) % data.ndim
    out = np.array(data, copy=True)
    idx = _wrap(indices, data.shape[axis])
    grids = list(np.indices(idx.shape, sparse=True))
    grids[axis] = idx
    return _apply(mode, out, tuple(grids), updates)


@kernel("scatter_nd")
def scatter_nd(data, indices, updates, mode="add", validate_indices=False):
    out = np.array(data, copy=True)
    indices = np.asarray(indices).astype(np.intp)
    depth = indices.shape[-1]
    dims = np.asarray(data.shape[:depth])
    indices = np.where(indices < 0, indices + dims, indices)
    index = tuple(indices[..., d] for d in range(depth))
    return _apply(mode, out, index, updates)
