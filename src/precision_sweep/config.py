"""The primary config schema, assembled from each stage's group schemas, in Hydra's ConfigStore.

The primary config (``conf/config.yaml``) starts from ``base_config``, so every group option
is merged into a typed node and a mistyped key fails at composition, before any job runs.
Each stage owns the schema of its groups (``data/schema.py``, ``convert/schema.py``,
``runtime/schema.py``, ``tracking/schema.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from precision_sweep.config_checks import Range, ranged

from precision_sweep.convert.schema import PrecisionConfig, TargetConfig
from precision_sweep.data.schema import DatasetConfig, ModelConfig
from precision_sweep.diagnose.schema import DiagnosisConfig
from precision_sweep.metrics.schema import TaskConfig
from precision_sweep.pick.schema import PickConfig
from precision_sweep.runtime.schema import ComputeUnitsConfig, DeviceConfig, RuntimeConfig
from precision_sweep.tracking.schema import TrackingConfig


@dataclass
class PathsConfig:
    root: str = "${cwd:}"
    outputs: str = "${paths.root}/outputs"
    cache: str = "${paths.outputs}/cache"


@dataclass
class LimitsConfig:
    # A job past either limit fails alone (FAILED run), the sweep goes on. null = no limit.
    timeout_minutes: Optional[float] = ranged(None, Range(low=0, low_open=True, null="for no limit", hint="Give the limit in minutes, for example limits.timeout_minutes=30."))
    max_memory_gb: Optional[float] = ranged(None, Range(low=0, low_open=True, null="for no limit", hint="Give the limit in GiB, for example limits.max_memory_gb=8."))


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    task: TaskConfig = MISSING
    precision: PrecisionConfig = MISSING
    target: TargetConfig = MISSING
    compute_units: ComputeUnitsConfig = MISSING
    device: DeviceConfig = MISSING
    runtime: RuntimeConfig = MISSING
    tracking: TrackingConfig = MISSING
    diagnosis: DiagnosisConfig = field(default_factory=DiagnosisConfig)
    pick: PickConfig = field(default_factory=PickConfig)
    seed: int = ranged(0, Range(low=0, high=2**32 - 1, whole=True))
    # Reuse FINISHED runs with the same job fingerprint instead of measuring again.
    resume: bool = False
    # Overall progress bar of a multirun in the launching terminal.
    progress: bool = True
    limits: LimitsConfig = field(default_factory=LimitsConfig)


def register_configs() -> None:
    """Register the schemas and the ``cwd`` resolver (idempotent)."""
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd)
    ConfigStore.instance().store(name="base_config", node=Config)


register_configs()
