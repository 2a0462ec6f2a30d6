"""Op placement: which compute unit runs each op of a program, and why (an estimate).

Under ``compute_units=all`` or ``cpu_and_ne`` Core ML runs an op on the Neural Engine when
the engine can, and elsewhere on the GPU (``all``) or the CPU (``cpu_and_ne``). Only a Mac
knows the real plan (``MLComputePlan``); this module estimates it from public data
(:mod:`.devices`): an op goes to the ANE unless

* the op-device matrix gives it no engine path on the device's generation;
* it is fp32-typed (Core ML keeps fp32 arithmetic off the fp16-only engine);
* it carries no fp16 tensor at all (shape and index arithmetic);
* a tensor, conv kernel or pooling window exceeds the generation's limits;
* it sits inside a control-flow body (loops and branches run on the host).

Each step gets a :class:`Placement`: the :class:`~.numerics.UnitModel` it runs under, the
reason, and its multiply-accumulate count (per sample), from which ``ane_op_fraction`` and
``ane_mac_fraction`` follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from precision_sweep.emulator.devices import (
    MAX_TENSOR_BATCH,
    MAX_TENSOR_CHANNELS,
    Generation,
    ane_runs,
    get_generation,
)
from precision_sweep.emulator.numerics import MAC_OPS, UnitModel, UnitModels


@dataclass(frozen=True)
class Placement:
    model: UnitModel
    reason: str
    macs: int = 0  # multiply-accumulates per sample (MAC ops only)

    @property
    def unit(self) -> str:
        return self.model.unit


def _static(shape) -> list[int] | None:
    """A var's shape with symbolic dims read as 1 (the batch), or None for a scalar/unknown."""
    if shape is None:
        return None
    dims = []
    for d in shape:
        try:
            dims.append(int(d))
        except (TypeError, ValueError):
            dims.append(1)
    return dims


def _float_dtypes(op) -> set[str]:
    from coremltools.converters.mil.mil import types

    found = set()
    for var in list(op.outputs) + [v for v in _input_vars(op)]:
        try:
            dtype = var.elem_type.get_primitive() if types.is_list(var.sym_type) else var.dtype
            name = types.builtin_to_string(dtype)
        except (AttributeError, ValueError, TypeError):  # states, dicts: no float dtype
            continue
        if name in ("fp16", "fp32", "fp64"):
            found.add(name)
    return found


def _input_vars(op):
    for value in op.inputs.values():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if getattr(v, "op", None) is None or v.op.op_type != "const":
                yield v


def macs(op) -> int:
    """Multiply-accumulates of one sample through a MAC op (0 for other ops)."""
    if op.op_type not in MAC_OPS:
        return 0
    out = _static(op.outputs[0].shape)
    if not out:
        return 0
    per_sample = int(np.prod(out[1:])) if len(out) > 1 else int(np.prod(out))
    if op.op_type == "conv":
        weight = _static(op.inputs["weight"].shape) or [1, 1]
        return per_sample * int(np.prod(weight[1:]))
    if op.op_type == "conv_transpose":
        x = _static(op.inputs["x"].shape) or [1, 1]
        weight = _static(op.inputs["weight"].shape) or [1, 1]
        return int(np.prod(x[1:])) * int(np.prod(weight[1:]))
    if op.op_type == "linear":
        return per_sample * (_static(op.inputs["x"].shape) or [1])[-1]
    if op.op_type == "matmul":
        x = _static(op.inputs["x"].shape) or [1]
        transpose_x = bool(getattr(op.inputs.get("transpose_x"), "val", False))
        return per_sample * (x[-2] if transpose_x and len(x) > 1 else x[-1])
    # einsum: the product of every distinct index's size, per sample
    equation = str(op.inputs["equation"].val)
    sizes: dict[str, int] = {}
    for term, var in zip(equation.split("->")[0].split(","), op.inputs["values"]):
        for letter, size in zip(term.strip(), _static(var.shape) or []):
            sizes[letter] = size
    total = int(np.prod(list(sizes.values()))) if sizes else 0
    return total // max(out[0], 1) if len(out) > 1 else total


def _limits(op, generation: Generation) -> str | None:
    """Why ``op`` exceeds the generation's limits, or None."""
    for var in list(op.outputs) + list(_input_vars(op)):
        shape = _static(getattr(var, "shape", None))
        if not shape or len(shape) < 2:
            continue
        if shape[-1] > generation.max_tensor_width_height or (len(shape) >= 3 and shape[-2] > generation.max_tensor_width_height):
            return f"tensor {var.name} {tuple(shape)} exceeds {generation.name}'s width/height limit {generation.max_tensor_width_height}"
        if len(shape) == 4 and shape[1] > MAX_TENSOR_CHANNELS:
            return f"tensor {var.name} has {shape[1]} channels, above the engine's {MAX_TENSOR_CHANNELS}"
        if len(shape) >= 4 and shape[0] > MAX_TENSOR_BATCH:
            return f"tensor {var.name} has batch {shape[0]}, above the engine's {MAX_TENSOR_BATCH}"
    if op.op_type in ("conv", "conv_transpose"):
        kernel = (_static(op.inputs["weight"].shape) or [])[2:]
        if any(k > generation.max_conv_kernel for k in kernel):
            return f"kernel {tuple(kernel)} exceeds {generation.name}'s {generation.max_conv_kernel}"
    if op.op_type in ("avg_pool", "max_pool", "l2_pool"):
        window = [int(k) for k in np.asarray(op.inputs["kernel_sizes"].val).reshape(-1)]
        if any(k > generation.max_pool_window for k in window):
            return f"window {tuple(window)} exceeds {generation.name}'s {generation.max_pool_window}"
    return None


def place(op, models: UnitModels, in_control_flow: bool = False) -> Placement:
    """The unit ``op`` (a pymil Operation) runs on under ``models``, with the reason."""
    count = macs(op)
    if models.ane is None:
        return Placement(models.fallback, f"compute_units={models.compute_units}", count)
    fallback = models.fallback
    if in_control_flow:
        return Placement(fallback, "inside a control-flow body, run on the host", count)
    floats = _float_dtypes(op)
    if "fp32" in floats or "fp64" in floats:
        return Placement(fallback, "fp32-typed: Core ML keeps fp32 arithmetic off the engine", count)
    if "fp16" not in floats:
        return Placement(fallback, "no fp16 tensor (shape or index arithmetic)", count)
    generation = get_generation(models.device)
    runs, why = ane_runs(op.op_type, generation)
    if not runs:
        return Placement(fallback, why, count)
    too_big = _limits(op, generation)
    if too_big:
        return Placement(fallback, too_big, count)
    return Placement(models.ane, why, count)


def fractions(placements) -> dict[str, float]:
    """``ane_op_fraction`` and ``ane_mac_fraction`` of a list of placements."""
    placements = list(placements)
    if not placements:
        return {"ane_op_fraction": 0.0, "ane_mac_fraction": 0.0}
    on_ane = [p for p in placements if p.unit == "ane"]
    total_macs = sum(p.macs for p in placements)
    return {
        "ane_op_fraction": len(on_ane) / len(placements),
        "ane_mac_fraction": (sum(p.macs for p in on_ane) / total_macs) if total_macs else 0.0,
    }
