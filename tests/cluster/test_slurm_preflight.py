"""The SLURM launcher's preflight (:mod:`precision_sweep.cli.preflight.slurm`) where no cluster
is needed: the real command refuses, before any run exists, a machine without ``sbatch`` and a
time limit shorter than submitit's warning signal. (A partition that does not exist needs a
cluster: ``test_slurm.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_testing import run_cli

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[cluster]' (hydra-submitit-launcher)")


def _refused(tmp_path: Path, *overrides: str, env: dict | None = None) -> str:
    outputs = tmp_path / "outputs"
    result = run_cli(["precision-sweep", "-m", "hydra/launcher=slurm", f"paths.outputs={outputs}",
                      "precision=fp32,fp16", *overrides], cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (outputs / "mlflow.db").exists()  # refused before the store, so before any run
    return " ".join(result.stderr.split())


def test_without_sbatch_on_path_the_sweep_is_refused_naming_the_fix(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    message = _refused(tmp_path, env={"PATH": str(empty)})
    assert "precision-sweep: error: hydra/launcher=slurm submits every job with sbatch, but sbatch and sinfo are not on PATH" in message
    assert "hydra/launcher=parallel" in message


def test_a_time_limit_inside_the_warning_signal_is_refused(tmp_path):
    message = _refused(tmp_path, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=120")
    assert "hydra.launcher.timeout_min=1 leaves no time before submitit's warning signal" in message
    assert "Raise hydra.launcher.timeout_min above 3 or lower hydra.launcher.signal_delay_s" in message
