"""The emulator: a numpy executor of the MIL program inside a Core ML ``.mlpackage``.

Core ML prediction only exists on macOS; everywhere else this is how precision-sweep runs a
converted model. It follows the op definitions in coremltools'
``converters/mil/mil/ops/defs/`` (one kernel module per op family, mirroring those files),
honours the dtype every op declares (fp16 tensors really are float16) and computes each op
under the numerics model of the unit it is placed on (:mod:`.numerics`, :mod:`.placement`):
the Neural Engine of a chip generation (:mod:`.devices`), the GPU or the CPU, as measured
and published. It is an emulation of measured behaviour, not Apple's implementation. Kernels are numpy (BLAS for matmul and
conv); the hottest paths have compiled numba twins that give the same bits, each beside
the family it speeds up (``ops/_casts.py``, ``_clip_kernels.py``, ``_binary_kernels.py``,
``_conv_kernels.py``, ``_accumulate_kernels.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from precision_sweep.emulator.devices import DEFAULT_DEVICE, GENERATIONS
from precision_sweep.emulator.executor import execute
from precision_sweep.emulator.numerics import COMPUTE_UNITS, NUMERICS_VERSION, unit_models
from precision_sweep.emulator.placement import fractions, place
from precision_sweep.emulator.plan import Plan
from precision_sweep.emulator.plan_store import cached_plan
from precision_sweep.emulator.program import UnsupportedOpError, compile_plan, load_program
from precision_sweep.emulator.registry import supported_ops

__all__ = ["COMPUTE_UNITS", "DEFAULT_DEVICE", "DEVICES", "Emulator", "Execution", "NUMERICS_VERSION",
           "UnsupportedOpError", "supported_ops"]

DEVICES = tuple(GENERATIONS)


@dataclass(frozen=True)
class Execution:
    """Where a program runs: Core ML's compute units, the Neural Engine generation, and
    Core ML's ``allowLowPrecisionAccumulationOnGPU``."""

    compute_units: str = "all"
    device: str = DEFAULT_DEVICE
    gpu_low_precision_accumulation: bool = False
    plan_cache: str | None = None  # where compiled plans are kept (a job's paths.cache/plans)

    def emulator(self, source: Any, plan_cache: Path | None = None) -> "Emulator":
        """An :class:`Emulator` of ``source`` (package path, MLModel or Program) here, its plan
        kept in ``plan_cache`` (default: this execution's; see :class:`Emulator`)."""
        cache = plan_cache if plan_cache is not None else self.plan_cache
        return Emulator(source, self.compute_units, self.device, self.gpu_low_precision_accumulation,
                        plan_cache=None if cache is None else Path(cache))


class Emulator:
    """Execute a converted ML program with numpy.

    Parameters
    ----------
    path_or_mlmodel
        A saved ``.mlpackage`` path, a ``coremltools.models.MLModel`` or a pymil ``Program``.
    compute_units
        ``cpu_only``, ``cpu_and_gpu``, ``cpu_and_ne`` or ``all`` (Core ML's names).
    device
        The Neural Engine generation (``m1``, ``m2`` or ``m5``, see :mod:`.devices`): its op
        support, limits and numerics. The CPU and GPU models are the same on every device.
    gpu_low_precision_accumulation
        Core ML's ``allowLowPrecisionAccumulationOnGPU``: fp16 sums on the GPU.
    function_name
        The program function to run.
    plan_cache
        A folder of compiled plans (:mod:`.plan_store`). For a package path, the plan is read
        from there when an entry exists, without importing coremltools (nor TensorFlow); else
        it is compiled as usual and stored. Ignored for an MLModel or Program.

    Raises
    ------
    UnsupportedOpError
        At construction, if the program holds an op type without a kernel.
    ValueError
        For an unknown ``compute_units`` or ``device`` (the message lists the choices).
    """

    def __init__(self, path_or_mlmodel: Any, compute_units: str = "all", device: str = DEFAULT_DEVICE,
                 gpu_low_precision_accumulation: bool = False, function_name: str = "main",
                 plan_cache: Path | None = None):
        self.models = unit_models(compute_units, device, gpu_low_precision_accumulation)
        self.plan_cache = plan_cache

        def compile_() -> Plan:
            program, spec_version = load_program(path_or_mlmodel, compute_units)
            plan = compile_plan(program, function_name, lambda op, nested: place(op, self.models, nested))
            plan.spec_version = spec_version
            return plan

        if plan_cache is not None and isinstance(path_or_mlmodel, (str, os.PathLike)):
            self.plan: Plan = cached_plan(Path(path_or_mlmodel), self.models, function_name, Path(plan_cache), compile_)
        else:
            self.plan = compile_()
        self.spec_version = self.plan.spec_version

    @property
    def compute_units(self) -> str:
        return self.models.compute_units

    @property
    def device(self) -> str:
        return self.models.device

    @property
    def input_names(self) -> list[str]:
        return list(self.plan.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.plan.outputs)

    @property
    def fixed_batch(self) -> int | None:
        """1 when the program's first input fixes its batch dimension at one sample (a Core ML
        file converted without a flexible batch, a detector whose NMS takes one image): it is
        then fed one sample at a time. None when the batch is flexible."""
        shape = self.plan.inputs[self.input_names[0]][0]
        return 1 if shape and isinstance(shape[0], int) and shape[0] == 1 else None

    def classifier(self) -> tuple[str, str, list] | None:
        """``(label output, probabilities output, classes)`` of a classifier program (one ending
        in ``classify``), else None."""
        for step in self.plan.steps:
            if step.op_type == "classify":
                (label, _), (probabilities, _) = step.outputs
                classes = step.const_kwargs.get("classes")
                if classes is None:
                    classes = self.plan.constants[step.var_kwargs["classes"]]
                return label, probabilities, [c.item() if hasattr(c, "item") else c for c in np.asarray(classes)]
        return None

    def op_types(self) -> set[str]:
        """Op types executed at prediction time, nested blocks included (folded constant ops excluded)."""
        return {step.op_type for step in self.plan.all_steps()}

    def placements(self) -> list[dict]:
        """One row per executed op: ``op``, ``op_type``, ``unit``, ``reason``, ``macs`` (per
        sample). An estimate of Core ML's placement (see :mod:`.placement`)."""
        return [
            {"op": s.name, "op_type": s.op_type, "unit": s.placement.unit, "reason": s.placement.reason,
             "macs": s.placement.macs}
            for s in self.plan.all_steps()
            if s.placement is not None
        ]

    def placement_fractions(self) -> dict[str, float]:
        """``ane_op_fraction`` and ``ane_mac_fraction`` of the executed ops."""
        return fractions(s.placement for s in self.plan.all_steps() if s.placement is not None)

    def predict(self, feeds: dict[str, np.ndarray], capture: bool = False,
                dataflow: dict[str, list[str]] | None = None):
        """Run the program on a batch.

        Parameters
        ----------
        feeds
            Input name -> array. Any batch size works where the batch dimension is flexible.
        capture
            If true, also return every intermediate value: ``(outputs, intermediates)``, where
            ``intermediates`` maps each MIL variable name to ``(op_type, value)``. Values
            computed inside ``while_loop``/``cond`` blocks are keyed ``name@<iteration path>``,
            one entry per loop iteration (:func:`.executor.qualified_name`).
        dataflow
            With ``capture``, a dict to fill with each recorded name's inputs (names as in
            ``intermediates``; lists and constants too).
        """
        missing = set(self.plan.inputs) - set(feeds)
        if missing:
            raise KeyError(
                f"missing input(s) {sorted(missing)}; the program's inputs are {self.input_names}"
            )
        outputs, intermediates = execute(self.plan, feeds, capture=capture, dataflow=dataflow)
        return (outputs, intermediates) if capture else outputs
