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
    # A classifier's predicted-label output (``classLabel``); ``output_name`` is then its
    # probabilities, in the order of ``class_labels``.
    label_name: str | None = None
    class_labels: tuple | None = None


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
    classifier = emulator.classifier()
    if classifier is None:
        return Runtime("emulator", emulator.input_names[0], emulator.output_names[0], emulator.predict, emulator=emulator)
    label, probabilities, classes = classifier
    return Runtime("emulator", emulator.input_names[0], probabilities, emulator.predict, emulator=emulator,
                   label_name=label, class_labels=tuple(classes))


def _coreml(path: Path, execution) -> Runtime:
    import coremltools as ct

    mlmodel = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, execution.compute_units.upper()))
    spec = mlmodel.get_spec()
    description = spec.description
    if not description.predictedFeatureName:
        return Runtime("coreml", description.input[0].name, description.output[0].name, mlmodel.predict)
    classes = tuple(_coreml_class_labels(spec, path))
    label, probabilities = description.predictedFeatureName, description.predictedProbabilitiesName

    def predict(feeds: dict) -> dict:
        # Core ML predicts a classifier one sample at a time; its probabilities are a dict
        rows = [mlmodel.predict({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(len(next(iter(feeds.values()))))]
        return {label: np.array([r[label] for r in rows]),
                probabilities: np.array([[r[probabilities][c] for c in classes] for r in rows], dtype=np.float32)}

    return Runtime("coreml", description.input[0].name, probabilities, predict, label_name=label, class_labels=classes)


def _coreml_class_labels(spec, path: Path) -> list:
    """A classifier's labels (an ML program's ``classify`` op, or a neuralnetwork's list)."""
    from precision_sweep.emulator import Execution

    classifier = Execution("cpu_only").emulator(path).classifier() if spec.WhichOneof("Type") == "mlProgram" else None
    if classifier is not None:
        return list(classifier[2])
    model = getattr(spec, spec.WhichOneof("Type"))
    labels = model.stringClassLabels.vector or model.int64ClassLabels.vector
    return list(labels)


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


def batch_size_for(runtime: Runtime, requested: int) -> int:
    """``requested``, or 1 for a program whose batch dimension is fixed at 1 (a Core ML file
    converted without a flexible batch, as apps usually ship)."""
    if runtime.emulator is not None:
        shape = runtime.emulator.plan.inputs[runtime.input_name][0]
        if shape and isinstance(shape[0], int) and shape[0] == 1:
            return 1
    return requested


def run_batches(runtime: Runtime, x: np.ndarray, batch_size: int, progress: bool = True, desc: str = "",
                labels: list | None = None) -> np.ndarray:
    """Predict ``x`` in batches and return the evaluated output (a classifier's
    probabilities) as float32. For a classifier, ``labels`` (a list) receives the predicted
    labels, one array per batch."""
    from tqdm.auto import tqdm

    outputs = []
    starts = range(0, len(x), batch_size)
    # disable=None: no bar when stderr is not a terminal (no carriage returns in a log file)
    for start in tqdm(starts, desc=desc or runtime.name, disable=None if progress else True, unit="batch", leave=False):
        result = runtime.predict({runtime.input_name: x[start : start + batch_size]})
        outputs.append(np.asarray(result[runtime.output_name], dtype=np.float32))
        if labels is not None and runtime.label_name is not None:
            labels.append(np.asarray(result[runtime.label_name]).reshape(-1))
    return np.concatenate(outputs, axis=0)
