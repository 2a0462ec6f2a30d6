"""Convert once, compress many: the conversion caches behind every variant.

Three levels, each memoized in the process and, when a cache directory is given, stored
content-addressed under ``<cache>/convert/`` (keys: model content hash, target, compute
precision with its fp32 op selection, batch bound, input name, coremltools/TensorFlow/Keras
versions read from the installed distributions, and :data:`CACHE_REVISION`) behind a file
lock, so the workers of a parallel launcher compute each entry once. A cached entry is found
and used without importing coremltools or TensorFlow:

1. **frontend**: ``ct.convert(..., convert_to="milinternal")`` with an empty pass pipeline, the
   MIL program straight from the TensorFlow frontend, once per (model, target, fp16/fp32 I/O).
   On disk in coremltools' milproto form (see :mod:`program_store`: loading runs no code).
2. **base**: the frontend program (deep copy) through coremltools' default pipeline and
   backend at the recipe's compute precision, once per (model, target, compute precision),
   on disk as an ``.mlpackage``. Uncompressed recipes (fp32, fp16, fp16_mixed) are a copy of it.
3. **compressed**: each compressed recipe loads its base package and runs
   ``coremltools.optimize.coreml`` on it, exactly what it would do after a plain ``ct.convert``,
   once per (base, recipe settings, ops kept float, calibration data), on disk as an
   ``.mlpackage``. The int8 repair's op-excluded variants are entries of this level too.

The fp32 base package of the same model and target is the size reference of
``compression_ratio`` and ``bits_per_weight``.

At neuralnetwork targets (iOS13/iOS14, macOS10_15/macOS11) the same levels hold ``.mlmodel``
files: the base is the frontend program through ``ct.convert(..., convert_to="neuralnetwork")``
(FP32 weights: the format has no compute precision), and every other recipe is a compressed
entry, the base through coremltools' ``quantize_weights`` stages of the recipe
(:func:`~precision_sweep.convert.recipes.nn_weight_stages`; ``fp16`` is fp16 weights). Their
keys carry ``"format": "neuralnetwork"``; ML Program keys are unchanged. Beside each such entry
a ``.weights.json`` holds its weight bytes, so a cached entry is measured without coremltools.

When coremltools raises inside a level, the error is re-raised as :class:`ConversionStepFailed`
carrying a :class:`BuildStep` (level, recipe, target, cache entry, where its input came from),
so :mod:`doctor` can say what was being built.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from precision_sweep.cache import file_lock, publish_dir_atomic
from precision_sweep.samples import hash_parts
from precision_sweep.convert.app_interface import PLAIN, AppInterface
from precision_sweep.convert.recipes import (
    FLOAT32,
    ComputeSpec,
    compress_weights,
    compute_spec,
    is_compressed,
    nn_quantize,
    nn_weight_stages,
    recipe_block,
)
from precision_sweep.convert.targets import (
    NEURALNETWORK,
    coremltools_target,
    effective_target_name,
    model_format,
    model_suffix,
    package_spec_version,
)
from precision_sweep.data.models import LoadedModel
from precision_sweep.data.versions import library_version
from precision_sweep.errors import SkipJob, UserInputError
from precision_sweep.hashing import hash_config

log = logging.getLogger(__name__)

_FRONTEND: dict[str, object] = {}
# In-process memo of built packages, per (cache key, cache folder): a package built for one
# cache folder is not an entry of another one.
_BASE: dict[tuple[str, str | None], Path] = {}
_COMPRESSED: dict[tuple[str, str | None], Path] = {}
_SCRATCH: list[Path] = []


@dataclass
class ConvertedModel:
    path: Path
    spec_version: int
    effective_target: str
    convert_seconds: float
    size_bytes: int
    weights_bytes: int = 0
    reference_size_bytes: int = 0  # the fp32 package of the same model and target
    reference_weights_bytes: int = 0

    @property
    def compression_ratio(self) -> float:
        """fp32 package size / this package's size (same model, same target)."""
        return self.reference_size_bytes / self.size_bytes if self.size_bytes else float("nan")

    @property
    def bits_per_weight(self) -> float:
        """Average stored bits per weight: 32 x weights_bytes / the fp32 package's weights_bytes."""
        if not self.reference_weights_bytes:
            return float("nan")
        return 32.0 * self.weights_bytes / self.reference_weights_bytes


def package_size(path: Path) -> int:
    """Bytes on disk of a saved model (a .mlpackage directory or a file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def weights_size(path: Path) -> int:
    """Bytes of a saved model's stored weights.

    An ``.mlpackage``: its weight blob files (``Data/com.apple.CoreML/weights/``), with the
    blob format's headers and 64-byte alignment. A neuralnetwork ``.mlmodel``: the bytes of
    every ``WeightParams`` in its layers (:func:`nn_weights_bytes`; this imports coremltools).
    """
    path = Path(path)
    if path.is_file():
        from coremltools.proto import Model_pb2

        spec = Model_pb2.Model()
        spec.ParseFromString(path.read_bytes())
        return nn_weights_bytes(spec)
    return sum(p.stat().st_size for d in path.rglob("weights") if d.is_dir() for p in d.rglob("*") if p.is_file())


def _weight_params_bytes(weights) -> int:
    """Stored bytes of one ``WeightParams`` (NeuralNetwork.proto): 4 per ``floatValue``, the
    ``float16Value``/``rawValue``/``int8RawValue`` bytes, and its quantization parameters (4
    per linear scale and bias, 4 per look-up table entry)."""
    quantization = weights.quantization
    return (4 * len(weights.floatValue) + len(weights.float16Value) + len(weights.rawValue)
            + len(weights.int8RawValue)
            + 4 * (len(quantization.linearQuantization.scale) + len(quantization.linearQuantization.bias)
                   + len(quantization.lookupTableQuantization.floatValue)))


def nn_weights_bytes(message) -> int:
    """Bytes of every ``WeightParams`` under a protobuf ``message`` (a ``Model`` spec: the
    layers of its network, of nested loop/branch networks and of pipelines)."""
    if message.DESCRIPTOR.full_name == "CoreML.Specification.WeightParams":
        return _weight_params_bytes(message)
    total = 0
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.is_repeated:
            if field.message_type.GetOptions().map_entry:
                continue
            total += sum(nn_weights_bytes(item) for item in value)
        else:
            total += nn_weights_bytes(value)
    return total


def _weights_record(path: Path) -> Path:
    return path.with_name(path.name + ".weights.json")


def _entry_weights_size(path: Path) -> int:
    """:func:`weights_size` of a cache entry: read from the record written beside a
    neuralnetwork entry when it was built (no coremltools import), else measured."""
    record = _weights_record(Path(path))
    if record.exists():
        return int(json.loads(record.read_text())["weights_bytes"])
    return weights_size(path)


# Part of every cache key: bump it when code here or in ``recipes`` changes what an entry holds
# (the library versions in the keys cover changes in coremltools, TensorFlow and Keras).
CACHE_REVISION = 2


def _versions() -> dict:
    # From the installed distributions: a cached entry is found without importing the libraries.
    return {"coremltools": library_version("coremltools"), "tensorflow": library_version("tensorflow"),
            "keras": library_version("keras"), "precision_sweep_cache": CACHE_REVISION}


@dataclass(frozen=True)
class BuildStep:
    """What the converter was building when coremltools failed (for the doctor's message)."""

    stage: str  # "frontend", "base" or "compression"
    model: str
    target: str
    compute: str  # the compute precision key, e.g. "float16" or "float16-mixed-<hash>"
    recipe: str | None = None  # the precision recipe's name, when a variant was being built
    entry: Path | None = None  # the cache entry being written
    source: str = ""  # where the stage's input came from, e.g. "frontend program read from <path>"


class ConversionStepFailed(Exception):
    """coremltools raised while the converter built ``step``; the cause is ``__cause__``."""

    def __init__(self, step: BuildStep):
        super().__init__(f"{step.stage} of {step.model} for {step.target} at {step.compute} failed")
        self.step = step


_FROZEN: list[bool] = []


def freeze_library_objects() -> None:
    """Move the objects that exist now (TensorFlow, Keras and coremltools, imported by the time a
    conversion starts) out of the garbage collector's scans, once per process.

    ``ct.convert`` calls ``gc.collect()`` three times; with TensorFlow loaded each call walks
    about half a million objects (0.5 s here), so most of a small model's conversion was spent
    in the collector. Objects created later are collected as before.
    """
    if not _FROZEN:
        import gc

        import coremltools  # noqa: F401
        import tensorflow  # noqa: F401

        gc.collect()
        gc.freeze()
        _FROZEN.append(True)


@contextmanager
def _building(step: BuildStep):
    freeze_library_objects()
    try:
        yield
    except (UserInputError, SkipJob):
        raise
    except Exception as exc:
        raise ConversionStepFailed(step) from exc


def _publish_package(mlmodel, path: Path) -> None:
    """Save ``mlmodel`` beside ``path`` and move it there in one step (readers never see half
    a package). A ``.mlmodel`` file gets its weight bytes recorded beside it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / f"model{path.suffix}"
        mlmodel.save(str(staged))
        if path.suffix == ".mlmodel":
            record = Path(tmp) / "weights.json"
            record.write_text(json.dumps({"weights_bytes": nn_weights_bytes(mlmodel.get_spec())}))
            os.replace(record, _weights_record(path))
            os.replace(staged, path)
        else:
            publish_dir_atomic(staged, path)


def _scratch_dir() -> Path:
    """Process-wide directory for base packages when no cache directory is given."""
    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="precision-sweep-convert-")))
    return _SCRATCH[0]


def _input_key(model: LoadedModel):
    """The inputs' part of a conversion's cache key (a single input: its name, as before)."""
    return model.input_name if not model.inputs else [[n, list(s), d] for n, s, d in model.inputs]


def _batch_dimension(model: LoadedModel, max_batch: int):
    """The program's batch dimension: flexible up to ``max_batch``, or fixed at 1 for a model
    whose own batch is (a detector whose NMS takes one image)."""
    import coremltools as ct

    return 1 if model.batch == 1 else ct.RangeDim(lower_bound=1, upper_bound=max_batch, default=1)


def _tensor_inputs(model: LoadedModel, batch) -> list:
    """One ``ct.TensorType`` per model input, the batch dimension ``batch``; integer inputs
    (token ids, masks) as int32, the integer type Core ML inputs take."""
    import coremltools as ct

    if not model.inputs:
        return [ct.TensorType(name=model.input_name, shape=(batch, *model.input_shape))]
    return [ct.TensorType(name=name, shape=(batch, *shape), **({"dtype": np.int32} if dtype.startswith("int") else {}))
            for name, shape, dtype in model.inputs]


def _name_outputs(program, model: LoadedModel):
    """Name a model's several outputs in ``program`` as Keras names them, so that TF and Core ML
    outputs match by name (the TF2 frontend names them Identity, Identity_1, ... in the model's
    output order, which the shapes confirm)."""
    if not model.output_names:
        return program
    function = program.functions["main"]
    if len(function.outputs) != len(model.output_names):
        raise ValueError(f"the converted program has {len(function.outputs)} outputs, the model {len(model.output_names)}")
    tensors = model.keras_model.outputs
    for var, name, tensor in zip(function.outputs, model.output_names, tensors):
        expected, have = tuple(tensor.shape[1:]), tuple(var.shape[1:])
        if len(have) != len(expected) or any(e is not None and isinstance(h, int) and h != e for h, e in zip(have, expected)):
            raise ValueError(f"program output {var.name} {tuple(var.shape)} does not match the model's output {name} {expected}")
        var.set_name(name)
    function.set_outputs(list(function.outputs))
    return program


def _frontend(model: LoadedModel, target_name: str, compute: ComputeSpec, max_batch: int, cache_dir: Path | None):
    """(program, where it came from): see :func:`frontend_program`."""
    import coremltools as ct

    io_precision = "float32" if compute.precision == "float32" else "float16"
    key = hash_config(
        {"stage": "frontend", "model": model.content_hash, "target": target_name, "io": io_precision,
         "max_batch": max_batch, "input": model.input_name, "versions": _versions()}
    )
    if key in _FRONTEND:
        return _FRONTEND[key]

    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "convert" / "frontend" / f"{model.name}-{target_name}-{io_precision}io-{key}.milprogram"

    def build():
        log.info("frontend: converting %s for %s (%s I/O)", model.name, target_name, io_precision)
        batch = _batch_dimension(model, max_batch)
        with _building(BuildStep("frontend", model.name, target_name, io_precision, entry=path,
                                 source="the TensorFlow model")):
            program = ct.convert(
                model.keras_model,
                source="tensorflow",
                convert_to="milinternal",
                inputs=_tensor_inputs(model, batch),
                minimum_deployment_target=coremltools_target(target_name),
                compute_precision=compute.frontend_value(),
                pass_pipeline=ct.PassPipeline.EMPTY,
            )
            return _name_outputs(program, model)

    if path is None:
        entry = (build(), "the frontend program built in this process")
    else:
        from precision_sweep.convert.program_store import ProgramNotStorable, load_program, save_program

        with file_lock(path.with_suffix(".lock")):
            if path.exists():
                entry = (load_program(path), f"the cached frontend program {path}")
            else:
                entry = (build(), "the frontend program built in this process")
                with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                    try:
                        save_program(entry[0], Path(tmp) / "program")
                    except ProgramNotStorable as exc:
                        log.info("frontend: %s for %s kept in memory only (%s)", model.name, target_name, exc)
                    else:
                        publish_dir_atomic(Path(tmp) / "program", path)
    _FRONTEND[key] = entry
    return entry


def frontend_program(model: LoadedModel, target_name: str, compute: ComputeSpec, max_batch: int, cache_dir: Path | None = None):
    """The MIL program of ``model`` for ``target_name`` straight from the TF frontend (cached).

    One program per (model, target, fp16 or fp32 I/O): the frontend uses the compute precision
    only to choose the I/O dtype, so FLOAT16 and every fp32-op selection share it. Callers get
    the shared object: deep-copy it before passes change it.
    """
    return _frontend(model, target_name, compute, max_batch, cache_dir)[0]


def _with_interface(program, model: LoadedModel, interface: AppInterface, max_batch: int, convert_to: str = "mlprogram"):
    """``program`` (a copy) with the app's input type on its main function, so that
    coremltools' pipeline inserts the image preprocessing and lays the input out as
    ``ct.convert(..., inputs=[ct.ImageType(...)])`` does."""
    import coremltools as ct

    program = copy.deepcopy(program)
    if interface.image is not None:
        batch = _batch_dimension(model, max_batch)
        input_type = interface.input_type(model.input_name, tuple(model.input_shape), batch)
        if convert_to == NEURALNETWORK and input_type.color_layout.name.startswith("GRAYSCALE"):
            # coremltools' NN backend writes a grayscale bias into the scaler's one float
            # (``_convert_to_image_input``): a one-element list fails there
            bias = input_type.bias
            input_type.bias = float(bias[0]) if isinstance(bias, (list, tuple)) else float(bias)
        program.functions["main"].input_types = [input_type]
    return program


def base_package(model: LoadedModel, target_name: str, compute: ComputeSpec, max_batch: int,
                 cache_dir: Path | None = None, recipe: str | None = None,
                 interface: AppInterface = PLAIN) -> Path:
    """The saved package of ``model`` converted at ``compute`` for ``target_name`` (cached).

    ``compute`` may keep ops in fp32 (mixed precision): each selection is its own entry, so a
    repair that converts many selections converts each once, across jobs and processes.
    ``recipe`` only names the recipe in error messages. ``interface`` adds the app's image
    input and classifier output (:mod:`.app_interface`). At a neuralnetwork target the base is
    the FP32 ``.mlmodel`` whatever ``compute`` says (the format has no compute precision).
    """
    convert_to = model_format(target_name)
    if convert_to == NEURALNETWORK:
        compute = FLOAT32
    entry = {"stage": "base", "model": model.content_hash, "target": target_name, "compute": compute.key,
             "max_batch": max_batch, "input": _input_key(model), "versions": _versions()}
    if not interface.plain:
        entry["interface"] = interface.key()
    if convert_to == NEURALNETWORK:
        entry["format"] = convert_to
    key = hash_config(entry)
    cached = _BASE.get((key, None if cache_dir is None else str(cache_dir)))
    if cached is not None and cached.exists():
        return cached
    root = Path(cache_dir) / "convert" / "base" if cache_dir is not None else _scratch_dir()
    path = root / f"{model.name}-{target_name}-{compute.key}-{key}{model_suffix(target_name)}"
    with file_lock(path.with_suffix(".lock")):
        if not path.exists():
            import coremltools as ct

            log.info("base: converting %s for %s at %s", model.name, target_name, compute.key)
            # An image input fixes the program's input dtype (fp32, or fp16 for GRAYSCALE_FLOAT16)
            frontend_compute = FLOAT32 if interface.io_precision == "float32" else compute
            program, source = _frontend(model, target_name, frontend_compute, max_batch, cache_dir)
            step = BuildStep("base", model.name, target_name, compute.key, recipe, path if cache_dir else None, source)
            # ct.convert refuses a compute_precision for neuralnetwork models
            precision = {} if convert_to == NEURALNETWORK else {"compute_precision": compute.coremltools_value()}
            with _building(step):
                mlmodel = ct.convert(
                    _with_interface(program, model, interface, max_batch, convert_to),
                    convert_to=convert_to,
                    minimum_deployment_target=coremltools_target(target_name),
                    classifier_config=interface.classifier_config(),
                    skip_model_load=True,
                    **precision,
                )
            _publish_package(mlmodel, path)
    _BASE[(key, None if cache_dir is None else str(cache_dir))] = path
    return path


def compressed_package(model: LoadedModel, precision, target_name: str, max_batch: int,
                       cache_dir: Path | None = None, calibration=None, keep_float: tuple[str, ...] = (),
                       interface: AppInterface = PLAIN) -> Path:
    """The package of ``model`` compressed by the ``precision`` recipe for ``target_name``
    (cached): ``coremltools.optimize.coreml`` run on the recipe's base package.

    ``keep_float`` names ops whose weights stay uncompressed (the int8 repair's kept ops);
    ``calibration`` is the activation-quantization calibration input (part of the key).

    At a neuralnetwork target the recipe's ``quantize_weights`` stages run on the FP32
    ``.mlmodel`` instead (no calibration, no ops kept float).
    """
    from precision_sweep.hashing import hash_arrays

    convert_to = model_format(target_name)
    compute = compute_spec(precision)
    base = base_package(model, target_name, compute, max_batch, cache_dir, recipe=precision.name, interface=interface)
    entry = {"stage": "compressed", "base": base.name, "recipe": recipe_block(precision),
             "keep_float": sorted(keep_float), "calibration": hash_arrays(hash_parts(calibration)) if calibration is not None else None,
             "versions": _versions()}
    stages = ()
    if convert_to == NEURALNETWORK:
        if keep_float or calibration is not None:
            raise ValueError("neuralnetwork variants keep no ops float and take no calibration")
        stages = nn_weight_stages(precision)
        entry["format"] = convert_to
        entry["nn_stages"] = [vars(stage) for stage in stages]
    key = hash_config(entry)
    cached = _COMPRESSED.get((key, None if cache_dir is None else str(cache_dir)))
    if cached is not None and cached.exists():
        return cached
    root = Path(cache_dir) / "convert" / "compressed" if cache_dir is not None else _scratch_dir()
    path = root / f"{model.name}-{target_name}-{precision.name}-{key}{model_suffix(target_name)}"
    with file_lock(path.with_suffix(".lock")):
        if not path.exists():
            import coremltools as ct

            log.info("compressed: %s for %s at %s%s", model.name, target_name, precision.name,
                     f" keeping {len(keep_float)} op(s) float" if keep_float else "")
            step = BuildStep("compression", model.name, target_name, compute.key, precision.name,
                             path if cache_dir else None, f"the base package {base}")
            with _building(step):
                mlmodel = ct.models.MLModel(str(base), skip_model_load=True)
                if convert_to == NEURALNETWORK:
                    mlmodel = nn_quantize(mlmodel, stages)
                else:
                    mlmodel = compress_weights(mlmodel, precision, calibration, keep_float)
            _publish_package(mlmodel, path)
    _COMPRESSED[(key, None if cache_dir is None else str(cache_dir))] = path
    return path


def fp32_package(model: LoadedModel, target_name: str, max_batch: int, cache_dir: Path | None = None,
                 interface: AppInterface = PLAIN) -> Path:
    """The FP32 program of ``model`` for ``target_name``: every job's size reference, and the
    reference of the drift diagnosis and the repair (cached: converted once)."""
    return base_package(model, target_name, FLOAT32, max_batch, cache_dir, recipe="fp32", interface=interface)


def convert_variant(
    model: LoadedModel,
    precision,
    target,
    out_path: Path,
    max_batch: int = 1024,
    cache_dir: Path | None = None,
    calibration=None,
    interface: AppInterface = PLAIN,
) -> ConvertedModel:
    """Convert ``model`` at the ``precision`` recipe for ``target`` and save it as ``out_path``.

    Parameters
    ----------
    model
        The loaded Keras model.
    precision, target
        ``precision`` and ``target`` config nodes.
    out_path
        Where the ``.mlpackage`` (at neuralnetwork targets the ``.mlmodel``) is saved.
    max_batch
        Upper bound of the program's flexible batch dimension.
    cache_dir
        ``paths.cache``: frontend programs, base and compressed packages are shared through it
        across processes. Without it they are shared within the process only.
    calibration
        Calibration inputs for recipes that quantize activations (see
        :func:`precision_sweep.convert.calibration.calibration_split`), as the program takes them.
    interface
        The app's image input and classifier output (:mod:`.app_interface`); default: a tensor
        input and the model's own output.

    When the packages are cached nothing is converted and neither coremltools nor TensorFlow is
    imported (the spec version is read from the package's bytes).
    """
    start = time.perf_counter()
    target_name = target.coremltools_target
    if model_format(target_name) == NEURALNETWORK:
        if nn_weight_stages(precision):
            source = compressed_package(model, precision, target_name, max_batch, cache_dir, interface=interface)
        else:
            source = base_package(model, target_name, FLOAT32, max_batch, cache_dir, recipe=precision.name,
                                  interface=interface)
    elif is_compressed(precision):
        source = compressed_package(model, precision, target_name, max_batch, cache_dir, calibration, interface=interface)
    else:
        source = base_package(model, target_name, compute_spec(precision), max_batch, cache_dir, recipe=precision.name,
                              interface=interface)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.is_dir():
        shutil.rmtree(out_path)
    elif out_path.exists():
        out_path.unlink()
    if source.is_dir():
        shutil.copytree(source, out_path)
    else:
        shutil.copyfile(source, out_path)
    spec_version = package_spec_version(out_path)
    seconds = time.perf_counter() - start
    reference = fp32_package(model, target_name, max_batch, cache_dir, interface)
    return ConvertedModel(
        path=out_path,
        spec_version=spec_version,
        effective_target=effective_target_name(spec_version, target_name),
        convert_seconds=seconds,
        size_bytes=package_size(out_path),
        weights_bytes=_entry_weights_size(source),  # out_path is its copy
        reference_size_bytes=package_size(reference),
        reference_weights_bytes=_entry_weights_size(reference),
    )
