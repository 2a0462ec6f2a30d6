"""Kernel registry: maps a MIL op type string to the plain function that executes it.

A kernel receives the op's inputs as keyword arguments named exactly as the MIL op
definition names them (``coremltools/converters/mil/mil/ops/defs``) and returns one numpy
array, or a tuple of arrays for ops with several outputs. Kernels compute; the executor owns
dtypes (it casts every result to the dtype the program declares).
"""

from __future__ import annotations

from typing import Callable

KERNELS: dict[str, Callable] = {}


def kernel(*op_types: str) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the kernel of every MIL op type in ``op_types``."""

    def register(fn: Callable) -> Callable:
        for op_type in op_types:
            if op_type in KERNELS:
                raise ValueError(f"kernel for MIL op {op_type!r} registered twice")
            KERNELS[op_type] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    """Sorted list of the MIL op types the emulator can execute."""
    from precision_sweep.emulator import ops  # noqa: F401  (registers the kernels)

    return sorted(KERNELS)
