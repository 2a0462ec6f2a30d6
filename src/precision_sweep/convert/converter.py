"""Convert once, compress many: the conversion caches behind every variant.

Three levels, each memoized in the process and, when a cache directory is given, stored
content-addressed under ``<cache>/convert/`` (keys: model content hash, target, compute
precision, batch bound, coremltools/TensorFlow/Keras versions) behind a file lock, so the
workers of a parallel launcher compute each entry once:

1. **frontend**: ``ct.convert(..., convert_to="milinternal")`` with an empty pass pipeline, the
   MIL program straight from the TensorFlow frontend, once per (model, target, fp16/fp32 I/O).
   On disk as a pickle (see :mod:`program_store` for why and when that is safe).
2. **base**: the frontend program (deep copy) through coremltools' default pipeline and
   backend at the recipe's compute precision, once per (model, target, compute precision),
   on disk as an ``.mlpackage``. Uncompressed recipes (fp32, fp16, fp16_mixed) are a copy of it.
3. **compression**: each compressed recipe loads its base package and runs
   ``coremltools.optimize.coreml`` on it, exactly what it would do after a plain ``ct.convert``.

The fp32 base package of the same model and target is the size reference of
``compression_ratio`` and ``bits_per_weight``.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from precision_sweep.cache import file_lock, publish_dir_atomic, save_bytes_atomic
from precision_sweep.convert.recipes import FLOAT32, ComputeSpec, compress_weights, compute_spec, is_compressed
from precision_sweep.convert.targets import coremltools_target, effective_target_name
from precision_sweep.data.models import LoadedModel
from precision_sweep.hashing import hash_config

log = logging.getLogger(__name__)

_FRONTEND: dict[str, object] = {}
_BASE: dict[str, Path] = {}
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
    """Bytes of the package's weight blob files (``Data/com.apple.CoreML/weights/``): the
    stored weights, with the blob format's headers and 64-byte alignment."""
    path = Path(path)
    return sum(p.stat().st_size for d in path.rglob("weights") if d.is_dir() for p in d.rglob("*") if p.is_file())


def _versions() -> dict:
    import coremltools as ct
    import keras
    import tensorflow as tf

    return {"coremltools": ct.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}


def _scratch_dir() -> Path:
    """Process-wide directory for base packages when no cache directory is given."""
    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="precision-sweep-convert-")))
    return _SCRATCH[0]


def frontend_program(model: LoadedModel, target_name: str, compute: ComputeSpec, max_batch: int, cache_dir: Path | None = None):
    """The MIL program of ``model`` for ``target_name`` straight from the TF frontend (cached)."""
    import coremltools as ct

    io_precision = "float32" if compute.precision == "float32" else "float16"
    key = hash_config(
        {"stage": "frontend", "model": model.content_hash, "target": target_name, "io": io_precision,
         "max_batch": max_batch, "input": model.input_name, "versions": _versions()}
    )
    if key in _FRONTEND:
        return _FRONTEND[key]

    def build():
        log.info("frontend: converting %s for %s (%s I/O)", model.name, target_name, io_precision)
        batch = ct.RangeDim(lower_bound=1, upper_bound=max_batch, default=1)
        return ct.convert(
            model.keras_model,
            source="tensorflow",
            convert_to="milinternal",
            inputs=[ct.TensorType(name=model.input_name, shape=(batch, *model.input_shape))],
            minimum_deployment_target=coremltools_target(target_name),
            compute_precision=compute.frontend_value(),
            pass_pipeline=ct.PassPipeline.EMPTY,
        )

    if cache_dir is None:
        program = build()
    else:
        from precision_sweep.convert.program_store import dumps_program, loads_program

        path = Path(cache_dir) / "convert" / "frontend" / f"{model.name}-{target_name}-{io_precision}io-{key}.milpickle"
        with file_lock(path.with_suffix(".lock")):
            if path.exists():
                program = loads_program(path.read_bytes())
            else:
                program = build()
                save_bytes_atomic(path, dumps_program(program))
    _FRONTEND[key] = program
    return program


def base_package(model: LoadedModel, target_name: str, compute: ComputeSpec, max_batch: int, cache_dir: Path | None = None) -> Path:
    """The saved package of ``model`` converted at ``compute`` for ``target_name`` (cached)."""
    import coremltools as ct

    key = hash_config(
        {"stage": "base", "model": model.content_hash, "target": target_name, "compute": compute.key,
         "max_batch": max_batch, "input": model.input_name, "versions": _versions()}
    )
    cached = _BASE.get(key)
    if cached is not None and cached.exists():
        return cached
    root = Path(cache_dir) / "convert" / "base" if cache_dir is not None else _scratch_dir()
    path = root / f"{model.name}-{target_name}-{compute.key}-{key}.mlpackage"
    with file_lock(path.with_suffix(".lock")):
        if not path.exists():
            log.info("base: converting %s for %s at %s", model.name, target_name, compute.key)
            program = copy.deepcopy(frontend_program(model, target_name, compute, max_batch, cache_dir))
            mlmodel = ct.convert(
                program,
                convert_to="mlprogram",
                compute_precision=compute.coremltools_value(),
                minimum_deployment_target=coremltools_target(target_name),
                skip_model_load=True,
            )
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                staged = Path(tmp) / "model.mlpackage"
                mlmodel.save(str(staged))
                publish_dir_atomic(staged, path)
    _BASE[key] = path
    return path


def convert_variant(
    model: LoadedModel,
    precision,
    target,
    out_path: Path,
    max_batch: int = 1024,
    cache_dir: Path | None = None,
    calibration=None,
) -> ConvertedModel:
    """Convert ``model`` at the ``precision`` recipe for ``target`` and save it as ``out_path``.

    Parameters
    ----------
    model
        The loaded Keras model.
    precision, target
        ``precision`` and ``target`` config nodes.
    out_path
        Where the ``.mlpackage`` is saved.
    max_batch
        Upper bound of the program's flexible batch dimension.
    cache_dir
        ``paths.cache``: frontend programs and base packages are shared through it across
        processes. Without it they are shared within the process only.
    calibration
        Calibration inputs for recipes that quantize activations (see
        :func:`precision_sweep.convert.calibration.calibration_split`).
    """
    import coremltools as ct

    start = time.perf_counter()
    target_name = target.coremltools_target
    base = base_package(model, target_name, compute_spec(precision), max_batch, cache_dir)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.exists():
        shutil.rmtree(out_path)
    if is_compressed(precision):
        mlmodel = ct.models.MLModel(str(base), skip_model_load=True)
        mlmodel = compress_weights(mlmodel, precision, calibration)
        mlmodel.save(str(out_path))
        spec_version = mlmodel.get_spec().specificationVersion
    else:
        shutil.copytree(base, out_path)
        spec_version = ct.utils.load_spec(str(out_path)).specificationVersion
    seconds = time.perf_counter() - start
    reference = base_package(model, target_name, FLOAT32, max_batch, cache_dir)
    return ConvertedModel(
        path=out_path,
        spec_version=spec_version,
        effective_target=effective_target_name(spec_version, target_name),
        convert_seconds=seconds,
        size_bytes=package_size(out_path),
        weights_bytes=weights_size(out_path),
        reference_size_bytes=package_size(reference),
        reference_weights_bytes=weights_size(reference),
    )
