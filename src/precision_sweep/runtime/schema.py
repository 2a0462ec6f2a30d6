"""Config schemas of the ``compute_units`` and ``runtime`` groups."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


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
