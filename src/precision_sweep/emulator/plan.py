"""The compiled form of a program that the loader builds and the executor runs.

A :class:`Plan` is a flat, ordered list of :class:`Step` (one MIL op each, constants already
resolved), with nested :class:`Block` sub-plans for control flow. Each step carries the
placement the emulator chose for it (unit model, reason) and the accumulator its sums use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from precision_sweep.emulator.ops._accumulate import FP32, Accumulator
from precision_sweep.emulator.placement import Placement


@dataclass
class Step:
    """One MIL operation, ready to execute."""

    op_type: str
    name: str
    fn: Callable
    const_kwargs: dict[str, Any]
    # argument name -> variable name, or list of variable names for tuple inputs (concat).
    var_kwargs: dict[str, str | list[str]]
    outputs: list[tuple[str, np.dtype]]
    # spec argument name -> compiled nested block (control-flow ops only).
    blocks: dict[str, "Block"] = field(default_factory=dict)
    # Where the op runs and how its fp16 arithmetic behaves (None: computed in fp32, e.g. while
    # constants are folded at load time).
    placement: Placement | None = None
    # The sums of an accumulating op with fp16 outputs (fp32-typed ops always use FP32).
    accumulator: Accumulator = FP32
    # Arguments whose values enter the Neural Engine from another unit or the program inputs
    # (NaN -> +inf there, datapath.coerce_nan).
    coerce: tuple[str, ...] = ()
    # The variable whose buffer may receive this step's result: its input ``x``, when this
    # top-level step is its last reader and it is neither a constant nor a program input (the
    # executor still checks at run time that no live value shares the buffer).
    reuses: str | None = None


@dataclass
class Block:
    """A compiled nested block: named inputs (bound per call), ordered steps, outputs."""

    inputs: list[tuple[str, np.dtype]]
    steps: list[Step]
    outputs: list[str]


@dataclass(frozen=True)
class FlexibleDim:
    """An input dimension the program leaves open (coremltools' symbol, e.g. ``is0`` for a
    flexible batch), by name: plain data, so a plan read from the cache imports no sympy."""

    name: str

    @classmethod
    def of(cls, dim) -> int | FlexibleDim:
        """A program input's dimension: an int, or the open dimension a symbol names."""
        if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool):
            return int(dim)
        return cls(str(dim))


@dataclass
class Plan:
    """A compiled MIL function: inputs, constants, ordered steps and outputs."""

    inputs: dict[str, tuple[tuple, np.dtype]]  # name -> (shape of ints and FlexibleDims, dtype)
    outputs: list[str]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    # variable name -> (op type, op name) of every op the plan knows, folded ones included.
    producers: dict[str, tuple[str, str]] = field(default_factory=dict)
    spec_version: int | None = None
    # The top-level steps of a run that keeps no intermediates (``capture=False``): ``steps``
    # with each zero ``pad`` folded into the 2-D conv that alone reads it (the conv pads for
    # itself, as its kernels do without a padded copy), so the padded tensor never exists.
    lean_steps: list[Step] = field(default_factory=list)
    # Per lean step, the values no later step reads (freed after it).
    releases: list[list[str]] = field(default_factory=list)

    def all_steps(self):
        """Every step, nested blocks' steps included, depth first."""

        def walk(steps):
            for step in steps:
                yield step
                for block in step.blocks.values():
                    yield from walk(block.steps)

        return walk(self.steps)
