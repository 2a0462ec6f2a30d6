"""Config schemas: dataclasses registered in Hydra's ConfigStore.

The primary config (``conf/config.yaml``) starts from ``base_config``, so every group option
is merged into a typed node and a mistyped key fails at composition, before any job runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class PathsConfig:
    root: str = "${cwd:}"
    outputs: str = "${paths.root}/outputs"
    cache: str = "${paths.outputs}/cache"


@dataclass
class ModelConfig:
    name: str = MISSING
    # builtin: trained at first use by precision_sweep.data.builtin_models (``builder`` names it)
    source: str = MISSING
    builder: Optional[str] = None
    path: Optional[str] = None
    # training of builtin models
    epochs: int = 30
    seed: int = 0
    # What the model outputs: "probabilities" (softmax) or "logits".
    outputs_are: str = "probabilities"
    # Largest batch the converted program accepts (its flexible batch dimension's upper bound).
    max_batch: int = 1024
    safe_mode: bool = True


@dataclass
class DatasetConfig:
    name: str = MISSING
    source: str = MISSING
    test_size: float = 0.25
    seed: int = 0
    # Pixel values are multiplied by this scale after loading.
    scale: float = 1.0
    limit: Optional[int] = None


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


@dataclass
class TargetConfig:
    name: str = MISSING
    # Attribute of coremltools.target, e.g. iOS16 or macOS13.
    coremltools_target: str = MISSING


@dataclass
class ComputeUnitsConfig:
    name: str = MISSING
    # Member of coremltools.ComputeUnit used by the real Core ML runtime.
    coreml: str = MISSING


@dataclass
class RuntimeConfig:
    # auto: Core ML on macOS when it loads, else the emulator; or force "emulator" / "coreml".
    name: str = "auto"
    batch_size: int = 256
    progress: bool = True


@dataclass
class TrackingConfig:
    name: str = MISSING
    # Tracking URI; a sqlite:/// or file path is made absolute once, in the launching process.
    uri: str = MISSING
    experiment: str = "precision-sweep"
    # Where artifacts of a newly created experiment go (absolute path or URI).
    artifact_location: str = "${paths.outputs}/mlartifacts"


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    precision: PrecisionConfig = MISSING
    target: TargetConfig = MISSING
    compute_units: ComputeUnitsConfig = MISSING
    runtime: RuntimeConfig = MISSING
    tracking: TrackingConfig = MISSING
    seed: int = 0


def register_configs() -> None:
    """Register the schemas and the ``cwd`` resolver (idempotent)."""
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


def to_container(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


register_configs()
