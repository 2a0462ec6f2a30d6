"""Config schema of the ``diagnosis`` group: when a job diagnoses its drift op by op."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DiagnosisConfig:
    name: str = "default"
    # A job whose agreement with the FP32 baseline is below this runs the diagnosis
    # automatically (0 turns the automatic diagnosis off; precision-diagnose still works).
    below_agreement: float = 0.99
    # Relative L2 error of an op's output that counts as a jump.
    threshold: float = 0.05
    # Test samples in the diagnostic batch.
    samples: int = 128
    # Calibration samples the numeric cliff scanner runs the FP32 program on (every job;
    # 0 turns the scanner off).
    cliff_samples: int = 64
