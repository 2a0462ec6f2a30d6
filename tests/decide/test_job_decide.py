"""A real job logs the paired statistics and, below the agreement level, its drift diagnosis;
``precision-diagnose RUN_ID`` diagnoses a logged run on demand."""

from __future__ import annotations

import pytest

import os
import subprocess
import sys

from sweep_testing import compose, mlflow_client


def _run(outputs, cache, *overrides):
    from precision_sweep.job import run_job

    cfg = compose([f"paths.outputs={outputs}", f"paths.cache={cache}", "runtime.progress=false",
                   "runtime=emulator", "target=ios16", *overrides])
    metrics = run_job(cfg)
    client = mlflow_client(outputs)
    (run,) = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    return metrics, client, run


def test_job_logs_statistics_and_forced_diagnosis(outputs, shared_cache):
    metrics, client, run = _run(outputs, shared_cache, "precision=fp16", "diagnosis.below_agreement=1.01")
    for key in ("accuracy_delta_ci_low", "accuracy_delta_ci_high", "mcnemar_p", "flips_to_wrong", "flips_to_right"):
        assert key in run.data.metrics
    assert run.data.metrics["accuracy_delta_ci_low"] <= metrics["accuracy_delta"] <= run.data.metrics["accuracy_delta_ci_high"]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"per_class.csv", "confusion.png", "drift.csv", "drift.png"} <= names
    # digits_cnn at fp16 never jumps past the threshold: the tag says so instead of guessing.
    assert run.data.tags["drift_first_op"] == "none"
    assert "drift_error" not in run.data.tags


def test_no_diagnosis_when_agreement_is_fine(outputs, shared_cache):
    _, client, run = _run(outputs, shared_cache, "precision=fp32")
    assert "drift_first_op" not in run.data.tags
    assert "drift.csv" not in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_precision_diagnose_cli(outputs, shared_cache):
    _, client, run = _run(outputs, shared_cache, "precision=int8")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, "-m", "precision_sweep.cli.diagnose", run.info.run_id, "--samples", "32"],
        cwd=outputs.parent, capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"run {run.info.run_id}:" in result.stdout and "ops that introduce the most error" in result.stdout
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["drift_first_op"] and "drift_summary" in tags
    assert {"drift.csv", "drift.png", "cliffs.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "numeric cliffs on the run's device: no numeric cliffs" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "precision_sweep.cli.diagnose", "nope"],
                             cwd=outputs.parent, capture_output=True, text=True, timeout=600, env=env)
    assert missing.returncode == 2 and "no run with id 'nope'" in missing.stderr
