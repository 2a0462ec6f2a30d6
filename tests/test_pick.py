"""precision-pick against a real MLflow store that the test builds run by run."""

from __future__ import annotations

import json

import pytest

from sweep_testing import run_cli


def _store(outputs, deltas):
    """A store with one sweep: (precision, target, accuracy_delta, size) children."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    experiment = client.create_experiment("precision-sweep", artifact_location=(outputs / "art").as_uri())
    parent = client.create_run(experiment, tags={"precision_sweep.role": "sweep"})
    for precision, target, delta, size in deltas:
        run = client.create_run(
            experiment,
            tags={"precision_sweep.role": "job", "mlflow.parentRunId": parent.info.run_id, "precision_sweep.outcome": "evaluated"},
        )
        for key, value in {"precision": precision, "target": target, "compute_units": "all"}.items():
            client.log_param(run.info.run_id, key, value)
        for key, value in {"accuracy": 0.9 + delta, "baseline_accuracy": 0.9, "accuracy_delta": delta, "model_size_bytes": size}.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    return client


def test_nothing_qualifies_exits_1_with_the_best_delta(outputs):
    _store(outputs, [("fp16", "ios16", -0.012, 100), ("int8", "ios16", -0.03, 50)])
    result = run_cli(["precision-pick", "--max-drop", "0.5"], cwd=outputs.parent)
    assert result.returncode == 1
    assert "no run keeps accuracy within 0.5 pp" in result.stderr
    assert "-1.20 pp" in result.stderr and "fp16" in result.stderr


def test_pick_is_the_cheapest_within_budget(outputs):
    _store(outputs, [("fp32", "ios16", 0.0, 400), ("fp16", "ios16", -0.004, 200), ("int8", "ios16", -0.02, 100)])
    result = run_cli(["precision-pick", "--max-drop", "0.5", "--json"], cwd=outputs.parent)
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["pick"]["precision"] == "fp16"
    assert [row["precision"] for row in decision["qualifying"]] == ["fp16", "fp32"]
    wide = run_cli(["precision-pick", "--max-drop", "2"], cwd=outputs.parent)
    assert wide.returncode == 0 and "precision=int8" in wide.stdout


@pytest.mark.parametrize("budget,phrase", [("abc", "must be a number"), ("-1", "non-negative"), ("nan", "non-negative")])
def test_bad_budget_is_refused(outputs, budget, phrase):
    _store(outputs, [("fp32", "ios16", 0.0, 400)])
    result = run_cli(["precision-pick", f"--max-drop={budget}"], cwd=outputs.parent)
    assert result.returncode == 2
    assert phrase in result.stderr


def test_missing_store_is_a_clear_error(tmp_path):
    result = run_cli(["precision-pick", "--max-drop", "1"], cwd=tmp_path)
    assert result.returncode == 2
    assert "no MLflow store" in result.stderr and "Run a sweep first" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_unknown_cost_metric_names_the_logged_ones(outputs):
    _store(outputs, [("fp32", "ios16", 0.0, 400)])
    result = run_cli(["precision-pick", "--max-drop", "1", "--cost", "latency_ms"], cwd=outputs.parent)
    assert result.returncode == 2
    assert "latency_ms" in result.stderr and "model_size_bytes" in result.stderr
