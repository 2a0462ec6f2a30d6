"""Precision recipes mapped onto coremltools' own API.

``compute_precision`` goes to ``ct.convert`` (``ct.precision.FLOAT32``/``FLOAT16``, or
``ct.transform.FP16ComputePrecision(op_selector=...)`` when ops stay fp32). Compression goes
through ``coremltools.optimize.coreml``: each config block becomes
``OptimizationConfig.from_dict({"config_type": ..., "global_config": <the block>})``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from precision_sweep.hashing import hash_config


def _plain(node: DictConfig) -> dict:
    """A (typed) config node as plain data, enums as their strings."""
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def _program_name(name: str) -> str:
    """An op name as the saved program spells it, minus the fp16 pass's suffix.

    The fp16 pass sees frontend names (TF node names such as ``model/dense_1/BiasAdd``); the
    saved program has them sanitized (``model_dense_1_BiasAdd``) with ``_cast_fp16`` appended
    to ops it cast. Either spelling in ``fp32_ops.op_names`` selects the op.
    """
    return re.sub(r"[^A-Za-z0-9_]", "_", name).removesuffix("_cast_fp16")


@dataclass(frozen=True)
class ComputeSpec:
    """What ``ct.convert`` needs from a recipe: the compute precision and the fp32 ops."""

    precision: str  # "float32" or "float16"
    fp32_op_types: tuple[str, ...] = ()
    fp32_op_names: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        if not (self.fp32_op_types or self.fp32_op_names):
            return self.precision
        return f"{self.precision}-mixed-{hash_config([sorted(self.fp32_op_types), sorted(self.fp32_op_names)])}"

    def coremltools_value(self):
        """The ``compute_precision`` argument of ``ct.convert``."""
        import coremltools as ct

        if self.precision == "float32":
            return ct.precision.FLOAT32
        if not (self.fp32_op_types or self.fp32_op_names):
            return ct.precision.FLOAT16
        op_types = frozenset(self.fp32_op_types)
        op_names = frozenset(_program_name(name) for name in self.fp32_op_names)
        return ct.transform.FP16ComputePrecision(
            op_selector=lambda op: op.op_type not in op_types and _program_name(op.name) not in op_names
        )

    def frontend_value(self):
        """The frontend only uses the compute precision to choose fp16 or fp32 I/O, which is
        the same for FLOAT16 and FP16ComputePrecision: both share one frontend program."""
        import coremltools as ct

        return ct.precision.FLOAT32 if self.precision == "float32" else ct.precision.FLOAT16


FLOAT32 = ComputeSpec("float32")


def compute_spec(precision) -> ComputeSpec:
    value = str(precision.compute_precision)
    if value not in ("float32", "float16"):
        raise ValueError(f"precision.compute_precision must be float32 or float16, got {value!r}")
    fp32_ops = precision.fp32_ops
    if fp32_ops and value == "float16":
        return ComputeSpec(value, tuple(fp32_ops.op_types or ()), tuple(fp32_ops.op_names or ()))
    return ComputeSpec(value)


def compute_precision(precision):
    """The ``compute_precision`` argument of ``ct.convert`` for a recipe."""
    return compute_spec(precision).coremltools_value()


def optimization_config(config_type: str, block, drop: tuple[str, ...] = (), keep_float: tuple[str, ...] = ()):
    """``OptimizationConfig`` of one recipe block (the global config), with the ops named in
    ``keep_float`` left uncompressed (an ``op_name_configs`` entry of None each)."""
    import coremltools.optimize.coreml as cto

    params = {k: v for k, v in _plain(block).items() if k not in drop}
    config = cto.OptimizationConfig.from_dict({"config_type": config_type, "global_config": params})
    if keep_float:
        config = cto.OptimizationConfig(global_config=config.global_config, op_name_configs={n: None for n in keep_float})
    return config


def recipe_block(precision) -> dict:
    """The recipe's settings as plain data (a cache key: every field that changes the package)."""
    return _plain(precision)


def is_compressed(precision) -> bool:
    return any((precision.weight_pruning, precision.weight_quantization, precision.weight_palettization,
                precision.activation_quantization))


def compress_weights(mlmodel, precision, calibration=None, keep_float: tuple[str, ...] = ()):
    """Apply the recipe's compression stages to a converted float MLModel.

    Order: activation quantization (calibrated on the float program), pruning, then weight
    quantization or palettization, jointly with the pruning when both are set (iOS18). The
    weights of the ops named in ``keep_float`` stay as they are (pruning and quantization).
    """
    import coremltools.optimize.coreml as cto

    aq = precision.activation_quantization
    if aq:
        from precision_sweep.convert.calibration import quantize_activations

        config = optimization_config("OpLinearQuantizerConfig", aq, drop=("calibration_samples",))
        mlmodel = quantize_activations(mlmodel, config, calibration)
    pruning = precision.weight_pruning
    if pruning:
        mlmodel = cto.prune_weights(mlmodel, optimization_config("OpMagnitudePrunerConfig", pruning, keep_float=keep_float))
    joint = bool(pruning)
    wq = precision.weight_quantization
    if wq:
        per_block = wq.granularity == "per_block"
        config = optimization_config("OpLinearQuantizerConfig", wq, drop=() if per_block else ("block_size",), keep_float=keep_float)
        mlmodel = cto.linear_quantize_weights(mlmodel, config, joint_compression=joint)
    palettization = precision.weight_palettization
    if palettization:
        grouped = palettization.granularity == "per_grouped_channel"
        config = optimization_config("OpPalettizerConfig", palettization, drop=() if grouped else ("group_size",),
                                     keep_float=keep_float)
        mlmodel = cto.palettize_weights(mlmodel, config, joint_compression=joint)
    return mlmodel
