"""Gather and scatter (spec: ops/defs/iOS15/scatter_gather.py, iOS16 and iOS17 updates).

Negative indices count from the end of the axis (iOS15/16 semantics; iOS17 leaves them
undefined, so wrapping is a valid choice there too). The gathers accept ``validate_indices``
and rely on numpy, which raises on out-of-range indices anyway. The iOS17 scatters with
``validate_indices=True`` raise ``IndexError`` on any index outside ``[0, dim)``, negative
ones included ("negative values are considered out-of-bound"), as the spec requires.
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


def _validate(indices, dims, op_type):
    """iOS17 ``validate_indices=True``: every index ``v`` along a dim ``d`` has ``0 <= v < d``."""
    indices = np.asarray(indices)
    bad = (indices < 0) | (indices >= np.asarray(dims))
    if bad.any():
        raise IndexError(
            f"{op_type}: indices out of bounds with validate_indices=True: "
            f"{indices[bad][:5].tolist()} for dims {list(np.atleast_1d(dims))}"
        )


def _apply(mode, out, index, updates):
    fn = _SCATTER_MODES[str(mode)]
    if fn is None:
        out[index] = updates
    else:
        fn.at(out, index, updates)
    return out


@kernel("scatter")
def scatter(data, indices, updates, axis=0, mode="add", validate_indices=False):
    """``out[..., indices[i...], ...] (mode)= updates[..., i..., ...]`` along ``axis`` (spec:
    iOS15/iOS17 ``scatter_gather.py``, ``scatter``).

    ``indices`` may have any shape; ``updates`` is ``data.shape[:axis] + indices.shape +
    data.shape[axis + 1:]``, which is exactly numpy's shape for ``out[(:,) * axis + (indices,)]``.
    """
    axis = int(axis) % data.ndim
    if validate_indices:
        _validate(indices, data.shape[axis], "scatter")
    out = np.array(data, copy=True)
    index = (slice(None),) * axis + (_wrap(indices, data.shape[axis]),)
    return _apply(mode, out, index, updates)


@kernel("scatter_along_axis")
def scatter_along_axis(data, indices, updates, axis=0, mode="add", validate_indices=False):
    """``out[p_0, ..., indices[p], ..., p_D] (mode)= updates[p]`` (spec: iOS15/iOS17
    ``scatter_gather.py``, ``scatter_along_axis``)."""
    axis = int(axis) % data.ndim
    if validate_indices:
        _validate(indices, data.shape[axis], "scatter_along_axis")
    out = np.array(data, copy=True)
    idx = _wrap(indices, data.shape[axis])
    grids = list(np.indices(idx.shape, sparse=True))
    grids[axis] = idx
    return _apply(mode, out, tuple(grids), updates)


@kernel("scatter_nd")
def scatter_nd(data, indices, updates, mode="add", validate_indices=False):
    """``out[indices[i, :]] (mode)= updates[i]`` with index tuples on the last axis of
    ``indices`` (spec: iOS15/iOS17 ``scatter_gather.py``, ``scatter_nd``)."""
    out = np.array(data, copy=True)
    indices = np.asarray(indices).astype(np.intp)
    depth = indices.shape[-1]
    dims = np.asarray(data.shape[:depth])
    if validate_indices:
        _validate(indices, dims, "scatter_nd")
    indices = np.where(indices < 0, indices + dims, indices)
    index = tuple(indices[..., d] for d in range(depth))
    return _apply(mode, out, index, updates)
