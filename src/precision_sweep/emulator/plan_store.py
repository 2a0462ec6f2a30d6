"""The plan cache: a compiled :class:`~.plan.Plan` stored as data, reloaded without coremltools.

Compiling a plan needs coremltools (its milproto loader), and importing coremltools imports
TensorFlow: seconds per process. A worker whose packages are already converted only needs
the plan, so this module owns storing one and reading it back:

* :func:`save_plan` writes an entry, a folder holding ``plan.json`` (the structure: steps,
  blocks, placements, accumulators, dtypes, names) and ``arrays.npz`` (every array, each
  once however many steps share it). It writes a temporary folder beside the entry and
  renames it into place, so readers never see half an entry; a concurrent writer that loses
  the race drops its copy.
* :func:`load_plan` rebuilds the same plan. Nothing stored is code: kernels are looked up in
  the registry by op type, placements and accumulators are rebuilt from the caller's
  :class:`~.numerics.UnitModels` (a stored unit model must equal one of them), dtypes come
  from strings, arrays are read with ``allow_pickle=False``. An entry of another format, or
  malformed in any way, raises :class:`PlanStoreError`.
* :func:`plan_key` names the entry of a package: its files' content, the execution, the
  numerics version, the function, :data:`PLAN_FORMAT` and the installed precision_sweep.
* :func:`cached_plan` ties them together for :class:`~precision_sweep.emulator.Emulator`:
  load the entry, or compile (recompiling over a rejected entry) and store it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from precision_sweep.emulator.numerics import FP32_ACCUMULATION, NUMERICS_VERSION, Accumulation, UnitModel, UnitModels
from precision_sweep.emulator.ops._accumulate import Accumulator
from precision_sweep.emulator.ops.control_flow import TensorList
from precision_sweep.emulator.placement import Placement
from precision_sweep.emulator.plan import Block, FlexibleDim, Plan, Step
from precision_sweep.emulator.registry import KERNELS

log = logging.getLogger(__name__)

# Bump when the stored layout or the meaning of a stored field changes.
PLAN_FORMAT = 1

PLAN_FILE = "plan.json"
ARRAYS_FILE = "arrays.npz"

# The fields this module stores; a dataclass that grows a field is refused (not silently
# dropped) until the store learns it and PLAN_FORMAT is bumped.
_STEP_FIELDS = {"op_type", "name", "fn", "const_kwargs", "var_kwargs", "outputs", "blocks", "placement",
                "accumulator", "coerce", "reuses"}
_BLOCK_FIELDS = {"inputs", "steps", "outputs"}
_PLAN_FIELDS = {"inputs", "outputs", "constants", "steps", "producers", "spec_version", "lean_steps", "releases"}
_PLACEMENT_FIELDS = {"model", "reason", "macs"}
_TENSOR_LIST_FIELDS = {"elements", "elem_shape", "dtype", "dynamic_length"}


class PlanStoreError(ValueError):
    """A cache entry that cannot be read back: missing, malformed, or of another format."""


class PlanNotStorable(TypeError):
    """A plan holding a value the store does not know how to write as data."""


def _field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def _check_fields() -> None:
    for cls, known in ((Step, _STEP_FIELDS), (Block, _BLOCK_FIELDS), (Plan, _PLAN_FIELDS),
                       (Placement, _PLACEMENT_FIELDS), (TensorList, _TENSOR_LIST_FIELDS), (Accumulator, {"spec"})):
        if _field_names(cls) != known:
            raise PlanNotStorable(f"{cls.__name__} has fields {sorted(_field_names(cls))}; the plan store knows "
                                  f"{sorted(known)} (teach plan_store the new ones and bump PLAN_FORMAT)")


# --- the key -------------------------------------------------------------------------------


def installed_version() -> str:
    """The installed precision_sweep's version (``unknown`` when run from a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("precision-sweep")
    except PackageNotFoundError:
        return "unknown"


def key_fields(models: UnitModels, function_name: str) -> dict[str, Any]:
    """Everything besides the package's content that the compiled plan depends on."""
    return {
        "compute_units": models.compute_units,
        "device": models.device,
        "gpu_low_precision_accumulation": models.gpu_low_precision_accumulation,
        "numerics_version": NUMERICS_VERSION,
        "function_name": function_name,
        "plan_format": PLAN_FORMAT,
        "precision_sweep": installed_version(),
    }


def plan_key(path: Path, models: UnitModels, function_name: str = "main") -> str:
    """The cache entry name of the package at ``path`` under ``models``: a hash of the
    package's files and of :func:`key_fields`."""
    from precision_sweep.hashing import hash_path

    return hash_path(Path(path), key_fields(models, function_name))


# --- writing -------------------------------------------------------------------------------


class _Writer:
    """Encodes a plan as JSON-able data, collecting its arrays (each object once)."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self.read_only: list[str] = []
        self._keys: dict[int, str] = {}
        self._alive: list[Any] = []  # keeps encoded objects alive so their ids stay unique
        self.models: list[UnitModel] = []

    def array(self, value: np.ndarray) -> str:
        key = self._keys.get(id(value))
        if key is None:
            if value.dtype.hasobject or value.dtype.kind == "V":
                raise PlanNotStorable(f"array of dtype {value.dtype} cannot be stored without pickle")
            key = f"a{len(self.arrays)}"
            self._keys[id(value)] = key
            self._alive.append(value)
            self.arrays[key] = value
            if not value.flags.writeable:
                self.read_only.append(key)
        return key

    def value(self, value: Any) -> Any:
        if type(value) is np.ndarray:
            return {"array": self.array(value)}
        if isinstance(value, np.generic):  # before float: np.float64 is a float
            return {"scalar": self.array(np.asarray(value))}
        if type(value) in (type(None), bool, int, float, str):
            return value
        if isinstance(value, np.dtype):
            return {"dtype": _dtype_str(value)}
        if isinstance(value, list):
            return {"list": [self.value(v) for v in value]}
        if isinstance(value, tuple):
            return {"tuple": [self.value(v) for v in value]}
        if isinstance(value, TensorList):
            return {"tensor_list": {
                "elements": [self.value(e) for e in value.elements],
                "elem_shape": self.value(value.elem_shape),
                "dtype": _dtype_str(value.dtype),
                "dynamic_length": bool(value.dynamic_length),
            }}
        raise PlanNotStorable(f"value of type {type(value).__name__}")

    def model(self, model: UnitModel) -> int:
        for index, known in enumerate(self.models):
            if known == model:
                return index
        self.models.append(model)
        return len(self.models) - 1

    def step(self, step: Step) -> dict:
        if KERNELS.get(step.op_type) is not step.fn:
            raise PlanNotStorable(f"step {step.name!r} runs a kernel other than the registry's {step.op_type!r}")
        placement = None
        if step.placement is not None:
            placement = {"model": self.model(step.placement.model), "reason": step.placement.reason,
                         "macs": int(step.placement.macs)}
        return {
            "op_type": step.op_type,
            "name": step.name,
            "const_kwargs": {k: self.value(v) for k, v in step.const_kwargs.items()},
            "var_kwargs": {k: list(v) if isinstance(v, list) else str(v) for k, v in step.var_kwargs.items()},
            "outputs": [[name, _dtype_str(dtype)] for name, dtype in step.outputs],
            "blocks": {arg: self.block(block) for arg, block in step.blocks.items()},
            "placement": placement,
            "accumulator": asdict(step.accumulator.spec),
            "coerce": list(step.coerce),
            "reuses": step.reuses,
        }

    def block(self, block: Block) -> dict:
        return {
            "inputs": [[name, _dtype_str(dtype)] for name, dtype in block.inputs],
            "steps": [self.step(s) for s in block.steps],
            "outputs": list(block.outputs),
        }


def _dtype_str(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.kind == "V":
        raise PlanNotStorable(f"dtype {dtype} cannot be stored")
    return dtype.str


def _dim(dim) -> Any:
    if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool):
        return int(dim)
    if isinstance(dim, FlexibleDim):
        return {"symbol": dim.name}
    raise PlanNotStorable(f"input dimension {dim!r} of type {type(dim).__name__}")


def encode_plan(plan: Plan) -> tuple[dict, dict[str, np.ndarray]]:
    """``(document, arrays)``: the plan as JSON-able data and the arrays it refers to."""
    _check_fields()
    writer = _Writer()
    steps = [writer.step(s) for s in plan.steps]
    index = {id(s): i for i, s in enumerate(plan.steps)}
    lean = [{"step": index[id(s)]} if id(s) in index else writer.step(s) for s in plan.lean_steps]
    document = {
        "format": PLAN_FORMAT,
        "inputs": {name: {"shape": [_dim(d) for d in shape], "dtype": _dtype_str(dtype)}
                   for name, (shape, dtype) in plan.inputs.items()},
        "outputs": list(plan.outputs),
        "constants": {name: writer.value(v) for name, v in plan.constants.items()},
        "steps": steps,
        "producers": {name: [op_type, op_name] for name, (op_type, op_name) in plan.producers.items()},
        "spec_version": None if plan.spec_version is None else int(plan.spec_version),
        "lean_steps": lean,
        "releases": [list(names) for names in plan.releases],
        "unit_models": [asdict(m) for m in writer.models],
        "read_only": writer.read_only,
    }
    return document, writer.arrays


def save_plan(plan: Plan, directory: Path, about: dict | None = None) -> bool:
    """Store ``plan`` as the entry ``directory`` (created; its parent too).

    ``about`` (JSON-able, e.g. :func:`key_fields`) is kept in the entry for people reading the
    cache. Returns False if an entry was already there (another writer's: ours is dropped).

    Raises
    ------
    PlanNotStorable
        If the plan holds a value that cannot be stored as data (nothing is written).
    """
    directory = Path(directory)
    document, arrays = encode_plan(plan)
    document["about"] = about or {}
    text = json.dumps(document, allow_nan=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = directory.parent / f".{directory.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    temporary.mkdir()
    try:
        np.savez(temporary / ARRAYS_FILE, **arrays)
        (temporary / PLAN_FILE).write_text(text)  # written last: its presence marks a whole entry
        try:
            os.replace(temporary, directory)
        except OSError:
            if directory.is_dir():
                return False  # a concurrent writer won the race
            raise
        return True
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# --- reading -------------------------------------------------------------------------------


class _Reader:
    def __init__(self, document: dict, arrays: dict[str, np.ndarray], models: UnitModels):
        self.arrays = arrays
        candidates = [m for m in (models.ane, models.fallback, models.cpu) if m is not None]
        self.models: list[UnitModel] = []
        for stored in document["unit_models"]:
            model = UnitModel(**{**stored, "accumulation": Accumulation(**stored["accumulation"])})
            match = next((m for m in candidates if m == model), None)
            if match is None:
                raise PlanStoreError(f"stored unit model {stored} is none of this execution's")
            self.models.append(match)

    def array(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise PlanStoreError(f"array {key!r} missing from {ARRAYS_FILE}")
        return self.arrays[key]

    def value(self, data: Any) -> Any:
        if data is None or isinstance(data, (bool, int, float, str)):
            return data
        if not isinstance(data, dict) or len(data) != 1:
            raise PlanStoreError(f"malformed value {data!r:.80}")
        (tag, content), = data.items()
        if tag == "array":
            return self.array(content)
        if tag == "scalar":
            return self.array(content)[()]
        if tag == "dtype":
            return _dtype(content)
        if tag == "list":
            return [self.value(v) for v in content]
        if tag == "tuple":
            return tuple(self.value(v) for v in content)
        if tag == "tensor_list":
            return TensorList(tuple(self.value(e) for e in content["elements"]), self.value(content["elem_shape"]),
                              _dtype(content["dtype"]), bool(content["dynamic_length"]))
        raise PlanStoreError(f"unknown value tag {tag!r}")

    def step(self, data: dict) -> Step:
        op_type = data["op_type"]
        if op_type not in KERNELS:
            raise PlanStoreError(f"no kernel for op type {op_type!r}")
        placement = None
        if data["placement"] is not None:
            p = data["placement"]
            placement = Placement(self.models[p["model"]], str(p["reason"]), int(p["macs"]))
        # An accumulator is the placement's model's (as compiled) or fp32: nothing else is read.
        spec = Accumulation(**data["accumulator"])
        known = [FP32_ACCUMULATION] + ([placement.model.accumulation] if placement is not None else [])
        spec = next((k for k in known if k == spec), None)
        if spec is None:
            raise PlanStoreError(f"step {data['name']!r}: accumulation {data['accumulator']} is not its unit's")
        var_kwargs: dict[str, str | list[str]] = {}
        for arg, names in data["var_kwargs"].items():
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                var_kwargs[arg] = list(names)
            elif isinstance(names, str):
                var_kwargs[arg] = names
            else:
                raise PlanStoreError(f"malformed var_kwargs of {data['name']!r}")
        return Step(
            op_type=op_type,
            name=str(data["name"]),
            fn=KERNELS[op_type],
            const_kwargs={k: self.value(v) for k, v in data["const_kwargs"].items()},
            var_kwargs=var_kwargs,
            outputs=[(str(name), _dtype(dtype)) for name, dtype in data["outputs"]],
            blocks={arg: self.block(b) for arg, b in data["blocks"].items()},
            placement=placement,
            accumulator=Accumulator(spec),
            coerce=tuple(str(a) for a in data["coerce"]),
            reuses=None if data["reuses"] is None else str(data["reuses"]),
        )

    def block(self, data: dict) -> Block:
        return Block(
            inputs=[(str(name), _dtype(dtype)) for name, dtype in data["inputs"]],
            steps=[self.step(s) for s in data["steps"]],
            outputs=[str(n) for n in data["outputs"]],
        )


def _dtype(text: Any) -> np.dtype:
    if not isinstance(text, str):
        raise PlanStoreError(f"malformed dtype {text!r}")
    dtype = np.dtype(text)
    if dtype.hasobject:
        raise PlanStoreError(f"object dtype {text!r}")
    return dtype


def _load_dim(dim: Any) -> Any:
    if isinstance(dim, int) and not isinstance(dim, bool):
        return dim
    if isinstance(dim, dict) and set(dim) == {"symbol"} and isinstance(dim["symbol"], str):
        return FlexibleDim(dim["symbol"])
    raise PlanStoreError(f"malformed input dimension {dim!r}")


def decode_plan(document: dict, arrays: dict[str, np.ndarray], models: UnitModels) -> Plan:
    """The :class:`Plan` that :func:`encode_plan` gave ``(document, arrays)`` for, placed on
    ``models``."""
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
        raise PlanStoreError(f"not a plan of format {PLAN_FORMAT}")
    from precision_sweep.emulator import ops  # noqa: F401  (registers the kernels)

    for key in document["read_only"]:
        arrays[key].setflags(write=False)
    about = document.get("about") or {}
    for name in ("compute_units", "device", "gpu_low_precision_accumulation"):
        if name in about and about[name] != getattr(models, name):
            raise PlanStoreError(f"entry compiled for {name}={about[name]!r}, not {getattr(models, name)!r}")
    reader = _Reader(document, arrays, models)
    steps = [reader.step(s) for s in document["steps"]]
    lean_steps = []
    for entry in document["lean_steps"]:
        if set(entry) == {"step"}:
            index = entry["step"]
            if not (type(index) is int and 0 <= index < len(steps)):
                raise PlanStoreError(f"lean step refers to step {index!r} of {len(steps)}")
            lean_steps.append(steps[index])
        else:
            lean_steps.append(reader.step(entry))
    releases = [[str(n) for n in names] for names in document["releases"]]
    if len(releases) != len(lean_steps):
        raise PlanStoreError("releases and lean steps differ in length")
    spec_version = document["spec_version"]
    return Plan(
        inputs={str(name): (tuple(_load_dim(d) for d in spec["shape"]), _dtype(spec["dtype"]))
                for name, spec in document["inputs"].items()},
        outputs=[str(n) for n in document["outputs"]],
        constants={str(name): reader.value(v) for name, v in document["constants"].items()},
        steps=steps,
        producers={str(name): (str(t), str(n)) for name, (t, n) in document["producers"].items()},
        spec_version=None if spec_version is None else int(spec_version),
        lean_steps=lean_steps,
        releases=releases,
    )


def load_plan(directory: Path, models: UnitModels) -> Plan:
    """The plan stored in the entry ``directory``, placed on ``models`` (see the module
    docstring).

    Raises
    ------
    PlanStoreError
        If the entry is missing, malformed, of another format, or was compiled for unit
        models other than ``models``.
    """
    directory = Path(directory)
    try:
        document = json.loads((directory / PLAN_FILE).read_text())
        if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
            raise PlanStoreError(f"{directory} is not a plan of format {PLAN_FORMAT}")
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        return decode_plan(document, arrays, models)
    except PlanStoreError:
        raise
    except Exception as exc:  # anything unreadable is a bad entry: the caller recompiles
        raise PlanStoreError(f"unreadable plan cache entry {directory}: {type(exc).__name__}: {exc}") from exc


# --- the cache -----------------------------------------------------------------------------


def discard(directory: Path) -> None:
    """Remove an entry (renamed away first, so no reader sees it half deleted)."""
    doomed = directory.parent / f".{directory.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.discard"
    try:
        os.replace(directory, doomed)
    except OSError:
        return  # already gone (or replaced by another process)
    shutil.rmtree(doomed, ignore_errors=True)


def cached_plan(path: Path, models: UnitModels, function_name: str, cache: Path,
                compile_plan: Callable[[], Plan]) -> Plan:
    """The plan of the package at ``path`` from ``cache``, or ``compile_plan()`` stored there.

    A rejected entry is discarded and recompiled; a plan that cannot be stored, or a cache
    that cannot be written, only costs the cache (logged).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no Core ML model at {path}")
    entry = Path(cache) / plan_key(path, models, function_name)
    if entry.is_dir():
        try:
            return load_plan(entry, models)
        except PlanStoreError as exc:
            log.warning("plan cache: %s; recompiling", exc)
            discard(entry)
    plan = compile_plan()
    try:
        save_plan(plan, entry, about={"package": str(path), **key_fields(models, function_name)})
    except (PlanNotStorable, OSError) as exc:
        log.warning("plan cache: not storing the plan of %s: %s", path, exc)
    return plan
