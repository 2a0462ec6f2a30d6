"""Config schema of the ``pick`` group: the default decision of a sweep and its statistics."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from precision_sweep.config_checks import Range, ranged


class PickRule(StrEnum):
    """point: the measured delta must be within budget; confident: its lower CI bound must be."""

    point = "point"
    confident = "confident"


@dataclass
class PickConfig:
    name: str = "default"
    # Accuracy budget in percentage points below the FP32 baseline, used by the end-of-sweep
    # summary (precision-pick takes its own --max-drop).
    max_drop: float = ranged(1.0, Range(low=0, hint="It is the accuracy budget in percentage points below the FP32 baseline, e.g. pick.max_drop=1."))
    rule: PickRule = PickRule.confident
    cost: str = "model_size_bytes"
    # Paired bootstrap of the accuracy delta, computed by every job.
    confidence: float = ranged(0.95, Range(low=0, high=1, low_open=True, high_open=True))
    n_resamples: int = ranged(2000, Range(low=100, whole=True))
