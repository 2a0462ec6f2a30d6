"""Control flow and lists (spec: ops/defs/iOS15/control_flow.py).

``while_loop`` and ``cond`` receive their nested blocks as callables under the spec's argument
names: ``_cond(*loop_vars)`` returns the block outputs ``(pred,)``, ``_body(*loop_vars)`` the
new loop variables; ``_true_fn()``/``_false_fn()`` the branch outputs. The executor builds
them from the compiled blocks (:func:`precision_sweep.emulator.executor.run_block`).

A MIL list is a :class:`TensorList` value: immutable, so every list op returns a new list and
a list captured before a write (e.g. a loop's initial value, or a folded constant) never
changes. ``select``, ``const`` and the other ops a loop body uses are the ordinary kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from precision_sweep.emulator.registry import kernel


@dataclass(frozen=True)
class TensorList:
    """A MIL ``List``: element tensors of one dtype and (where known) one shape.

    ``elements[i] is None`` marks a slot never written whose shape is not known yet (symbolic
    ``elem_shape``); slots of a list with a known element shape start as zeros, as a
    TensorFlow TensorList of known element shape reads them.
    """

    elements: tuple
    elem_shape: tuple | None  # None: symbolic, fixed by the first write
    dtype: np.dtype
    dynamic_length: bool

    def astype(self, dtype: np.dtype) -> "TensorList":
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            elements = tuple(None if e is None else e.astype(dtype) for e in self.elements)
        return TensorList(elements, self.elem_shape, dtype, self.dynamic_length)

    def __len__(self) -> int:
        return len(self.elements)

    def _empty_slot(self):
        if self.elem_shape is None:
            return None
        return np.zeros(self.elem_shape, dtype=self.dtype)

    def _check_index(self, index: int, op: str) -> None:
        if index < 0 or (index >= len(self) and not self.dynamic_length):
            raise IndexError(
                f"{op}: index {index} outside the fixed-length list of length {len(self)}"
            )

    def written(self, updates: dict[int, np.ndarray], op: str) -> "TensorList":
        """A new list with ``updates`` (index -> element) applied, growing a dynamic list."""
        for index in updates:
            self._check_index(index, op)
        length = max([len(self), *(i + 1 for i in updates)])
        shape = self.elem_shape
        for value in updates.values():
            if shape is not None and tuple(value.shape) != shape:
                raise ValueError(f"{op}: element shape {value.shape} != list element shape {shape}")
            shape = tuple(value.shape)
        grown = TensorList(self.elements, shape, self.dtype, self.dynamic_length)
        elements = list(self.elements) + [grown._empty_slot()] * (length - len(self))
        elements = [grown._empty_slot() if e is None else e for e in elements]
        for index, value in updates.items():
            elements[index] = np.asarray(value).astype(self.dtype, copy=False)
        return TensorList(tuple(elements), shape, self.dtype, self.dynamic_length)

    def read(self, index: int, op: str) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"{op}: index {index} outside the list of length {len(self)}")
        element = self.elements[index]
        if element is None:
            raise ValueError(f"{op}: element {index} was never written and its shape is unknown")
        return element


_DTYPES = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "bool": np.bool_}


def _int(value) -> int:
    return int(np.asarray(value).reshape(()))


@kernel("while_loop")
def while_loop(loop_vars, _cond, _body):
    """Run ``_body`` on the loop variables while ``_cond`` of them is true (tf.while_loop)."""
    values = tuple(loop_vars)
    while bool(np.asarray(_cond(*values)[0])):
        values = tuple(_body(*values))
    return values


@kernel("cond")
def cond(pred, _true_fn, _false_fn):
    """The outputs of ``_true_fn`` if the scalar ``pred`` is true, else of ``_false_fn``."""
    return tuple((_true_fn if bool(np.asarray(pred)) else _false_fn)())


@kernel("make_list")
def make_list(elem_shape, init_length=1, dynamic_length=True, dtype="fp32"):
    """A list of ``init_length`` elements of shape ``elem_shape`` (zeros where it is known).

    ``elem_shape`` holds one const per dimension: ints, or strings naming symbolic dimensions
    (then the shape is fixed by the first element written).
    """
    dims = [np.asarray(d).reshape(()).item() for d in elem_shape]
    shape = None if any(isinstance(d, str) for d in dims) else tuple(int(d) for d in dims)
    empty = TensorList((), shape, np.dtype(_DTYPES[str(dtype)]), bool(dynamic_length))
    return TensorList(
        (empty._empty_slot(),) * _int(init_length), shape, empty.dtype, empty.dynamic_length
    )


@kernel("list_length")
def list_length(ls):
    return np.int32(len(ls))


@kernel("list_write")
def list_write(ls, index, value):
    """``ls`` with element ``index`` replaced by ``value`` (a dynamic list grows to fit)."""
    return ls.written({_int(index): np.asarray(value)}, "list_write")


@kernel("list_read")
def list_read(ls, index):
    return ls.read(_int(index), "list_read")


@kernel("list_gather")
def list_gather(ls, indices):
    """The elements at ``indices`` stacked on a new leading axis: shape ``(K, *elem_shape)``."""
    picked = [ls.read(int(i), "list_gather") for i in np.asarray(indices).reshape(-1)]
    if not picked:
        return np.zeros((0, *(ls.elem_shape or ())), dtype=ls.dtype)
    return np.stack(picked, axis=0)


@kernel("list_scatter")
def list_scatter(ls, indices, value):
    """``ls`` with ``value[k]`` written at ``indices[k]`` (a dynamic list grows to fit)."""
    indices = [int(i) for i in np.asarray(indices).reshape(-1)]
    value = np.asarray(value)
    if value.shape[0] != len(indices):
        raise ValueError(f"list_scatter: {value.shape[0]} values for {len(indices)} indices")
    return ls.written(dict(zip(indices, value)), "list_scatter")
