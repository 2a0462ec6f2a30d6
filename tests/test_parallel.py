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

from sweep_testing import WithheldModel, mlflow_client, run_cli

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


def _job_waiting_for_the_withheld_model(db: Path, seed: int):
    """(run id, pid) of a RUNNING job of ``model.seed=<seed>`` (read from the resolved config it
    logs before loading its model), and the number of FINISHED jobs; (None, n) when there is none yet."""
    import yaml

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute(
                """select r.run_uuid, p.value, r.artifact_uri from runs r
                   join tags p on p.run_uuid = r.run_uuid and p.key = 'precision_sweep.pid'
                   join tags t on t.run_uuid = r.run_uuid and t.key = 'precision_sweep.role' and t.value = 'job'
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
    for run_id, pid, artifact_uri in rows:
        config = Path(artifact_uri.removeprefix("file://")) / "resolved_config.yaml"
        try:
            if yaml.safe_load(config.read_text())["model"]["seed"] == seed:
                return (run_id, pid), finished
        except (OSError, yaml.YAMLError, TypeError, KeyError):
            continue  # not logged yet, or being written
    return None, finished


def _wait_until_dead(pid: int, timeout: float = 60) -> None:
    """Until ``pid`` has exited (gone, or a zombie its parent has not reaped yet)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state == "Z":
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still alive {timeout} s after SIGKILL")


def test_sigkill_mid_run_then_resume_reruns_only_what_is_missing(tmp_path, shared_cache):
    """A job SIGKILLed while its run is open (nothing of it can close the run) is marked KILLED,
    and ``resume=true`` reruns only the jobs that did not finish. The victim is a job of a model
    the test withholds (:class:`sweep_testing.WithheldModel`): it waits for that model, RUNNING,
    until killed, so the pid killed is the job asserted about on any machine."""
    withheld_seed = 29  # a model no other test trains
    # model.seed varies slowest: the three default-model jobs come first and finish.
    grid = [f"model.seed=0,{withheld_seed}", "precision=fp16", "target=ios16,ios17,ios18"]
    command = [sys.executable, "-m", "precision_sweep", *PARALLEL, *grid, f"paths.cache={shared_cache}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRECISION_SWEEP_")}
    db = tmp_path / "outputs" / "mlflow.db"
    victim = None
    with WithheldModel(shared_cache, f"model.seed={withheld_seed}") as withheld:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 600
        while victim is None and time.time() < deadline and first.poll() is None:
            time.sleep(0.3)
            # The store is read only once the launcher has created it and started the jobs.
            if not glob.glob(str(tmp_path / "outputs" / "multirun" / "*" / "multirun.yaml")):
                continue
            waiting, finished = _job_waiting_for_the_withheld_model(db, withheld_seed)
            if waiting and finished >= 1:
                victim, pid = waiting[0], int(waiting[1])
                os.kill(pid, signal.SIGKILL)  # it cannot have moved on: its model is withheld
                _wait_until_dead(pid)
        if victim is None:
            first.kill()
    output, _ = first.communicate(timeout=600)
    assert victim is not None, "no job was caught waiting for the withheld model:\n" + output[-3000:]
    assert first.returncode != 0

    client = mlflow_client(tmp_path / "outputs")
    experiment = client.get_experiment_by_name("precision-sweep").experiment_id
    runs, roles = _runs_by_role(client, experiment)
    killed = client.get_run(victim)
    assert killed.info.status == "KILLED"
    assert "model_hash" not in killed.data.tags  # killed where it was caught, waiting for its model
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert roles["sweep"][0].info.status in ("FAILED", "KILLED")
    finished_before = {r.info.run_id: (r.data.params["precision"], r.data.params["target"])
                       for r in roles["job"] if r.info.status == "FINISHED"}
    assert 1 <= len(finished_before) < 6 and victim not in finished_before

    second = run_cli(["precision-sweep", *PARALLEL, *grid, "resume=true", f"paths.cache={shared_cache}"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    withheld.check_used()
    runs, roles = _runs_by_role(client, experiment)
    new_parent = max(roles["sweep"], key=lambda r: r.info.start_time)
    children = [r for r in roles["job"] if r.data.tags.get("mlflow.parentRunId") == new_parent.info.run_id]
    cells = [(r.data.params["precision"], r.data.params["target"]) for r in children]
    assert sorted(cells) == sorted([("fp16", t) for t in ("ios16", "ios17", "ios18")] * 2)  # each model's three
    assert all(r.info.status == "FINISHED" for r in children)
    reused = {r.data.tags.get("precision_sweep.reused_from") for r in children} - {None}
    assert reused == set(finished_before)  # exactly the finished ones were linked, not re-run
    rerun = [r for r in children if "precision_sweep.reused_from" not in r.data.tags]
    assert len(rerun) == 6 - len(finished_before)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    # Nothing stored before was lost: the first sweep's runs are all still there.
    assert set(finished_before) <= {r.info.run_id for r in runs}
