"""precision-pick --rule point|confident, the Pareto table/plot and --register, on a real store."""

from __future__ import annotations

import json

import pytest

from sweep_testing import mlflow_client, run_cli


def _store(outputs, runs):
    """One sweep: children (precision, delta, ci_low, ci_high, size), each with a .mlpackage artifact."""
    client = mlflow_client(outputs)
    experiment = client.create_experiment("precision-sweep", artifact_location=(outputs / "art").as_uri())
    parent = client.create_run(experiment, tags={"precision_sweep.role": "sweep"})
    ids = {}
    for precision, delta, low, high, size in runs:
        run = client.create_run(experiment, tags={
            "precision_sweep.role": "job", "mlflow.parentRunId": parent.info.run_id,
            "precision_sweep.outcome": "evaluated"})
        run_id = run.info.run_id
        for key, value in {"precision": precision, "target": "ios16", "compute_units": "all"}.items():
            client.log_param(run_id, key, value)
        for key, value in {"accuracy": 0.95 + delta, "baseline_accuracy": 0.95, "accuracy_delta": delta,
                           "accuracy_delta_ci_low": low, "accuracy_delta_ci_high": high,
                           "model_size_bytes": size}.items():
            client.log_metric(run_id, key, value)
        package = outputs / "pkg" / run_id / f"m-{precision}.mlpackage"
        package.mkdir(parents=True)
        (package / "Manifest.json").write_text("{}")
        client.log_artifacts(run_id, str(package), artifact_path=package.name)
        client.set_terminated(run_id, "FINISHED")
        ids[precision] = run_id
    client.set_terminated(parent.info.run_id, "FINISHED")
    return client, parent.info.run_id, ids


# fp16's measured delta (-0.4 pp) is within a 1 pp budget, but its CI reaches -1.3 pp.
CI_CROSSES_BUDGET = [
    ("fp32", 0.0, 0.0, 0.0, 400),
    ("fp16", -0.004, -0.013, 0.004, 200),
    ("int8", -0.025, -0.040, -0.010, 100),
]


@pytest.mark.slow
def test_point_and_confident_rules_differ_and_say_why(outputs):
    _, _, ids = _store(outputs, CI_CROSSES_BUDGET)
    point = run_cli(["precision-pick", "--max-drop", "1", "--rule", "point"], cwd=outputs.parent)
    confident = run_cli(["precision-pick", "--max-drop", "1", "--rule", "confident"], cwd=outputs.parent)
    assert point.returncode == 0 and confident.returncode == 0, point.stderr + confident.stderr
    assert f"pick: run {ids['fp16']}" in point.stdout
    assert f"pick: run {ids['fp32']}" in confident.stdout
    assert "rule point: a run qualifies when its measured accuracy delta is at least -1 pp" in point.stdout
    assert "rule confident: a run qualifies when the lower bound of the CI" in confident.stdout
    # confident says why the cheaper fp16 run lost
    assert "fp16/ios16" in confident.stdout and "-0.40 pp is within budget but the CI's lower bound -1.30 pp is not" in confident.stdout
    assert "int8/ios16" in point.stdout and "-2.50 pp is below -1 pp" in point.stdout
    # Pareto table of all evaluated runs
    assert "on_front" in point.stdout and point.stdout.count("ios16") >= 3


def test_json_decision_carries_rule_pareto_and_exclusions(outputs):
    _, parent, ids = _store(outputs, CI_CROSSES_BUDGET)
    result = run_cli(["precision-pick", "--max-drop", "1", "--rule", "confident", "--json"], cwd=outputs.parent)
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["rule"] == "confident" and decision["pick"]["run_id"] == ids["fp32"]
    assert {row["precision"] for row in decision["excluded"]} == {"fp16", "int8"}
    assert [row["precision"] for row in decision["pareto"]] == ["int8", "fp16", "fp32"]
    assert all(row["on_front"] for row in decision["pareto"])  # each is cheaper or more accurate
    assert decision["logged_to_parent"] == ["pareto.png", "pareto.csv"]
    client = mlflow_client(outputs)
    assert {"pareto.png", "pareto.csv"} <= {a.path for a in client.list_artifacts(parent)}


def test_confident_with_nothing_qualifying_exits_1_with_the_best_bound(outputs):
    _store(outputs, CI_CROSSES_BUDGET[1:])
    result = run_cli(["precision-pick", "--max-drop", "1", "--rule", "confident"], cwd=outputs.parent)
    assert result.returncode == 1
    assert "best lower CI bound seen is -1.30 pp" in result.stderr and "--rule point" in result.stderr


def test_register_creates_a_version_whose_source_is_the_picked_run(outputs):
    # Runs logged before packages were LoggedModels (test_logged_models.py has today's runs):
    # the version's source is the run's .mlpackage artifact.
    client, _, ids = _store(outputs, CI_CROSSES_BUDGET)
    result = run_cli(["precision-pick", "--max-drop", "1", "--rule", "confident", "--register", "digits-classifier"],
                     cwd=outputs.parent)
    assert result.returncode == 0, result.stderr
    assert "registered digits-classifier version 1" in result.stdout
    (version,) = client.search_model_versions("name='digits-classifier'")
    run = client.get_run(ids["fp32"])
    assert version.run_id == ids["fp32"]
    assert version.source == f"{run.info.artifact_uri}/m-fp32.mlpackage"
    assert "rule confident" in version.description and "delta +0.00 pp" in version.description
    assert "rule confident" in client.get_registered_model("digits-classifier").description
    assert client.get_model_version_by_alias("digits-classifier", "candidate").version == version.version
