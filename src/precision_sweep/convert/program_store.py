"""Persist the TF frontend's pymil ``Program`` so parallel workers share it across processes.

There is no serialized form of a program *before* coremltools' default pass pipeline (the
milproto backend expects a pipelined program, and a program loaded back from milproto is not
the frontend's), so a variant built from anything else would not equal a plain ``ct.convert``.
The program is therefore pickled. Plain pickle fails because MIL types are classes created in
factory closures (``make_float.<locals>.double``, memoized ``types.tensor``); the pickler below
stores them by reference (the module-level singleton's name, or the tensor's primitive and
shape), so unpickling yields the very same type objects and ``is`` comparisons in coremltools'
passes hold.

Control flow: a ``while_loop``/``cond`` op keeps the Python functions that built its blocks
(``_cond``/``_body``, ``_true_fn``/``_false_fn``: closures of the TF frontend, e.g.
``StatelessWhile.<locals>.cond``), which pickle cannot store. They are used once, to build the
blocks, and never again; the pickler stores the built blocks and puts a placeholder returning
``None`` in their place: exactly the dummy functions coremltools' own milproto loader gives
such ops (``_existing_blocks``). This is logged at INFO.

Safety: unpickling runs code named in the file. These files are written only by precision-sweep
into its own cache directory (``paths.cache``) and read back only from there; never point
``paths.cache`` at a directory others can write. The format is versioned by the cache key
(coremltools, TensorFlow and Keras versions).
"""

from __future__ import annotations

import io
import logging
import pickle
import types as pytypes
from typing import Any

log = logging.getLogger(__name__)

_TYPES_MODULE = "coremltools.converters.mil.mil.types"


def _scalar_names() -> dict:
    from coremltools.converters.mil.mil import types

    names: dict = {}
    for name in sorted(dir(types)):
        value = getattr(types, name)
        if isinstance(value, type) and getattr(value, "__module__", "").startswith(_TYPES_MODULE):
            names.setdefault(value, name)
    return names


def _mil_scalar(name: str):
    from coremltools.converters.mil.mil import types

    return getattr(types, name)


def _mil_tensor(primitive, shape):
    from coremltools.converters.mil.mil import types

    return types.tensor(primitive, shape)


def _mil_list(elem_type, init_length, dynamic_length):
    from coremltools.converters.mil.mil import types

    return types.list(elem_type, init_length=init_length, dynamic_length=dynamic_length)


def _built_block_placeholder(*args, **kwargs) -> None:
    """Stands for a block-building closure once the blocks are built (see the module doc)."""
    return None


def _block_builder_placeholder():
    return _built_block_placeholder


def _is_block_builder(obj: Any) -> bool:
    # A closure defined inside the MIL frontends or op definitions: the loop/branch builders.
    return (
        isinstance(obj, pytypes.FunctionType)
        and "<locals>" in obj.__qualname__
        and (obj.__module__ or "").startswith("coremltools.converters.mil")
    )


class _ProgramPickler(pickle.Pickler):
    def __init__(self, file):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._scalars = _scalar_names()
        self.placeholders: set[str] = set()

    def reducer_override(self, obj: Any):
        if _is_block_builder(obj):
            self.placeholders.add(obj.__qualname__)
            return _block_builder_placeholder, ()
        if not (isinstance(obj, type) and obj.__module__.startswith(_TYPES_MODULE)):
            return NotImplemented
        from coremltools.converters.mil.mil import types

        if obj in self._scalars:
            return _mil_scalar, (self._scalars[obj],)
        if types.is_tensor(obj):
            return _mil_tensor, (obj.get_primitive(), obj.get_shape())
        if types.is_list(obj):
            return _mil_list, (obj.T[0], obj.T[1], obj.T[2])
        raise pickle.PicklingError(f"no reducer for MIL type {obj!r}")


def dumps_program(program) -> bytes:
    buffer = io.BytesIO()
    pickler = _ProgramPickler(buffer)
    pickler.dump(program)
    if pickler.placeholders:
        log.info(
            "program cache: stored the nested blocks of control-flow ops without the closures "
            "that built them (%s); they are not needed once the blocks exist",
            ", ".join(sorted(pickler.placeholders)),
        )
    return buffer.getvalue()


def loads_program(data: bytes):
    """Load a program written by :func:`dumps_program` (trusted cache files only)."""
    return pickle.loads(data)  # noqa: S301 - our own cache file, see the module docstring
