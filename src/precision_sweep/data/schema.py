"""Config schemas of the ``model`` and ``dataset`` groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING


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
