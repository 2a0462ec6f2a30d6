"""Activation quantization (W8A8) calibrated with the emulator instead of Core ML.

``coremltools.optimize.coreml.linear_quantize_activations`` collects activation ranges by
running the model with Core ML (``ModelDebugger`` appends every intermediate tensor to the
outputs and calls ``MLModel.predict``), which only exists on macOS. Here only that collection
is replaced: the emulator runs the float program once over the calibration split with
``capture=True`` and every intermediate's min/max is recorded under the same names and rules
(const outputs and model outputs excluded, non-numeric dtypes excluded, model inputs from the
raw calibration data, concat inputs/outputs merged by coremltools' own helper). The
quantize/dequantize insertion is coremltools' own passes, in the same order and at the same
spec version as ``linear_quantize_activations``, so the program is the one coremltools builds
on a Mac from the same statistics.

Two deliberate differences: coremltools 9.0's ``ModelDebugger.record_intermediate_output``
overwrites the range with each sample's before comparing, so on a Mac the ranges are those of
the *last* calibration sample. We take the min/max over the whole calibration split, which is
what its docstring describes. And a tensor whose values all lie within +-``MIN_RANGE`` (dead or
vanishing activations, common in untrained networks) gets the range +-``MIN_RANGE``: with a
smaller one the int8 scale rounds to 0 in fp16 and coremltools' ``quantize`` op refuses the
model ("scale cannot be 0"). Any such tensor quantizes to (almost) all zeros either way.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from precision_sweep.errors import UserInputError
from precision_sweep.samples import NamedSamples, feeds_of

# Smallest activation range kept: its int8 scale (range / 255 at worst) is 2**-23, twice the
# smallest fp16 subnormal, so it survives the cast to fp16.
MIN_RANGE = 255 * 2.0**-23

# Dtypes Core ML can return as model outputs (ModelDebugger skips the others, e.g. bool).
_RECORDED_DTYPES = (np.float16, np.float32, np.float64, np.int32)


def calibration_data(dataset, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The calibration split: ``dataset.x_calib``/``y_calib`` when the dataset has one, else the
    first ``samples`` of the train split (never the test split). Every calibrated step uses it:
    activation quantization, the repair's budget, the cliff scanner."""
    y = getattr(dataset, "y_calib", None)
    if getattr(dataset, "feed", None) is not None:  # an image input takes the calibration pixels
        if y is None or len(y) == 0:
            raise UserInputError(
                f"dataset={dataset.name} has no calibration samples, which this job needs with "
                "model.input_type=image. Set dataset.test_size below 1 and dataset.calib_size above 0."
            )
        return np.asarray(dataset.program_inputs("calib")[:samples]), np.asarray(y[:samples])
    x = getattr(dataset, "x_calib", None)
    if x is None or y is None or len(x) == 0:
        x, y = dataset.x_train, dataset.y_train
    if isinstance(x, NamedSamples):  # several inputs: each keeps its dtype (token ids stay int32)
        return x[:samples], np.asarray(y[:samples])
    return np.asarray(x[:samples]), np.asarray(y[:samples])


def calibration_split(dataset, precision) -> np.ndarray | None:
    """The calibration inputs a recipe needs (its ``calibration_samples`` of the calibration
    split, :func:`calibration_data`), or None when the recipe calibrates nothing."""
    aq = precision.activation_quantization
    if not aq:
        return None
    x, _ = calibration_data(dataset, int(aq.calibration_samples))
    return x if isinstance(x, NamedSamples) else np.asarray(x, dtype=np.float32)


def _update(stats: dict, name: str, value: np.ndarray) -> None:
    low, high = float(np.min(value)), float(np.max(value))
    entry = stats[name]
    entry["rmin"] = min(low, entry.get("rmin", low))
    entry["rmax"] = max(high, entry.get("rmax", high))


def activation_stats(mlmodel, samples: np.ndarray, batch_size: int = 32) -> dict:
    """Ranges of every intermediate tensor of ``mlmodel`` over ``samples``, keyed by MIL name.

    Same layout as coremltools' ``_get_activation_calibration_stats``:
    ``{name: {"rmin": float, "rmax": float}}``. Runs the emulator with the ``cpu_only``
    numerics profile (coremltools calibrates with ``ComputeUnit.CPU_ONLY``).
    """
    from coremltools.optimize._utils import _adjust_concat_surrounding_activation_stats

    from precision_sweep.emulator import Emulator

    emulator = Emulator(mlmodel, compute_units="cpu_only")
    input_names = set(emulator.input_names)
    outputs = set(emulator.output_names)
    stats: dict = defaultdict(dict)
    for name, value in feeds_of(samples, emulator.input_names[0]).items():
        if np.issubdtype(np.asarray(value).dtype, np.floating):  # token ids and masks are not quantized
            _update(stats, name, value)
    batch_size = emulator.fixed_batch or batch_size
    for start in range(0, len(samples), batch_size):
        _, captured = emulator.predict(feeds_of(samples[start : start + batch_size], emulator.input_names[0]), capture=True)
        for name, (op_type, value) in captured.items():
            if op_type == "const" or name in outputs or name in input_names or "@" in name:
                continue  # "@": a value inside a loop/cond body (one per iteration), not an output Core ML records
            value = np.asarray(value)
            if value.dtype.type not in _RECORDED_DTYPES or value.size == 0:
                continue
            _update(stats, name, value)
    _adjust_concat_surrounding_activation_stats(_concat_groups(mlmodel), stats)
    for entry in stats.values():
        if max(abs(entry["rmin"]), abs(entry["rmax"])) < MIN_RANGE:
            entry["rmin"], entry["rmax"] = min(entry["rmin"], -MIN_RANGE), max(entry["rmax"], MIN_RANGE)
    return stats


def _integer_operand_ops(mlmodel, op_types) -> list[str]:
    """Names of the ``op_types`` ops whose ``x`` or ``y`` is an integer tensor (a padding
    mask's arithmetic, an index): activation quantization is for float activations."""
    from coremltools.proto import MIL_pb2

    spec = mlmodel.get_spec()
    floats = {MIL_pb2.DataType.Value(name) for name in ("FLOAT16", "FLOAT32", "FLOAT64", "BFLOAT16")}
    names = []
    for function in spec.mlProgram.functions.values():
        dtypes = {value.name: value.type.tensorType.dataType for value in function.inputs}
        for block in function.block_specializations.values():
            for op in block.operations:
                for out in op.outputs:
                    dtypes[out.name] = out.type.tensorType.dataType
                if op.type not in op_types:
                    continue
                operands = [arg.name for key in ("x", "y") if key in op.inputs for arg in op.inputs[key].arguments if arg.name]
                if any(name in dtypes and dtypes[name] not in floats for name in operands):
                    names.append(op.attributes["name"].immediateValue.tensor.strings.values[0])
    return names


def _concat_groups(mlmodel) -> list[list[str]]:
    """Input and output names of every concat op (ModelDebugger._get_concat_op_info)."""
    spec = mlmodel.get_spec()
    groups = []
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type == "concat":
                    names = [arg.name for arg in op.inputs["values"].arguments if arg.name]
                    groups.append(names + [out.name for out in op.outputs])
    return groups


def quantize_activations(mlmodel, config, samples: np.ndarray):
    """``linear_quantize_activations(mlmodel, config, samples)`` with emulator statistics.

    Parameters
    ----------
    mlmodel
        A float ``MLModel`` (mlprogram).
    config
        A ``coremltools.optimize.coreml.OptimizationConfig`` of ``OpLinearQuantizerConfig``.
    samples
        Calibration inputs (N, ...) of the model's input, or NamedSamples of its several inputs.
    """
    from coremltools import _SPECIFICATION_VERSION_IOS_17
    from coremltools.converters.mil.frontend.milproto import load as milproto_to_pymil
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models import utils as model_utils

    if samples is None or len(samples) == 0:
        raise ValueError("activation quantization needs calibration samples")
    stats = activation_stats(mlmodel, samples)
    prefix = PASS_REGISTRY["compression::insert_prefix_quantize_dequantize_pair"]
    for name in _integer_operand_ops(mlmodel, prefix.SUPPORTED_OP_TYPES):
        config.set_op_name(name, None)  # coremltools would quantize an int32 operand (a mask, an index) and fail
    prefix.set_options([PassOption("config", config)])
    prefix.set_options([PassOption("activation_stats", stats)])
    suffix = PASS_REGISTRY["compression::insert_suffix_quantize_dequantize_pair"]
    suffix.set_options([PassOption("config", config)])
    suffix.set_options([PassOption("activation_stats", stats)])
    passes = [prefix, suffix, PASS_REGISTRY["common::dequantize_quantize_pair_elimination"]]
    return model_utils._apply_graph_pass(
        mlmodel,
        passes,
        spec_version=_SPECIFICATION_VERSION_IOS_17,
        pymil_load_func=milproto_to_pymil.load,
        skip_model_load=True,
    )
