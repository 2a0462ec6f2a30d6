"""One job in-process with real parts: failures are recorded, single runs exit non-zero."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sweep_testing import compose, mlflow_client, run_cli


def _job_cfg(outputs, cache, *overrides):
    return compose([f"paths.outputs={outputs}", f"paths.cache={cache}", "runtime.progress=false", *overrides])


def test_unsupported_op_fails_the_job_with_error_txt(outputs, shared_cache, monkeypatch):
    from precision_sweep.emulator.registry import KERNELS
    from precision_sweep.emulator.program import UnsupportedOpError
    from precision_sweep.job import run_job

    import precision_sweep.emulator.ops  # noqa: F401

    monkeypatch.delitem(KERNELS, "softmax")
    cfg = _job_cfg(outputs, shared_cache, "precision=fp32", "runtime=emulator")
    with pytest.raises(UnsupportedOpError):
        run_job(cfg)
    client = mlflow_client(outputs)
    (run,) = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["error_class"] == "UnsupportedOpError"
    assert "softmax" in run.data.tags["error_message"]
    assert run.data.tags["mlflow.note.content"].startswith("**Failed:** UnsupportedOpError:")
    assert run.info.run_name.endswith("(failed)")
    text = open(client.download_artifacts(run.info.run_id, "error.txt")).read()
    assert text.startswith("UnsupportedOpError:") and "softmax" in text


def test_single_job_runs_and_logs_to_a_run_without_parent(outputs, shared_cache):
    from precision_sweep.job import run_job

    from precision_sweep.emulator import NUMERICS_VERSION

    metrics = run_job(_job_cfg(outputs, shared_cache, "precision=fp16", "target=ios17", "runtime=emulator", "device=m5"))
    assert metrics["agreement"] >= 0.99
    client = mlflow_client(outputs)
    (run,) = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    assert run.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.params["effective_target"] == "ios17"
    # the numerics model, the placement estimate and the cliff scan are part of every run
    assert run.data.params["device"] == "m5" and run.data.tags["numerics_version"] == NUMERICS_VERSION
    assert run.data.metrics["ane_op_fraction"] > 0.9 and run.data.metrics["ane_mac_fraction"] == 1.0
    assert run.data.metrics["cliff_count"] == 0 and run.data.tags["cliffs"] == "no numeric cliffs"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"placement.csv", "cliffs.csv"} <= artifacts
    import pandas as pd

    placement = pd.read_csv(client.download_artifacts(run.info.run_id, "placement.csv"))
    assert list(placement.columns) == ["op", "output", "op_type", "layer", "unit", "reason", "macs"]
    assert set(placement.loc[placement["op_type"] == "conv", "layer"]) == {"conv1", "conv2"}


@pytest.mark.slow
def test_failing_job_does_not_stop_the_sweep_and_the_parent_closes(tmp_path, shared_cache):
    if sys.platform == "darwin":
        pytest.skip("runtime=coreml works on macOS, so it cannot be the failing job there")
    result = run_cli(
        ["precision-sweep", "-m", "precision=fp32", "runtime=emulator,coreml,emulator",
         "target=ios16", f"paths.cache={shared_cache}", "runtime.progress=false"],
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "1 of 3 job(s) failed" in result.stderr
    client = mlflow_client(tmp_path / "outputs")
    runs = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    parent = [r for r in runs if r.data.tags.get("precision_sweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(parent) == 1 and parent[0].info.status == "FAILED"
    assert sorted(r.info.status for r in children) == ["FAILED", "FINISHED", "FINISHED"]
    failed = next(r for r in children if r.info.status == "FAILED")
    assert "macOS" in failed.data.tags["error_message"]
    assert "error.txt" in {a.path for a in client.list_artifacts(failed.info.run_id)}
    assert all(r.info.status != "RUNNING" for r in runs)


def test_python_dash_m_runs_one_job(tmp_path, shared_cache):
    result = run_cli(["precision-sweep", "precision=fp32", "target=ios15", f"paths.cache={shared_cache}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    client = mlflow_client(tmp_path / "outputs")
    (run,) = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    assert run.data.metrics["agreement"] == 1.0 and run.data.params["precision"] == "fp32"


def test_unknown_target_exits_non_zero_with_the_choices(tmp_path):
    result = run_cli(["precision-sweep", "target=ios99"], cwd=tmp_path)
    assert result.returncode != 0
    assert "ios16" in result.stderr and "ios99" in result.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_console_scripts_are_installed():
    for script in ("precision-sweep", "precision-pick"):
        found = subprocess.run(["which", script], capture_output=True, text=True)
        if found.returncode != 0:
            pytest.skip(f"{script} not on PATH (package not installed with pip)")
        assert subprocess.run([script, "--help"], capture_output=True, timeout=300).returncode == 0
