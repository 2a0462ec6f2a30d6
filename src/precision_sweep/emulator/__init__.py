"""The emulator: a numpy executor of the MIL program inside a Core ML ``.mlpackage``.

Core ML prediction only exists on macOS; everywhere else this is how precision-sweep runs a
converted model. It follows the op definitions in coremltools'
``converters/mil/mil/ops/defs/`` (one kernel module per op family, mirroring those files),
honours the dtype every op declares (fp16 tensors really are float16) and emulates the
numerics of a compute-unit class (:mod:`precision_sweep.emulator.numerics`). It is an
emulation, not a bit-exact copy of any Apple device. Kernels are numpy (BLAS for matmul and
conv); the hottest paths have compiled numba twins that give the same bits
(:mod:`precision_sweep.emulator.ops._compiled`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from precision_sweep.emulator.executor import execute
from precision_sweep.emulator.numerics import PROFILES, get_profile
from precision_sweep.emulator.program import (
    Plan,
    UnsupportedOpError,
    compile_plan,
    load_program,
)
from precision_sweep.emulator.registry import supported_ops

__all__ = ["Emulator", "UnsupportedOpError", "PROFILES", "supported_ops"]


class Emulator:
    """Execute a converted ML program with numpy.

    Parameters
    ----------
    path_or_mlmodel
        A saved ``.mlpackage`` path, a ``coremltools.models.MLModel`` or a pymil ``Program``.
    compute_units
        Numerics profile: ``cpu_only``, ``cpu_and_gpu``, ``cpu_and_ne`` or ``all``.
    function_name
        The program function to run.

    Raises
    ------
    UnsupportedOpError
        At construction, if the program holds an op type without a kernel.
    """

    def __init__(self, path_or_mlmodel: Any, compute_units: str = "all", function_name: str = "main"):
        program, self.spec_version = load_program(path_or_mlmodel)
        self.profile = get_profile(compute_units)
        self.plan: Plan = compile_plan(program, function_name)
        self.plan.spec_version = self.spec_version

    @property
    def input_names(self) -> list[str]:
        return list(self.plan.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.plan.outputs)

    def op_types(self) -> set[str]:
        """Op types executed at prediction time, nested blocks included (folded constant ops excluded)."""

        def walk(steps):
            for step in steps:
                yield step.op_type
                for block in step.blocks.values():
                    yield from walk(block.steps)

        return set(walk(self.plan.steps))

    def predict(self, feeds: dict[str, np.ndarray], capture: bool = False):
        """Run the program on a batch.

        Parameters
        ----------
        feeds
            Input name -> array. Any batch size works where the batch dimension is flexible.
        capture
            If true, also return every intermediate value: ``(outputs, intermediates)``, where
            ``intermediates`` maps each MIL variable name to ``(op_type, value)``.
        """
        missing = set(self.plan.inputs) - set(feeds)
        if missing:
            raise KeyError(
                f"missing input(s) {sorted(missing)}; the program's inputs are {self.input_names}"
            )
        outputs, intermediates = execute(self.plan, feeds, self.profile, capture=capture)
        return (outputs, intermediates) if capture else outputs
