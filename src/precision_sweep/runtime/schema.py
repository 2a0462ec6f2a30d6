"""Config schemas of the ``compute_units``, ``device`` and ``runtime`` groups.

Names are enumerations, so a mistyped value fails at composition with the list of choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from omegaconf import MISSING

from precision_sweep.config_checks import Range, ranged


class ComputeUnits(StrEnum):
    cpu_only = "cpu_only"
    cpu_and_gpu = "cpu_and_gpu"
    cpu_and_ne = "cpu_and_ne"
    all = "all"


class Device(StrEnum):
    """Neural Engine generations with published measurements (emulator/devices.py)."""

    m1 = "m1"
    m2 = "m2"
    m5 = "m5"


class RuntimeName(StrEnum):
    """auto: Core ML on macOS when it loads, else the emulator; or force one."""

    auto = "auto"
    emulator = "emulator"
    coreml = "coreml"


@dataclass
class ComputeUnitsConfig:
    name: ComputeUnits = MISSING
    # Member of coremltools.ComputeUnit used by the real Core ML runtime.
    coreml: str = MISSING
    # Core ML's allowLowPrecisionAccumulationOnGPU: the GPU sums in fp16 (emulator and Core ML).
    gpu_low_precision_accumulation: bool = False


@dataclass
class DeviceConfig:
    # The Neural Engine generation whose op support, limits and numerics the emulator follows.
    name: Device = Device.m1


@dataclass
class RuntimeConfig:
    # auto: Core ML on macOS when it loads, else the emulator; or force "emulator" / "coreml".
    name: RuntimeName = RuntimeName.auto
    batch_size: int = ranged(256, Range(low=1, whole=True))
    progress: bool = True
    # Ray tasks one job's evaluation is split into, batch by batch (runtime/shards.py); 1: none.
    shards: int = ranged(1, Range(low=1, whole=True))
