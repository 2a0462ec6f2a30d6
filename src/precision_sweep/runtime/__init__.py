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

from precision_sweep.samples import feeds_of
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


def _judged(names: list[str], output: str | None) -> str:
    """The program output judged: ``output`` (a model's selected output, matched by name), else the first."""
    return output if output is not None and output in names else names[0]


def _emulator(path: Path, execution, output: str | None = None) -> Runtime:
    emulator = execution.emulator(path)
    classifier = emulator.classifier()
    if classifier is None:
        return Runtime("emulator", emulator.input_names[0], _judged(emulator.output_names, output), emulator.predict,
                       emulator=emulator)
    label, probabilities, classes = classifier
    return Runtime("emulator", emulator.input_names[0], probabilities, emulator.predict, emulator=emulator,
                   label_name=label, class_labels=tuple(classes))


def _coreml(path: Path, execution, output: str | None = None) -> Runtime:
    import coremltools as ct

    mlmodel = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, execution.compute_units.upper()))
    spec = mlmodel.get_spec()
    description = spec.description
    feed = _pil_images(description.input[0])
    if not description.predictedFeatureName and feed is None:
        return Runtime("coreml", description.input[0].name, _judged([o.name for o in description.output], output),
                       mlmodel.predict)

    def predict_rows(feeds: dict) -> list[dict]:
        # one sample per call: an image input takes a PIL image, a classifier returns one label
        count = len(next(iter(feeds.values())))
        return [mlmodel.predict({name: feed(x[i]) if feed else x[i : i + 1] for name, x in feeds.items()})
                for i in range(count)]

    if not description.predictedFeatureName:
        output = description.output[0].name

        def predict(feeds: dict) -> dict:
            return {output: np.concatenate([np.asarray(r[output]) for r in predict_rows(feeds)])}

        return Runtime("coreml", description.input[0].name, output, predict)
    classes = tuple(_coreml_class_labels(spec, path))
    label, probabilities = description.predictedFeatureName, description.predictedProbabilitiesName

    def predict(feeds: dict) -> dict:
        rows = predict_rows(feeds)  # the probabilities are a dict per sample
        return {label: np.array([r[label] for r in rows]),
                probabilities: np.array([[r[probabilities][c] for c in classes] for r in rows], dtype=np.float32)}

    return Runtime("coreml", description.input[0].name, probabilities, predict, label_name=label, class_labels=classes)


def _pil_images(feature) -> Callable | None:
    """For an image input, the function from one program input sample (CHW, in the input's
    colour order, as :class:`~precision_sweep.data.preprocessing.ImageFeed` gives it) back to
    the PIL image an app hands Core ML (which then reorders and scales it itself); else None.
    Not exercised here: Core ML prediction runs on macOS only."""
    if feature.type.WhichOneof("Type") != "imageType":
        return None
    from coremltools.proto import FeatureTypes_pb2
    from PIL import Image

    layout = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(feature.type.imageType.colorSpace)

    def to_image(sample: np.ndarray):
        hwc = np.transpose(np.asarray(sample, dtype=np.float32), (1, 2, 0))
        if layout == "BGR":
            hwc = hwc[..., ::-1]
        if layout == "GRAYSCALE_FLOAT16":
            return Image.fromarray(hwc[..., 0], mode="F")
        pixels = np.clip(np.round(hwc), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels[..., 0] if layout == "GRAYSCALE" else pixels)

    return to_image


def _coreml_class_labels(spec, path: Path) -> list:
    """A classifier's labels (an ML program's ``classify`` op, or a neuralnetwork's list)."""
    from precision_sweep.emulator import Execution

    classifier = Execution("cpu_only").emulator(path).classifier() if spec.WhichOneof("Type") == "mlProgram" else None
    if classifier is not None:
        return list(classifier[2])
    model = getattr(spec, spec.WhichOneof("Type"))
    labels = model.stringClassLabels.vector or model.int64ClassLabels.vector
    return list(labels)


def select_runtime(name: str, path: Path, execution, probe: np.ndarray | None = None, output: str | None = None) -> Runtime:
    """Build the runtime ``name`` (auto, emulator, coreml) for the package at ``path``, for an
    :class:`~precision_sweep.emulator.Execution` (compute units, device); ``output`` names the
    judged output of a program with several (default: its first)."""
    if name == "emulator":
        return _emulator(path, execution, output)
    if name == "coreml":
        if sys.platform != "darwin":
            raise UserInputError(
                "runtime=coreml needs macOS: Core ML prediction does not exist on "
                f"{sys.platform}. Use runtime=auto or runtime=emulator."
            )
        return _coreml(path, execution, output)
    if name == "auto":
        if sys.platform == "darwin":
            try:
                runtime = _coreml(path, execution, output)
                if probe is not None:
                    runtime.predict(feeds_of(probe[:1], runtime.input_name))
                return runtime
            except Exception as exc:  # fall back, but say so in the run
                log.warning("Core ML runtime unavailable (%s); using the emulator", exc)
                fallback = _emulator(path, execution, output)
                fallback.note = f"coreml unavailable: {exc}"
                return fallback
        return _emulator(path, execution, output)
    raise UserInputError(f"Unknown runtime {name!r}: choose runtime=auto, emulator or coreml.")


def batch_size_for(runtime: Runtime, requested: int) -> int:
    """``requested``, or 1 for a program whose batch dimension is fixed at 1 (a Core ML file
    converted without a flexible batch, as apps usually ship)."""
    if runtime.emulator is not None:
        return runtime.emulator.fixed_batch or requested
    return requested


def run_batches(runtime: Runtime, x: np.ndarray, batch_size: int, progress: bool = True, desc: str = "",
                labels: list | None = None, others: dict | None = None, store=None, reuse: bool = False) -> np.ndarray:
    """Predict ``x`` (one array, or :class:`~precision_sweep.samples.NamedSamples` for
    several inputs) in batches and return the evaluated output (a classifier's
    probabilities) as float32. For a classifier, ``labels`` (a list) receives the predicted
    labels, one array per batch; ``others`` (a dict) receives every other output of the
    program by name, each as one float32 array.

    With ``store`` (a :class:`~precision_sweep.runtime.batches.BatchStore`) each batch is saved
    as it finishes; with ``reuse`` too, a batch already saved there (by an interrupted run of
    the job, or by a shard) is read instead of evaluated."""
    from precision_sweep.runtime.batches import LABEL, OTHER, OUTPUT, predict_batch
    from precision_sweep.runtime.progress import SampleProgress

    batches, reused = [], 0
    starts = range(0, len(x), batch_size)
    meter = SampleProgress(desc or runtime.name, len(x), bar=progress)
    for start in starts:
        arrays = store.load(start) if store is not None and reuse else None
        evaluated = arrays is None
        if evaluated:
            arrays = predict_batch(runtime, x, start, batch_size)
            if store is not None:
                store.save(start, arrays)
        else:
            reused += 1
        batches.append(arrays)
        meter.update(min(batch_size, len(x) - start), evaluated)
    meter.close()
    if reused:
        log.info("%s: %d of %d batches read from %s, %d evaluated", desc or runtime.name, reused, len(starts),
                 store.folder, len(starts) - reused)
    if labels is not None and runtime.label_name is not None:
        labels.extend(arrays[LABEL] for arrays in batches)
    if others is not None:
        names = [name for name in batches[0] if name.startswith(OTHER)] if batches else []
        others.update({name[len(OTHER):]: np.concatenate([arrays[name] for arrays in batches], axis=0) for name in names})
    return np.concatenate([arrays[OUTPUT] for arrays in batches], axis=0)
