"""Sweeps past one process: joblib workers, a real MLflow server, SIGKILL and resume.

These run real multiruns in subprocesses and take minutes: marked slow (CI runs them).
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep_testing import mlflow_client, run_cli

pytestmark = pytest.mark.slow

PARALLEL = ["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "runtime.progress=false"]


def _runs_by_role(client, experiment_id):
    runs = client.search_runs([experiment_id], max_results=1000)
    roles = {"sweep": [], "job": []}
    for run in runs:
        roles.setdefault(run.data.tags.get("precision_sweep.role"), []).append(run)
    return runs, roles


def test_twelve_jobs_on_two_joblib_workers_land_under_one_parent(tmp_path, shared_cache):
    result = run_cli(
        ["precision-sweep", *PARALLEL, "precision=fp32,fp16,int8", "target=ios15,ios16,ios17,ios18", f"paths.cache={shared_cache}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow_client(tmp_path / "outputs")
    experiment = client.get_experiment_by_name("precision-sweep")
    runs, roles = _runs_by_role(client, experiment.experiment_id)
    (parent,) = roles["sweep"]
    assert parent.info.status == "FINISHED"
    assert len(roles["job"]) == 12
    assert {r.data.tags["mlflow.parentRunId"] for r in roles["job"]} == {parent.info.run_id}
    assert client.search_runs(["0"]) == []  # nothing in "Default"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len({r.data.tags["precision_sweep.pid"] for r in roles["job"]}) >= 2  # really two workers
    assert "sweep: 12/12 jobs done (ok 11, failed 0, skipped 1, running 0) in " in result.stderr  # the final counts
    share = max(1, (os.cpu_count() or 1) // 2)  # each of the 2 workers gets its half of the cores
    expected = f"tf {share}, omp {share}, numba {share} of {os.cpu_count()} cores"
    assert {r.data.tags["precision_sweep.threads"] for r in roles["job"]} == {expected}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("mlflow server did not start")
    yield uri
    process.terminate()
    process.wait(timeout=30)


def test_eight_jobs_on_two_workers_against_a_real_tracking_server(tmp_path, shared_cache, mlflow_server):
    from mlflow.tracking import MlflowClient

    result = run_cli(
        ["precision-sweep", *PARALLEL, "tracking=server", "precision=fp32,fp16", "target=ios15,ios16,ios17,ios18",
         f"paths.cache={shared_cache}"],
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": mlflow_server},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("precision-sweep")
    runs, roles = _runs_by_role(client, experiment.experiment_id)
    (parent,) = roles["sweep"]
    assert len(roles["job"]) == 8 and all(r.info.status == "FINISHED" for r in roles["job"])
    assert {r.data.tags["mlflow.parentRunId"] for r in roles["job"]} == {parent.info.run_id}
    for run in roles["job"]:
        assert "accuracy" in run.data.metrics
        assert "predictions.npz" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert client.search_runs(["0"]) == []
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # everything went to the server


def _running_job_in_evaluation(db: Path):
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute(
                """select r.run_uuid, p.value from runs r
                   join tags s on s.run_uuid = r.run_uuid and s.key = 'precision_sweep.stage' and s.value = 'evaluate'
                   join tags p on p.run_uuid = r.run_uuid and p.key = 'precision_sweep.pid'
                   where r.status = 'RUNNING'"""
            ).fetchall()
            finished = con.execute(
                """select count(*) from runs r join tags t on t.run_uuid = r.run_uuid
                   and t.key = 'precision_sweep.role' and t.value = 'job' where r.status = 'FINISHED'"""
            ).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None, 0
    return (rows[0] if rows else None), finished


def test_sigkill_mid_evaluation_then_resume_reruns_only_what_is_missing(tmp_path, shared_cache):
    grid = ["precision=fp32,fp16", "target=ios16,ios17,ios18"]
    # batch_size=1 makes evaluation last seconds, long enough to kill a job in the middle of it
    command = [sys.executable, "-m", "precision_sweep", *PARALLEL, *grid, "runtime.batch_size=1",
               f"paths.cache={shared_cache}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRECISION_SWEEP_")}
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = tmp_path / "outputs" / "mlflow.db"
    victim = None
    deadline = time.time() + 600
    while victim is None and time.time() < deadline and first.poll() is None:
        time.sleep(0.3)
        # The store is read only once the launcher has created it and started the jobs.
        if not glob.glob(str(tmp_path / "outputs" / "multirun" / "*" / "multirun.yaml")):
            continue
        running, finished = _running_job_in_evaluation(db)
        if running and finished >= 1:
            victim = running[0]
            os.kill(int(running[1]), signal.SIGKILL)
    first.communicate(timeout=600)
    assert victim is not None, "no job was caught in evaluation"
    assert first.returncode != 0

    client = mlflow_client(tmp_path / "outputs")
    experiment = client.get_experiment_by_name("precision-sweep").experiment_id
    runs, roles = _runs_by_role(client, experiment)
    assert client.get_run(victim).info.status == "KILLED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert roles["sweep"][0].info.status in ("FAILED", "KILLED")
    finished_before = {r.info.run_id: (r.data.params["precision"], r.data.params["target"])
                       for r in roles["job"] if r.info.status == "FINISHED"}
    assert 1 <= len(finished_before) < 6

    second = run_cli(["precision-sweep", *PARALLEL, *grid, "runtime.batch_size=64", "resume=true",
                      f"paths.cache={shared_cache}"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    runs, roles = _runs_by_role(client, experiment)
    new_parent = max(roles["sweep"], key=lambda r: r.info.start_time)
    children = [r for r in roles["job"] if r.data.tags.get("mlflow.parentRunId") == new_parent.info.run_id]
    cells = [(r.data.params["precision"], r.data.params["target"]) for r in children]
    assert sorted(cells) == sorted((p, t) for p in ("fp32", "fp16") for t in ("ios16", "ios17", "ios18"))
    assert all(r.info.status == "FINISHED" for r in children)
    reused = {r.data.tags.get("precision_sweep.reused_from") for r in children} - {None}
    assert reused == set(finished_before)  # exactly the finished ones were linked, not re-run
    rerun = [r for r in children if "precision_sweep.reused_from" not in r.data.tags]
    assert len(rerun) == 6 - len(finished_before)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    # Nothing stored before was lost: the first sweep's runs are all still there.
    assert set(finished_before) <= {r.info.run_id for r in runs}
