"""Stage 4: execute a saved ``.mlpackage`` on the test split, with the chosen runtime.

``emulator`` is precision_sweep's numpy executor of the MIL program (any OS); ``coreml`` is
Apple's Core ML runtime through ``MLModel.predict`` (macOS only). ``auto`` picks ``coreml``
on macOS when the model loads and predicts, else ``emulator``. Every result records which
runtime produced it.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from precision_sweep.errors import UserInputError

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    name: str  # "emulator" or "coreml"
    input_name: str
    output_name: str
    predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    note: str = ""
    emulator: Any = None  # the Emulator, when the emulator runs the program (its placement)


def execution_of(cfg):
    """The :class:`~precision_sweep.emulator.Execution` a job's config asks for."""
    from precision_sweep.emulator import Execution

    units = cfg.compute_units
    return Execution(
        compute_units=str(units.name),
        device=str(cfg.device.name),
        gpu_low_precision_accumulation=bool(units.gpu_low_precision_accumulation),
        # compiled plans are cached: a warm job loads them without coremltools or TensorFlow
        plan_cache=str(Path(cfg.paths.cache) / "plans"),
    )


def _emulator(path: Path, execution) -> Runtime:
    emulator = execution.emulator(path)
    return Runtime("emulator", emulator.input_names[0], emulator.output_names[0], emulator.predict, emulator=emulator)


def _coreml(path: Path, execution) -> Runtime:
    import coremltools as ct

    mlmodel = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, execution.compute_units.upper()))
    spec = mlmodel.get_spec()
    return Runtime(
        "coreml",
        spec.description.input[0].name,
        spec.description.output[0].name,
        mlmodel.predict,
    )


def select_runtime(name: str, path: Path, execution, probe: np.ndarray | None = None) -> Runtime:
    """Build the runtime ``name`` (auto, emulator, coreml) for the package at ``path``, for an
    :class:`~precision_sweep.emulator.Execution` (compute units, device)."""
    if name == "emulator":
        return _emulator(path, execution)
    if name == "coreml":
        if sys.platform != "darwin":
            raise UserInputError(
                "runtime=coreml needs macOS: Core ML prediction does not exist on "
                f"{sys.platform}. Use runtime=auto or runtime=emulator."
            )
        return _coreml(path, execution)
    if name == "auto":
        if sys.platform == "darwin":
            try:
                runtime = _coreml(path, execution)
                if probe is not None:
                    runtime.predict({runtime.input_name: probe[:1]})
                return runtime
            except Exception as exc:  # fall back, but say so in the run
                log.warning("Core ML runtime unavailable (%s); using the emulator", exc)
                fallback = _emulator(path, execution)
                fallback.note = f"coreml unavailable: {exc}"
                return fallback
        return _emulator(path, execution)
    raise UserInputError(f"Unknown runtime {name!r}: choose runtime=auto, emulator or coreml.")


def run_batches(runtime: Runtime, x: np.ndarray, batch_size: int, progress: bool = True, desc: str = "") -> np.ndarray:
    """Predict ``x`` in batches and return the evaluated output as float32."""
    from tqdm.auto import tqdm

    outputs = []
    starts = range(0, len(x), batch_size)
    # disable=None: no bar when stderr is not a terminal (no carriage returns in a log file)
    for start in tqdm(starts, desc=desc or runtime.name, disable=None if progress else True, unit="batch", leave=False):
        result = runtime.predict({runtime.input_name: x[start : start + batch_size]})
        outputs.append(np.asarray(result[runtime.output_name], dtype=np.float32))
    return np.concatenate(outputs, axis=0)
