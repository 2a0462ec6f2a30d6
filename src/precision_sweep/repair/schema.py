"""Config schema of a precision recipe's ``auto_repair`` block (fp16_auto, int8_auto)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AutoRepairConfig:
    # The budget that must hold on the calibration split: accuracy at most this many pp below
    # the FP32 TensorFlow model, and at least this top-1 agreement with it.
    max_drop: float = 1.0
    min_agreement: float = 0.99
    # Calibration samples (dataset.x_calib when the dataset has one, else the first of x_train).
    calib_samples: int = 512
    # Samples of the calibration split the per-op drift ranking runs on.
    diagnostic_samples: int = 64
    # Ops kept at higher precision per round, most sensitive first.
    widen: int = 1
    # Stop (budget not met, tag repair_budget_met=false) after this many rounds or once this
    # fraction of the ops is kept.
    max_rounds: int = 16
    max_kept_fraction: float = 0.5
