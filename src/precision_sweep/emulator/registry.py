"""Kernel registry: maps a MIL op type string to the plain function that executes it.

A kernel receives the op's inputs as keyword arguments named exactly as the MIL op
definition names them (``coremltools/converters/mil/mil/ops/defs``) and returns one numpy
array, or a tuple of arrays for ops with several outputs. Kernels compute; the executor owns
dtypes (it casts every result to the dtype the program declares). The kernel of an op in
``numerics.ACCUMULATING_OPS``, and only such a kernel, also takes a keyword-only
``accumulator`` through which it does every sum; registration refuses a kernel that
disagrees. A kernel with a keyword-only ``out`` (elementwise ops whose result has their input
``x``'s shape and dtype) writes its result into that buffer when the executor passes one:
``x``'s own, when nothing else reads it any more (:data:`WRITES_INTO_X`).
"""

from __future__ import annotations

import inspect
from typing import Callable

from precision_sweep.emulator.numerics import ACCUMULATING_OPS

KERNELS: dict[str, Callable] = {}
# Op types whose kernel can write its result into the buffer of its input ``x`` (``out=``).
WRITES_INTO_X: set[str] = set()


def kernel(*op_types: str) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the kernel of every MIL op type in ``op_types``."""

    def register(fn: Callable) -> Callable:
        takes_accumulator = "accumulator" in inspect.signature(fn).parameters
        for op_type in op_types:
            if op_type in KERNELS:
                raise ValueError(f"kernel for MIL op {op_type!r} registered twice")
            if takes_accumulator != (op_type in ACCUMULATING_OPS):
                raise ValueError(
                    f"kernel for MIL op {op_type!r}: an accumulator parameter if and only if the op is "
                    "in numerics.ACCUMULATING_OPS"
                )
            KERNELS[op_type] = fn
            if "out" in inspect.signature(fn).parameters:
                WRITES_INTO_X.add(op_type)
        return fn

    return register


def supported_ops() -> list[str]:
    """Sorted list of the MIL op types the emulator can execute."""
    from precision_sweep.emulator import ops  # noqa: F401  (registers the kernels)

    return sorted(KERNELS)
