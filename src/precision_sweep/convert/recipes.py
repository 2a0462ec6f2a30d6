"""Precision recipes mapped onto coremltools' own API.

``compute_precision`` goes to ``ct.convert`` (``ct.precision.FLOAT32``/``FLOAT16``, or
``ct.transform.FP16ComputePrecision(op_selector=...)`` when ops stay fp32). Compression goes
through ``coremltools.optimize.coreml``: each config block becomes
``OptimizationConfig.from_dict({"config_type": ..., "global_config": <the block>})``.

At neuralnetwork targets (iOS13/iOS14) there is no compute precision to choose (the device
computes in fp32 on the CPU, fp16 on the GPU and the Neural Engine) and no
``coremltools.optimize.coreml``: a recipe becomes stages of
``coremltools.models.neural_network.quantization_utils.quantize_weights`` on the FP32 model
(:func:`nn_weight_stages`). ``validity`` says which recipes have no such mapping.
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
                precision.activation_quantization, precision.get("per_op_weights")))


def compress_weights(mlmodel, precision, calibration=None, keep_float: tuple[str, ...] = ()):
    """Apply the recipe's compression stages to a converted float MLModel.

    Order: activation quantization (calibrated on the float program), pruning, then weight
    quantization or palettization, jointly with the pruning when both are set (iOS18). The
    weights of the ops named in ``keep_float`` stay as they are (pruning and quantization).
    A ``per_op_weights`` recipe gives each named op its own setting instead
    (:func:`~precision_sweep.convert.per_op.compress_per_op`).
    """
    import coremltools.optimize.coreml as cto

    per_op = precision.get("per_op_weights")
    if per_op:
        if precision.weight_pruning or precision.weight_quantization or precision.weight_palettization:
            raise ValueError(f"{precision.name}: per_op_weights replaces the uniform weight compression stages; set one or the other")
        from precision_sweep.convert.per_op import compress_per_op

        return compress_per_op(mlmodel, dict(per_op.ops), int(per_op.weight_threshold))
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


@dataclass(frozen=True)
class NNStage:
    """One ``quantize_weights(model, nbits, quantization_mode, selector=...)`` call on a
    neuralnetwork model; weights with fewer than ``weight_threshold`` elements are left as they are."""

    nbits: int
    mode: str
    weight_threshold: int = 0


def nn_weight_stages(precision) -> tuple[NNStage, ...]:
    """The ``quantize_weights`` stages of a recipe at a neuralnetwork target, in order.

    ``fp32`` is no stage (the FP32 model); ``compute_precision=float16`` ends with fp16 weights
    for every weight still in fp32 (``nbits=16``), so ``fp16`` is fp16 weights, and ``int8`` is
    8-bit weights with the small ones (biases) in fp16, as at ML Program targets. ``int8``
    (``linear_symmetric``) maps to 8-bit ``linear_symmetric``, other linear dtypes to ``linear``
    at their width; ``palettize`` to a ``kmeans_lut`` (``mode=kmeans``) or ``linear_lut``
    (``mode=uniform``) of ``nbits``; ``nn_weight_quantization`` is passed as it is. Recipes that
    :func:`~precision_sweep.convert.validity.invalid_reason` refuses at neuralnetwork targets
    raise ValueError.
    """
    stages: list[NNStage] = []
    unmapped = [name for name in ("fp32_ops", "weight_pruning", "activation_quantization", "auto_repair", "per_op_weights")
                if precision.get(name)]
    if unmapped:
        raise ValueError(f"{precision.name}: {', '.join(unmapped)} has no neuralnetwork form")
    wq = precision.weight_quantization
    palettization = precision.weight_palettization
    nn = precision.get("nn_weight_quantization")
    if sum(map(bool, (wq, palettization, nn))) > 1:
        raise ValueError(f"{precision.name}: more than one weight compression for a neuralnetwork model")
    if wq:
        nbits = 4 if str(wq.dtype) in ("int4", "uint4") else 8
        symmetric = str(wq.mode) == "linear_symmetric"
        if str(wq.granularity) != "per_channel" or (symmetric and nbits != 8):
            raise ValueError(f"{precision.name}: {wq.granularity} {wq.mode} {wq.dtype} has no neuralnetwork form")
        stages.append(NNStage(nbits, "linear_symmetric" if symmetric else "linear", int(wq.weight_threshold)))
    if palettization:
        if str(palettization.granularity) != "per_tensor":
            raise ValueError(f"{precision.name}: {palettization.granularity} palettization has no neuralnetwork form")
        mode = "kmeans_lut" if str(palettization.mode) == "kmeans" else "linear_lut"
        stages.append(NNStage(int(palettization.nbits), mode, int(palettization.weight_threshold)))
    if nn:
        stages.append(NNStage(int(nn.nbits), str(nn.quantization_mode), int(nn.weight_threshold)))
    if str(precision.compute_precision) == "float16" and not (stages and stages[-1].nbits == 16):
        stages.append(NNStage(16, "linear"))
    return tuple(stages)


def _weight_count(layer, weight_param: str | None) -> int:
    """Elements of the weight ``quantize_weights`` is about to quantize in ``layer``: its
    ``bias`` when asked for it, else the largest of its WeightParams."""
    params = getattr(layer, layer.WhichOneof("layer"))
    counts = {field.name: len(value.floatValue) for field, value in params.ListFields()
              if field.message_type is not None and field.message_type.name == "WeightParams"}
    if weight_param is not None and weight_param in counts:
        return counts[weight_param]
    return max(counts.values(), default=0)


def nn_quantize(mlmodel, stages: tuple[NNStage, ...]):
    """``mlmodel`` (a neuralnetwork MLModel) through each stage's ``quantize_weights``."""
    import contextlib
    import io

    from coremltools.models.neural_network import quantization_utils

    class ThresholdSelector(quantization_utils.QuantizedLayerSelector):
        """coremltools' layer selector with the recipe's ``weight_threshold``."""

        def __init__(self, threshold: int):
            super().__init__()
            self.threshold = threshold

        def do_quantize(self, layer, weight_param=None, **kwargs):
            if not super().do_quantize(layer, **kwargs):
                return False
            return _weight_count(layer, weight_param) >= self.threshold

    def kmeans_lut(nbits, weight):
        """coremltools' own k-means table, flattened: its ``(2**nbits, 1)`` table fails to go
        into the protobuf's float list under protobuf 7 (coremltools 9.0, mode kmeans_lut)."""
        lut, indices = quantization_utils._get_kmeans_lookup_table_and_weight(nbits, weight)
        return lut.reshape(-1), indices

    for stage in stages:
        extra = {"lut_function": kmeans_lut} if stage.mode == "kmeans_lut" else {}
        mode = "custom_lut" if extra else stage.mode
        # quantize_weights prints a line per layer: keep the job's log readable
        with contextlib.redirect_stdout(io.StringIO()):
            mlmodel = quantization_utils.quantize_weights(
                mlmodel, stage.nbits, quantization_mode=mode, selector=ThresholdSelector(stage.weight_threshold), **extra
            )
    return mlmodel
