"""Config schema of the ``diagnosis`` group: when a job diagnoses its drift op by op."""

from __future__ import annotations

from dataclasses import dataclass

from precision_sweep.config_checks import Range, ranged


@dataclass
class DiagnosisConfig:
    name: str = "default"
    # A job whose agreement with the FP32 baseline is below this runs the diagnosis
    # automatically (0 turns the automatic diagnosis off, above 1 diagnoses every run;
    # precision-diagnose still works).
    below_agreement: float = ranged(0.99, Range(low=0, hint="0 turns the diagnosis off; a value above 1 diagnoses every run."))
    # Relative L2 error of an op's output that counts as a jump.
    threshold: float = ranged(0.05, Range(low=0, low_open=True))
    # Test samples in the diagnostic batch.
    samples: int = ranged(128, Range(low=1, whole=True))
    # Calibration samples the numeric cliff scanner runs the FP32 program on (every job;
    # 0 turns the scanner off).
    cliff_samples: int = ranged(64, Range(low=0, whole=True))
