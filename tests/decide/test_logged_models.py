"""Each evaluated job's ``.mlpackage`` is an MLflow LoggedModel with the job's params and its
metrics linked to it and to the test set (the run's dataset input); ``precision-pick
--register NAME`` registers the picked LoggedModel and points an alias at the version.

One tiny real sweep (fp32, int8 x iOS15, iOS16: three evaluated jobs and int8/iOS15 skipped)
into a real SQLite store, then a resumed one that links instead of re-measuring.
"""

from __future__ import annotations

import json

import pytest
from mlflow.entities import LoggedModelStatus
from sweep_testing import mlflow_client, run_cli

GRID = ["-m", "precision=fp32,int8", "target=ios15,ios16", "runtime=emulator", "runtime.progress=false"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, shared_cache):
    workdir = tmp_path_factory.mktemp("logged_models")
    result = run_cli(["precision-sweep", *GRID, f"paths.cache={shared_cache}"], cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow_client(workdir / "outputs")
    experiment = client.get_experiment_by_name("precision-sweep")
    jobs = client.search_runs([experiment.experiment_id], "tags.`precision_sweep.role` = 'job'")
    return workdir, client, experiment.experiment_id, jobs


def _evaluated(jobs):
    return [r for r in jobs if r.data.tags["precision_sweep.outcome"] == "evaluated"]


def test_one_ready_logged_model_per_evaluated_job_with_its_params_and_metrics(sweep):
    _, client, experiment_id, jobs = sweep
    evaluated = _evaluated(jobs)
    assert len(evaluated) == 3 and len(jobs) == 4
    models = client.search_logged_models([experiment_id])
    assert sorted(m.source_run_id for m in models) == sorted(r.info.run_id for r in evaluated)
    for run in evaluated:
        (model,) = [m for m in models if m.source_run_id == run.info.run_id]
        assert model.status == LoggedModelStatus.READY  # its artifacts are uploaded: it can be registered
        assert model.model_type == "coreml.mlpackage"
        assert model.name == f"digits_cnn-{run.data.params['precision']}-{run.data.params['target']}-all"
        for key in ("precision", "target", "compute_units", "device"):
            assert model.params[key] == run.data.params[key]
        for key in ("runtime", "dataset_hash", "numerics_version"):  # provenance: the run's tags
            assert model.params[key] == run.data.tags[key]
        assert model.tags["precision_sweep.sweep"] == run.data.tags["mlflow.parentRunId"]
        # the run's metrics are the model's, measured on the test set
        linked = {m.key: m for m in model.metrics}
        for key in ("accuracy", "accuracy_delta", "agreement", "model_size_bytes", "delta_pp"):
            assert linked[key].value == pytest.approx(run.data.metrics[key])
            assert (linked[key].dataset_name, linked[key].dataset_digest) == ("digits", run.data.tags["dataset_hash"])
        # the package is the model's artifacts; the run links the model as its output
        assert {"Manifest.json", "Data"} <= {a.path for a in client.list_logged_model_artifacts(model.model_id)}
        assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
        # the run keeps its copy too: precision-diagnose RUN_ID reads it from there
        assert any(a.path.endswith(".mlpackage") for a in client.list_artifacts(run.info.run_id))
    # the Models tab filters variants by param, across sweeps
    int8 = client.search_logged_models([experiment_id], filter_string="params.precision = 'int8'")
    assert [m.params["target"] for m in int8] == ["ios16"]


def test_the_run_has_the_test_set_as_its_dataset_input(sweep):
    _, _, _, jobs = sweep
    for run in _evaluated(jobs):
        (dataset_input,) = run.inputs.dataset_inputs
        dataset = dataset_input.dataset
        assert (dataset.name, dataset.digest) == ("digits", run.data.tags["dataset_hash"])
        assert json.loads(dataset.profile)["num_rows"] == run.data.metrics["n_samples"]
        assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "evaluation"
    (skipped,) = [r for r in jobs if r.data.tags["precision_sweep.outcome"] == "skipped"]
    assert not skipped.outputs.model_outputs


@pytest.mark.slow
def test_register_makes_a_version_of_the_picked_logged_model_with_an_alias(sweep):
    workdir, client, experiment_id, _ = sweep
    result = run_cli(["precision-pick", "--max-drop", "1", "--register", "digits-classifier", "--json"], cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    decision = json.loads(result.stdout)
    registered = decision["registered"]
    (model,) = [m for m in client.search_logged_models([experiment_id]) if m.source_run_id == decision["pick"]["run_id"]]
    assert registered == {"name": "digits-classifier", "version": 1, "alias": "candidate",
                          "source": f"models:/{model.model_id}", "logged_model": model.model_id}
    version = client.get_model_version_by_alias("digits-classifier", "candidate")
    assert (str(version.version), version.source, version.run_id) == ("1", f"models:/{model.model_id}", model.source_run_id)
    # the model's page lists the version it was registered as
    (link,) = json.loads(client.get_logged_model(model.model_id).tags["mlflow.modelVersions"])
    assert (link["name"], str(link["version"])) == ("digits-classifier", "1")

    other = run_cli(["precision-pick", "--max-drop", "1", "--register", "digits-classifier", "--alias", "staging"], cwd=workdir)
    assert other.returncode == 0, other.stderr[-3000:]
    assert "registered digits-classifier version 2 as @staging" in other.stdout
    aliases = client.get_registered_model("digits-classifier").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"candidate": "1", "staging": "2"}
    assert client.get_model_version_by_alias("digits-classifier", "staging").source == f"models:/{model.model_id}"

    bad = run_cli(["precision-pick", "--max-drop", "1", "--register", "digits-classifier", "--alias", "latest"], cwd=workdir)
    assert bad.returncode == 2 and "--alias" in bad.stderr and "reserves" in bad.stderr
    assert len(client.search_model_versions("name='digits-classifier'")) == 2


@pytest.mark.slow
def test_a_resumed_sweep_links_the_measured_model_and_registers_it(sweep, shared_cache):
    workdir, client, experiment_id, jobs = sweep
    result = run_cli(["precision-sweep", "-m", "precision=int8", "target=ios16", "runtime=emulator",
                      "runtime.progress=false", "resume=true", f"paths.cache={shared_cache}"], cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    (original,) = [r for r in jobs if (r.data.params["precision"], r.data.params["target"]) == ("int8", "ios16")]
    (reused,) = [r for r in client.search_runs([experiment_id])
                 if r.data.tags.get("precision_sweep.reused_from") == original.info.run_id]
    # no second model: the reused run links the original's, and its test set
    assert len(client.search_logged_models([experiment_id])) == 3
    assert reused.outputs.model_outputs == original.outputs.model_outputs
    assert [d.dataset.digest for d in reused.inputs.dataset_inputs] == [original.data.tags["dataset_hash"]]
    pick = run_cli(["precision-pick", "--max-drop", "5", "--register", "int8-variant", "--json"], cwd=workdir)
    assert pick.returncode == 0, pick.stderr[-3000:]
    decision = json.loads(pick.stdout)
    assert decision["pick"]["run_id"] == reused.info.run_id
    assert decision["registered"]["source"] == f"models:/{original.outputs.model_outputs[0].model_id}"
