"""Run the TF frontend once per (model, target), build every precision from a deep copy.

``ct.convert(..., convert_to="milinternal")`` with an empty pass pipeline returns the MIL
program straight from the TensorFlow frontend; each variant then runs coremltools' default
pipeline and backend on a deep copy (about 1 s instead of about 3 s for a full conversion).

The frontend already fixes the program's input/output dtypes from the compute precision
(fp16 I/O for FLOAT16 at iOS16+, fp32 otherwise), so the cache is keyed by compute precision
too: a variant must be exactly the program a plain ``ct.convert`` would give.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from precision_sweep.convert.recipes import compress_weights, compute_precision
from precision_sweep.convert.targets import coremltools_target, effective_target_name
from precision_sweep.data.models import LoadedModel

log = logging.getLogger(__name__)

_FRONTEND: dict[tuple, object] = {}


@dataclass
class ConvertedModel:
    path: Path
    spec_version: int
    effective_target: str
    convert_seconds: float
    size_bytes: int


def package_size(path: Path) -> int:
    """Bytes on disk of a saved model (a .mlpackage directory or a file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def frontend_program(model: LoadedModel, target_name: str, precision, max_batch: int):
    """The MIL program of ``model`` for ``target_name``, straight from the TF frontend (memoized)."""
    import coremltools as ct

    key = (model.content_hash, target_name, str(precision), max_batch)
    if key not in _FRONTEND:
        batch = ct.RangeDim(lower_bound=1, upper_bound=max_batch, default=1)
        _FRONTEND[key] = ct.convert(
            model.keras_model,
            source="tensorflow",
            convert_to="milinternal",
            inputs=[ct.TensorType(name=model.input_name, shape=(batch, *model.input_shape))],
            minimum_deployment_target=coremltools_target(target_name),
            compute_precision=precision,
            pass_pipeline=ct.PassPipeline.EMPTY,
        )
    return _FRONTEND[key]


def convert_variant(model: LoadedModel, precision, target, out_path: Path, max_batch: int = 1024) -> ConvertedModel:
    """Convert ``model`` at ``precision`` for ``target`` and save it as ``out_path``."""
    import coremltools as ct

    start = time.perf_counter()
    precision_value = compute_precision(precision)
    program = copy.deepcopy(frontend_program(model, target.coremltools_target, precision_value, max_batch))
    mlmodel = ct.convert(
        program,
        convert_to="mlprogram",
        compute_precision=precision_value,
        minimum_deployment_target=coremltools_target(target.coremltools_target),
        skip_model_load=True,
    )
    mlmodel = compress_weights(mlmodel, precision)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(out_path))
    seconds = time.perf_counter() - start
    spec_version = ct.models.MLModel(str(out_path), skip_model_load=True).get_spec().specificationVersion
    return ConvertedModel(
        path=out_path,
        spec_version=spec_version,
        effective_target=effective_target_name(spec_version, target.coremltools_target),
        convert_seconds=seconds,
        size_bytes=package_size(out_path),
    )
