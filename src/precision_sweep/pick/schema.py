"""Config schema of the ``pick`` group: the default decision of a sweep and its statistics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PickConfig:
    name: str = "default"
    # Accuracy budget in percentage points below the FP32 baseline, used by the end-of-sweep
    # summary (precision-pick takes its own --max-drop).
    max_drop: float = 1.0
    # point: the measured delta must be within budget; confident: its lower CI bound must be.
    rule: str = "confident"
    cost: str = "model_size_bytes"
    # Paired bootstrap of the accuracy delta, computed by every job.
    confidence: float = 0.95
    n_resamples: int = 2000
