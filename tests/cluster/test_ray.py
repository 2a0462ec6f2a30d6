"""``hydra/launcher=ray_local`` for real: a grid on a running Ray cluster joined by address (slow),
an unreachable address refused before any run exists, and each task's environment.

The cluster is a real ``ray start --head`` on 127.0.0.1 (:mod:`ray_cluster`); the sweeps run the
real CLI in a subprocess and are checked in the real MLflow store.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ray_cluster import HOST, RAY_TEST_ENV, free_port, ray_cluster  # noqa: F401  (fixture)
from sweep_testing import failed_job_errors, mlflow_client, run_cli

GRID = ["precision=fp32,fp16", "target=ios16,ios17"]


def _sweep(tmp_path: Path, address: str, *extra: str, env: dict | None = None):
    return run_cli(
        ["precision-sweep", "-m", "hydra/launcher=ray_local", f"hydra.launcher.ray.init.address={address}",
         *GRID, f"paths.outputs={tmp_path / 'outputs'}", "progress=false", *extra],
        cwd=tmp_path,
        env=env,
    )


def _all_runs(outputs: Path) -> list:
    if not (outputs / "mlflow.db").exists():
        return []
    client = mlflow_client(outputs)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=1000) if ids else []


@pytest.mark.slow
def test_a_grid_on_a_running_ray_cluster_lands_under_one_parent(tmp_path, ray_cluster, shared_cache):  # noqa: F811
    result = _sweep(tmp_path, ray_cluster.address, f"paths.cache={shared_cache}", env=RAY_TEST_ENV)
    assert result.returncode == 0, result.stderr[-3000:] + failed_job_errors(tmp_path / "outputs")

    outputs = tmp_path / "outputs"
    client = mlflow_client(outputs)
    experiment = client.get_experiment_by_name("precision-sweep")
    runs = _all_runs(outputs)
    parents = [r for r in runs if r.data.tags.get("precision_sweep.role") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(parents) == 1 and len(jobs) == 4 and len(runs) == 5
    (parent,) = parents
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert {r.info.experiment_id for r in runs} == {experiment.experiment_id} != {"0"}
    assert client.search_runs(["0"]) == []  # nothing in "Default"
    assert [r.info.status for r in runs] == ["FINISHED"] * 5  # none RUNNING, none failed
    # The jobs ran in the cluster's workers, not in a Ray the launching process started itself.
    job_pids = {int(r.data.tags["precision_sweep.pid"]) for r in jobs}
    assert job_pids <= ray_cluster.worker_pids(), (job_pids, ray_cluster.worker_pids())
    assert int(parent.data.tags["precision_sweep.pid"]) not in job_pids


def test_an_unreachable_ray_address_fails_before_any_run(tmp_path):
    address = f"{HOST}:{free_port()}"  # bound and released: nobody listens there
    result = _sweep(tmp_path, address)

    assert result.returncode == 2, result.stderr[-3000:]
    message = " ".join(result.stderr.split())
    assert f"precision-sweep: error: No Ray cluster answers at {address}" in message
    assert "ray start --head" in message and "hydra.launcher.ray.init.address=null" in message
    assert "Traceback" not in result.stderr
    assert _all_runs(tmp_path / "outputs") == []  # no parent, no job, nothing left RUNNING


def test_each_task_gets_the_sweeps_variables_and_threads_for_its_cpus(monkeypatch):
    from hydra_plugins.precision_sweep_ray_launcher._core import task_env, task_options
    from precision_sweep.runtime.threads import THREAD_VARIABLES

    for key in (*THREAD_VARIABLES, "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PRECISION_SWEEP_PARENT_RUN_ID", "abc")
    monkeypatch.setenv("UNRELATED_SECRET", "x")

    env = task_env(["PRECISION_SWEEP_", "MLFLOW_"], 2)
    assert env["PRECISION_SWEEP_PARENT_RUN_ID"] == "abc" and "UNRELATED_SECRET" not in env
    assert {env[key] for key in THREAD_VARIABLES} == {"2"} and env["TF_NUM_INTEROP_THREADS"] == "1"
    assert task_env([], 0.5)["OMP_NUM_THREADS"] == "1"

    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the launching process's own setting wins
    options = task_options({"num_cpus": 1, "runtime_env": {"env_vars": {"TF_NUM_INTRAOP_THREADS": "4"}}}, task_env([], 1))
    assert options["num_cpus"] == 1
    assert options["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "3"
    assert options["runtime_env"]["env_vars"]["TF_NUM_INTRAOP_THREADS"] == "4"  # the config's own wins
    assert os.environ["OMP_NUM_THREADS"] == "3"  # the launching process is left as it was


@pytest.mark.slow
def test_one_jobs_evaluation_sharded_over_ray_tasks_merges_into_the_unsharded_result(tmp_path, ray_cluster,  # noqa: F811
                                                                                     shared_cache):
    """runtime.shards=2 on the running cluster: the job's 8 batches are evaluated by two Ray
    tasks in the cluster's workers, merged into the job's one run; its predictions, metrics and
    paired statistics are the unsharded job's, exactly."""
    common = ["precision=fp16", "target=ios17", f"paths.cache={shared_cache}", "runtime.batch_size=64", "diagnosis=off",
              "progress=false"]
    sharded = run_cli(["precision-sweep", "-m", "hydra/launcher=ray_local", f"hydra.launcher.ray.init.address={ray_cluster.address}",
                       *common, "runtime.shards=2", f"paths.outputs={tmp_path / 'sharded'}"], cwd=tmp_path, env=RAY_TEST_ENV)
    assert sharded.returncode == 0, sharded.stderr[-3000:] + failed_job_errors(tmp_path / "sharded")
    whole = run_cli(["precision-sweep", "-m", *common, f"paths.outputs={tmp_path / 'whole'}"], cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:] + failed_job_errors(tmp_path / "whole")

    jobs = {}
    for name in ("sharded", "whole"):
        [job] = [r for r in _all_runs(tmp_path / name) if r.data.tags.get("precision_sweep.role") == "job"]
        assert job.info.status == "FINISHED"
        predictions = mlflow_client(tmp_path / name).download_artifacts(job.info.run_id, "predictions.npz", str(tmp_path / name))
        with np.load(predictions, allow_pickle=False) as archive:
            jobs[name] = (job, archive["outputs"])
    (sharded_job, sharded_outputs), (whole_job, whole_outputs) = jobs["sharded"], jobs["whole"]
    assert np.array_equal(sharded_outputs.view(np.uint32), whole_outputs.view(np.uint32))
    for metric in ("accuracy", "accuracy_delta", "accuracy_delta_ci_low", "accuracy_delta_ci_high", "mcnemar_p",
                   "agreement", "max_abs_diff", "mean_abs_diff"):
        assert sharded_job.data.metrics[metric] == whole_job.data.metrics[metric], metric
    # two tasks, four batches each, in the cluster's worker processes (not the job's own)
    shards = [part.split(" batches in process ") for part in sharded_job.data.tags["evaluation_shards"].split(", ")]
    assert sorted(int(count) for count, _ in shards) == [4, 4]
    pids = {int(pid) for _, pid in shards}
    assert pids <= ray_cluster.worker_pids() and int(sharded_job.data.tags["precision_sweep.pid"]) not in pids
    assert "evaluation_shards" not in whole_job.data.tags
