"""Where each op of a job's program runs: the emulator's estimate and, on macOS, Core ML's plan.

``placement.csv`` has one row per executed op: ``op``, ``output``, ``op_type``, ``layer`` (the
Keras layer, where the name maps to one), ``unit`` (ane, gpu or cpu), ``reason`` and ``macs``
(multiply-accumulates per sample). It is an *estimate* (see
:mod:`precision_sweep.emulator.placement`). On macOS, coremltools' ``MLComputePlan`` gives the
plan Core ML really makes; it is logged beside it as ``placement_coreml.csv`` with
``placement_agreement``, the share of ops where the two agree.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

COLUMNS = ["op", "output", "op_type", "layer", "unit", "reason", "macs"]


def placement_table(emulator, mapper=None) -> pd.DataFrame:
    """The estimated placement of every op ``emulator`` executes."""
    rows = []
    for step in emulator.plan.all_steps():
        if step.placement is None:
            continue
        output = step.outputs[0][0] if step.outputs else ""
        layer = mapper.layer_of(output, step.name) if mapper is not None else ""
        rows.append([step.name, output, step.op_type, layer, step.placement.unit, step.placement.reason,
                     step.placement.macs])
    return pd.DataFrame(rows, columns=COLUMNS)


_DEVICE_UNITS = {"MLCPUComputeDevice": "cpu", "MLGPUComputeDevice": "gpu", "MLNeuralEngineComputeDevice": "ane"}


def coreml_placement(package: Path, compute_units: str) -> pd.DataFrame | None:
    """Core ML's own plan for ``package`` (macOS only): ``output`` -> ``unit``; None elsewhere
    or when the plan cannot be read."""
    if sys.platform != "darwin":
        return None
    try:
        import coremltools as ct
        from coremltools.models.compute_plan import MLComputePlan

        units = getattr(ct.ComputeUnit, compute_units.upper())
        mlmodel = ct.models.MLModel(str(package), compute_units=units)
        plan = MLComputePlan.load_from_path(mlmodel.get_compiled_model_path(), compute_units=units)
        rows = []
        for operation in plan.model_structure.program.functions["main"].block.operations:
            usage = plan.get_compute_device_usage_for_mlprogram_operation(operation)
            if usage is None or not operation.outputs:
                continue
            unit = _DEVICE_UNITS.get(type(usage.preferred_compute_device).__name__, "unknown")
            rows.append([operation.outputs[0].name, operation.operator_name, unit])
        return pd.DataFrame(rows, columns=["output", "op_type", "unit"])
    except Exception as exc:  # noqa: BLE001 - the estimate stands on its own
        log.warning("Core ML compute plan unavailable: %s", exc)
        return None


def agreement(estimate: pd.DataFrame, real: pd.DataFrame) -> float:
    """Share of the ops both tables list whose unit agrees."""
    joined = estimate.merge(real[["output", "unit"]], on="output", suffixes=("", "_coreml"))
    return float((joined["unit"] == joined["unit_coreml"]).mean()) if len(joined) else float("nan")


def record_placement(emulator, package: Path, compute_units: str, mapper, out_dir: Path) -> tuple[dict, list[Path]]:
    """Write ``placement.csv`` (and ``placement_coreml.csv`` on macOS); return the metrics
    (``ane_op_fraction``, ``ane_mac_fraction``, ``placement_agreement`` on macOS) and files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = placement_table(emulator, mapper)
    path = out_dir / "placement.csv"
    table.to_csv(path, index=False)
    metrics = dict(emulator.placement_fractions())
    files = [path]
    real = coreml_placement(package, compute_units)
    if real is not None:
        real_path = out_dir / "placement_coreml.csv"
        real.to_csv(real_path, index=False)
        files.append(real_path)
        metrics["placement_agreement"] = agreement(table, real)
    return metrics, files
