"""Config schemas of the ``precision`` and ``target`` groups."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

from omegaconf import MISSING

from precision_sweep.repair.schema import AutoRepairConfig


@dataclass
class WeightQuantizationConfig:
    # Fields of coremltools.optimize.coreml.OpLinearQuantizerConfig
    mode: str = "linear_symmetric"
    dtype: str = "int8"
    granularity: str = "per_channel"
    block_size: int = 32
    # Weights with fewer elements than this stay uncompressed (biases, tiny kernels).
    weight_threshold: int = 128


class ComputePrecision(str, Enum):
    float32 = "float32"
    float16 = "float16"


@dataclass
class PrecisionConfig:
    name: str = MISSING
    # coremltools compute_precision: float32 or float16
    compute_precision: ComputePrecision = ComputePrecision.float16
    weight_quantization: Optional[WeightQuantizationConfig] = None
    # Automatic mixed-precision repair (fp16_auto, int8_auto): see precision_sweep.repair.
    auto_repair: Optional[AutoRepairConfig] = None


@dataclass
class TargetConfig:
    name: str = MISSING
    # Attribute of coremltools.target, e.g. iOS16 or macOS13.
    coremltools_target: str = MISSING
