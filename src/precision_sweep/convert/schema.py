"""Config schemas of the ``precision`` and ``target`` groups.

A precision recipe is a ``compute_precision`` plus optional compression stages, each a typed
mirror of one coremltools config class, with coremltools' own field names so that the block
maps onto ``OptimizationConfig.from_dict({"global_config": ...})`` unchanged:

* ``fp32_ops``: ops kept in fp32 under fp16 compute (``ct.transform.FP16ComputePrecision``);
* ``weight_pruning``: ``OpMagnitudePrunerConfig`` (``cto.prune_weights``);
* ``weight_quantization``: ``OpLinearQuantizerConfig`` (``cto.linear_quantize_weights``);
* ``weight_palettization``: ``OpPalettizerConfig`` (``cto.palettize_weights``);
* ``activation_quantization``: ``OpLinearQuantizerConfig`` for
  ``cto.linear_quantize_activations``, calibrated with the emulator;
* ``per_op_weights``: one weight setting per op (``convert/per_op.py``), what the
  mixed-precision search exports;
* ``nn_weight_quantization``: the arguments of
  ``coremltools.models.neural_network.quantization_utils.quantize_weights`` (neuralnetwork
  targets only; the ML Program blocks above also map onto it there, see ``recipes``).

Enumerations make a mistyped mode, dtype or granularity fail at composition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Dict, List, Optional

from omegaconf import MISSING

from precision_sweep.config_checks import OneOf, Range, ranged

# Weights with fewer elements than a stage's weight_threshold stay uncompressed.
_THRESHOLD = Range(low=0, whole=True)


class ComputePrecision(StrEnum):
    float32 = "float32"
    float16 = "float16"


class QuantizationMode(StrEnum):
    linear = "linear"
    linear_symmetric = "linear_symmetric"


class QuantizationDtype(StrEnum):
    int8 = "int8"
    uint8 = "uint8"
    int4 = "int4"
    uint4 = "uint4"


class QuantizationGranularity(StrEnum):
    per_tensor = "per_tensor"
    per_channel = "per_channel"
    per_block = "per_block"


class PalettizationMode(StrEnum):
    kmeans = "kmeans"
    uniform = "uniform"


class NNQuantizationMode(StrEnum):
    # quantization_mode of coremltools.models.neural_network.quantization_utils.quantize_weights
    linear = "linear"                      # per output channel, scale and bias (1-8 bits)
    linear_symmetric = "linear_symmetric"  # per output channel, symmetric range (8 bits only)
    linear_lut = "linear_lut"              # one evenly spaced look-up table per weight (1-8 bits)
    kmeans_lut = "kmeans_lut"              # one k-means look-up table per weight (1-8 bits)


class PalettizationGranularity(StrEnum):
    per_tensor = "per_tensor"
    per_grouped_channel = "per_grouped_channel"


# Reductions whose fp16 accumulation is the usual source of error (sums over many elements).
REDUCTIONS = [
    "reduce_sum", "reduce_mean", "reduce_prod", "reduce_sum_square", "reduce_l1_norm",
    "reduce_l2_norm", "reduce_log_sum", "reduce_log_sum_exp",
]


@dataclass
class Fp32OpsConfig:
    """Ops kept in fp32 under fp16 compute: ``FP16ComputePrecision(op_selector=...)``."""

    # MIL op types (e.g. softmax, layer_norm, reduce_mean) that stay fp32.
    op_types: List[str] = field(default_factory=lambda: ["softmax", "layer_norm", *REDUCTIONS])
    # Op names that stay fp32: as in the saved program (a "_cast_fp16" suffix is ignored) or
    # the TF node names the frontend gives them.
    op_names: List[str] = field(default_factory=list)


@dataclass
class WeightQuantizationConfig:
    # Fields of coremltools.optimize.coreml.OpLinearQuantizerConfig
    mode: QuantizationMode = QuantizationMode.linear_symmetric
    dtype: QuantizationDtype = QuantizationDtype.int8
    granularity: QuantizationGranularity = QuantizationGranularity.per_channel
    # Elements per block along the input-channel axis (granularity=per_block only, iOS18).
    block_size: int = ranged(32, Range(low=1, whole=True))
    # Weights with fewer elements than this stay uncompressed (biases, tiny kernels).
    weight_threshold: int = ranged(128, _THRESHOLD)


@dataclass
class WeightPalettizationConfig:
    # Fields of coremltools.optimize.coreml.OpPalettizerConfig
    nbits: int = ranged(4, OneOf((1, 2, 3, 4, 6, 8), hint="coremltools palettizes to 1, 2, 3 (iOS18), 4, 6 or 8 bits, e.g. precision.weight_palettization.nbits=4."))
    mode: PalettizationMode = PalettizationMode.kmeans
    # per_grouped_channel: one LUT per group of output channels (iOS18)
    granularity: PalettizationGranularity = PalettizationGranularity.per_tensor
    group_size: int = ranged(16, Range(low=1, whole=True))
    weight_threshold: int = ranged(128, _THRESHOLD)


@dataclass
class WeightPruningConfig:
    # Fields of coremltools.optimize.coreml.OpMagnitudePrunerConfig
    target_sparsity: float = ranged(0.5, Range(low=0, high=1, high_open=True))
    weight_threshold: int = ranged(128, _THRESHOLD)


@dataclass
class ActivationQuantizationConfig:
    # Fields of the OpLinearQuantizerConfig given to cto.linear_quantize_activations
    mode: QuantizationMode = QuantizationMode.linear_symmetric
    dtype: QuantizationDtype = QuantizationDtype.int8
    # Samples of the calibration split (dataset.x_calib, else the first of x_train) whose
    # activation ranges set the quantization scales.
    calibration_samples: int = ranged(64, Range(low=1, whole=True))


@dataclass
class NNWeightQuantizationConfig:
    # Arguments of coremltools' quantize_weights(model, nbits, quantization_mode) for
    # neuralnetwork models (targets iOS13/iOS14, macOS10_15/macOS11).
    nbits: int = ranged(8, OneOf((1, 2, 3, 4, 5, 6, 7, 8, 16), hint="quantize_weights stores 1 to 8 bits (or 16: fp16 weights), e.g. precision.nn_weight_quantization.nbits=4."))
    quantization_mode: NNQuantizationMode = NNQuantizationMode.linear
    # Weights with fewer elements than this stay uncompressed (a QuantizedLayerSelector).
    weight_threshold: int = ranged(128, _THRESHOLD)


@dataclass
class PerOpWeightsConfig:
    # op name (as the fp16 ML program names the op reading the weight) -> setting label:
    # fp16, int8, int4_block<B>, pal<K>, sparse<P> (precision_sweep.convert.per_op). Ops not
    # named keep fp16 weights.
    ops: Dict[str, str] = field(default_factory=dict)
    # Weights with fewer elements than this stay uncompressed (biases, tiny kernels).
    weight_threshold: int = ranged(128, _THRESHOLD)


class SearchSelection(StrEnum):
    # On the search split a point passes when its delta's lower bound at 1 - alpha/m (alpha: the
    # pick's one-sided level, m: the points the search may choose among), lowered further by the
    # held-out CI's half width under pick.rule=confident, is within the budget: choosing the
    # smallest of many passing points favours the ones that were lucky there.
    simultaneous = "simultaneous"
    # On the search split a point passes as the pick judges one run (pick.rule): no margin for
    # the choice among many.
    rule = "rule"


class SearchSampler(StrEnum):
    tpe = "tpe"      # Optuna TPE on one objective: the size, a point over budget penalised
    nsga2 = "nsga2"  # Optuna NSGA-II on two: size and accuracy delta (the front)


@dataclass
class SearchConfig:
    # The mixed-precision search (precision=search, precision_sweep.search): per-op weight
    # settings chosen under the pick budget (pick.max_drop, pick.rule).
    # Settings every weight-bearing op may take (labels of precision_sweep.convert.per_op).
    choices: List[str] = field(default_factory=lambda: ["fp16", "int8", "pal8", "pal6", "pal4", "pal2"])
    # Settings for named layers (a Keras layer or a program op name), replacing `choices` there.
    layers: Dict[str, List[str]] = field(default_factory=dict)
    # Optuna trials after the sensitivity pass and the greedy fill (0: the greedy fill alone).
    max_trials: int = ranged(24, Range(low=0, whole=True))
    # End the search with the best point so far after this many minutes.
    timeout_minutes: Optional[float] = ranged(None, Range(low=0, low_open=True, null="for no limit"))
    sampler: SearchSampler = SearchSampler.tpe
    # How a point is judged on the search split (the held-out split is always judged by pick.rule).
    selection: SearchSelection = SearchSelection.simultaneous
    seed: int = 0
    # Share of the test split the search selects on; the rest is held out, never seen by the
    # search, and judges the budget of the chosen point.
    search_fraction: float = ranged(0.5, Range(low=0, high=1, low_open=True, high_open=True))
    # Weights with fewer elements than this stay uncompressed (biases, tiny kernels).
    weight_threshold: int = ranged(128, _THRESHOLD)
    # Where the front's recipes are written (precision/search_<run>_<k>.yaml); null: the job's
    # output folder.
    export_dir: Optional[str] = None


@dataclass
class AutoRepairConfig:
    # The auto_repair block of fp16_auto and int8_auto (precision_sweep.repair runs it).
    # The budget that must hold on the calibration split: accuracy at most this many pp below
    # the FP32 TensorFlow model, and at least this top-1 agreement with it.
    max_drop: float = ranged(1.0, Range(low=0))
    min_agreement: float = ranged(0.99, Range(low=0, high=1))
    # Calibration samples (dataset.x_calib when the dataset has one, else the first of x_train).
    calib_samples: int = ranged(512, Range(low=1, whole=True))
    # Samples of the calibration split the per-op drift ranking runs on.
    diagnostic_samples: int = ranged(64, Range(low=1, whole=True))
    # Ops kept at higher precision per round, most sensitive first.
    widen: int = ranged(1, Range(low=1, whole=True))
    # Stop (budget not met, tag repair_budget_met=false) after this many rounds or once this
    # fraction of the ops is kept.
    max_rounds: int = ranged(16, Range(low=1, whole=True))
    max_kept_fraction: float = ranged(0.5, Range(low=0, high=1, low_open=True))


@dataclass
class PrecisionConfig:
    name: str = MISSING
    # coremltools compute_precision: float32 or float16
    compute_precision: ComputePrecision = ComputePrecision.float16
    # Under float16 compute, ops kept in fp32 (fp16_mixed).
    fp32_ops: Optional[Fp32OpsConfig] = None
    # Compression stages, applied in this order: activation quantization (calibrated on the
    # float program, as coremltools recommends), pruning, then weight quantization or
    # palettization (joint compression when combined with pruning, iOS18).
    weight_pruning: Optional[WeightPruningConfig] = None
    weight_quantization: Optional[WeightQuantizationConfig] = None
    # Automatic mixed-precision repair (fp16_auto, int8_auto): see precision_sweep.repair.
    auto_repair: Optional[AutoRepairConfig] = None
    weight_palettization: Optional[WeightPalettizationConfig] = None
    activation_quantization: Optional[ActivationQuantizationConfig] = None
    # neuralnetwork-only weight quantization (quantize_weights): nn_lut_linear
    nn_weight_quantization: Optional[NNWeightQuantizationConfig] = None
    # One weight setting per op (a recipe the mixed-precision search exports).
    per_op_weights: Optional[PerOpWeightsConfig] = None
    # The mixed-precision search (precision=search).
    search: Optional[SearchConfig] = None


@dataclass
class TargetConfig:
    name: str = MISSING
    # Attribute of coremltools.target, e.g. iOS16 or macOS13.
    coremltools_target: str = MISSING
