"""Fault handling pieces with real parts: fingerprints, stale-run reaping, limits, job counts."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sweep_testing import compose, mlflow_client, run_cli


def test_fingerprint_ignores_where_and_how_but_not_what():
    from precision_sweep.tracking.fingerprint import job_fingerprint

    base = job_fingerprint(compose(["precision=fp16"]), "m1", "d1")
    assert base == job_fingerprint(compose(["precision=fp16", "paths.outputs=/elsewhere", "runtime.progress=false", "resume=true"]), "m1", "d1")
    assert base != job_fingerprint(compose(["precision=fp32"]), "m1", "d1")
    assert base != job_fingerprint(compose(["precision=fp16", "target=ios17"]), "m1", "d1")
    assert base != job_fingerprint(compose(["precision=fp16"]), "m2", "d1")
    assert base != job_fingerprint(compose(["precision=fp16"]), "m1", "d2")


def test_stale_running_run_of_a_dead_process_is_marked_killed(outputs):
    from precision_sweep.tracking import liveness
    from precision_sweep.tracking.store import prepare_experiment

    uri = f"sqlite:///{outputs / 'mlflow.db'}"
    experiment = prepare_experiment(uri, "precision-sweep", str(outputs / "art"))
    client = mlflow_client(outputs)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = dead.stdout.strip()
    tags = liveness.process_tags()
    stale = client.create_run(experiment, tags={**tags, liveness.PID_TAG: dead_pid, "k": "v"})
    alive = client.create_run(experiment, tags={**tags, "k": "v"})  # this process: alive
    finished = client.create_run(experiment, tags={**tags, liveness.PID_TAG: dead_pid, "k": "v"})
    client.set_terminated(finished.info.run_id, "FINISHED")
    killed = liveness.reap(client, experiment, "tags.k = 'v'")
    assert killed == [stale.info.run_id]
    assert client.get_run(stale.info.run_id).info.status == "KILLED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(finished.info.run_id).info.status == "FINISHED"


POLLER = """
import sqlite3, sys, time
from pathlib import Path
path = Path(sys.argv[1])
print("ready", flush=True)
while not path.exists():
    time.sleep(0.0005)
db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
try:
    version = db.execute("select version_num from alembic_version").fetchone()
    names = [row[0] for row in db.execute("select name from experiments")]
    print("complete", version[0] if version else None, names)
except sqlite3.Error as exc:
    print("half-made:", exc)
"""


def test_a_process_polling_for_the_new_sqlite_store_never_sees_it_half_made(outputs):
    # MLflow migrating one SQLite file from two processes corrupts it; a tool (or a test) that
    # opens the store as soon as the file appears must find MLflow's tables already complete.
    from precision_sweep.tracking.store import prepare_experiment

    path = outputs / "mlflow.db"
    poller = subprocess.Popen([sys.executable, "-c", POLLER, str(path)], stdout=subprocess.PIPE, text=True)
    assert poller.stdout.readline().strip() == "ready"
    experiment = prepare_experiment(f"sqlite:///{path}", "precision-sweep", str(outputs / "art"))
    seen = poller.communicate(timeout=60)[0].strip()
    assert seen.startswith("complete") and "'Default'" in seen, seen
    assert mlflow_client(outputs).get_experiment(experiment).name == "precision-sweep"
    assert [p.name for p in outputs.iterdir() if p.name.endswith(".creating")] == []
    # A second launch finds the same store and experiment.
    assert prepare_experiment(f"sqlite:///{path}", "precision-sweep", str(outputs / "art")) == experiment


def test_describing_an_experiment_another_sweep_just_described_does_not_stop_the_sweep(outputs, monkeypatch):
    # On PostgreSQL, two sweeps that both find the experiment undescribed race to insert the tag
    # and the second gets a unique-key error (seen in CI): the description is best effort.
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from precision_sweep.tracking import store

    uri = f"sqlite:///{outputs / 'mlflow.db'}"
    store.create_sqlite_database(outputs / "mlflow.db")
    made_by_mlflow = mlflow_client(outputs).create_experiment("precision-sweep")  # no description

    def lost_the_race(self, experiment_id, key, value):
        raise MlflowException("duplicate key value violates unique constraint \"experiment_tag_pk\"")

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", lost_the_race)
    assert store.prepare_experiment(uri, "precision-sweep", None) == made_by_mlflow
    monkeypatch.undo()
    assert store.prepare_experiment(uri, "precision-sweep", None) == made_by_mlflow
    described = mlflow_client(outputs).get_experiment(made_by_mlflow)
    assert described.tags[store.NOTE_TAG] == store.EXPERIMENT_DESCRIPTION


@pytest.mark.parametrize("mode", [["-m", "precision=fp32,fp16"], ["precision=fp32"]], ids=["multirun", "single-run"])
def test_a_deleted_experiment_is_refused_with_the_restore_command(outputs, mode):
    from precision_sweep.tracking.store import prepare_experiment

    uri = f"sqlite:///{outputs / 'mlflow.db'}"
    experiment = prepare_experiment(uri, "precision-sweep", None)
    client = mlflow_client(outputs)
    kept = client.create_run(experiment)
    client.set_terminated(kept.info.run_id)
    client.delete_experiment(experiment)  # in the UI, say; MLflow keeps the name taken
    result = run_cli(["precision-sweep", *mode, f"paths.outputs={outputs}"], cwd=outputs)
    assert result.returncode == 2, result.stderr[-3000:]
    message = " ".join(result.stderr.split())
    assert "'precision-sweep' (id 1)" in message and "is deleted" in message
    assert "mlflow experiments restore --experiment-id 1" in message and "tracking.experiment=NAME" in message
    assert "Traceback" not in result.stderr
    runs = client.search_runs([experiment], run_view_type=3)  # ViewType.ALL
    assert [r.info.run_id for r in runs] == [kept.info.run_id]  # nothing added, nothing lost


def test_job_past_its_time_limit_fails_alone(outputs, shared_cache, monkeypatch):
    """The job whose evaluation outlasts ``limits.timeout_minutes`` is recorded FAILED
    (JobTimeout), and the next job of the same process (as a worker runs its next job), under
    the same limit, runs to the end: the alarm is disarmed and its handler restored between."""
    import signal

    from precision_sweep import runtime as runtime_module
    from precision_sweep.job import run_job
    from precision_sweep.limits import JobTimeout

    original = runtime_module.run_batches
    armed: list[float] = []

    def evaluation_outlasting_the_limit(*args, **kwargs):
        armed.append(signal.getitimer(signal.ITIMER_REAL)[0])  # the limit's alarm, armed by the job
        if len(armed) > 1:
            return original(*args, **kwargs)
        # The first job's evaluation outlasts its limit on any machine: its alarm is brought due
        # now, and the evaluation runs on until the alarm stops it.
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        time.sleep(600)
        raise AssertionError("the time limit did not stop the evaluation")

    monkeypatch.setattr(runtime_module, "run_batches", evaluation_outlasting_the_limit)
    handler = signal.getsignal(signal.SIGALRM)
    overrides = [f"paths.outputs={outputs}", f"paths.cache={shared_cache}", "runtime.progress=false",
                 "precision=fp32", "limits.timeout_minutes=10"]
    with pytest.raises(JobTimeout, match="limits.timeout_minutes=10") as stopped:
        run_job(compose(overrides))
    # Raised inside the evaluation, not before it reached it.
    assert "evaluation_outlasting_the_limit" in [entry.name for entry in stopped.traceback]
    assert 0 < armed[0] <= 600  # armed from limits.timeout_minutes
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) == handler

    run_job(compose(overrides + ["target=ios17"]))  # the next job: the same limit, not reached
    assert len(armed) == 2 and 0 < armed[1] <= 600
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) == handler
    client = mlflow_client(outputs)
    runs = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    by_cell = sorted((run.data.params["target"], run.info.status, run.data.tags.get("error_class", "")) for run in runs)
    assert by_cell == [("ios16", "FAILED", "JobTimeout"), ("ios17", "FINISHED", "")]


def test_memory_limit_caps_what_the_block_adds_and_is_restored():
    import signal

    import numpy as np

    from precision_sweep.limits import JobMemoryExceeded, job_limits

    handler = signal.getsignal(signal.SIGUSR1)
    kept = []
    with pytest.raises(JobMemoryExceeded, match="max_memory_gb=0.25"):
        with job_limits(max_memory_gb=0.25):
            kept.append(np.ones(64 * 2**20, dtype=np.uint8))  # 64 MiB: within the allowance
            time.sleep(0.3)
            for _ in range(20):  # then 50 MiB at a time, touched, up to 1 GiB
                kept.append(np.ones(50 * 2**20, dtype=np.uint8))
                time.sleep(0.1)
    assert sum(a.nbytes for a in kept) < (64 + 20 * 50) * 2**20  # stopped before the end
    assert signal.getsignal(signal.SIGUSR1) == handler
    kept.clear()
    with job_limits(max_memory_gb=0.25):  # a block that stays within it runs to the end
        np.ones(64 * 2**20, dtype=np.uint8)
        time.sleep(0.2)


def test_job_past_its_memory_limit_fails_alone(outputs, shared_cache, monkeypatch):
    import numpy as np

    from precision_sweep.job import run_job
    from precision_sweep import runtime as runtime_module

    overrides = [f"paths.outputs={outputs}", f"paths.cache={shared_cache}", "runtime.progress=false",
                 "precision=fp32", "limits.max_memory_gb=1"]
    run_job(compose(overrides))  # a normal job fits in the allowance
    original = runtime_module.run_batches

    def hungry_batches(*args, **kwargs):
        workspace = np.ones(int(1.5 * 2**30), dtype=np.uint8)  # an evaluation holding 1.5 GiB
        time.sleep(0.5)
        del workspace
        return original(*args, **kwargs)

    monkeypatch.setattr(runtime_module, "run_batches", hungry_batches)
    from precision_sweep.limits import JobMemoryExceeded

    with pytest.raises(JobMemoryExceeded, match="max_memory_gb=1"):
        run_job(compose(overrides + ["target=ios17"]))
    client = mlflow_client(outputs)
    runs = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    by_status = sorted((run.info.status, run.data.tags.get("error_class", "")) for run in runs)
    assert by_status == [("FAILED", "JobMemoryExceeded"), ("FINISHED", "")]


@pytest.mark.parametrize("override", ["limits.max_memory_gb=-1", "limits.timeout_minutes=0"])
def test_a_limit_that_is_not_positive_is_refused_before_anything_is_stored(outputs, override):
    from sweep_testing import run_cli

    result = run_cli(["precision-sweep", f"paths.outputs={outputs}", "precision=fp32", override], cwd=outputs)
    assert result.returncode == 2
    assert "is not a positive number" in result.stderr and "=null for no limit" in result.stderr
    assert not (outputs / "mlflow.db").exists()


def test_job_count_follows_the_sweep_overrides():
    from precision_sweep.tracking.progress import count_jobs

    from sweep_testing import compose

    cfg = compose(["sweep=default"], return_hydra_config=True)
    assert count_jobs(cfg) == 12
    from omegaconf import OmegaConf

    command_line = OmegaConf.create(
        {"hydra": {"overrides": {"task": ["precision=fp32,fp16", "target=ios16,ios17,ios18", "seed=1"]}, "sweeper": {"params": None}}}
    )
    assert count_jobs(command_line) == 6


def test_a_sweep_whose_tracking_fails_to_start_stops_before_any_job(outputs, monkeypatch, capsys):
    # Hydra only warns when a callback raises, then runs every job: without the parent's id in
    # their environment they would be filed outside the sweep. The sweep stops instead.
    import os

    from precision_sweep.cli import callback as callback_module
    from precision_sweep.tracking import store

    config = compose([f"paths.outputs={outputs}", "runtime.progress=false", f"hydra.sweep.dir={outputs}/multirun"],
                     return_hydra_config=True)

    def store_fails(config):
        raise RuntimeError("the store went away")

    monkeypatch.setattr(callback_module, "swept_axes", store_fails)  # fails after the parent exists
    tracking = callback_module.SweepTrackingCallback()
    with pytest.raises(SystemExit) as stopped:
        tracking.on_multirun_start(config)
    assert stopped.value.code == 1
    message = " ".join(capsys.readouterr().err.split())
    assert "could not start recording to the tracking store (RuntimeError: the store went away)" in message
    assert "no job was started" in message
    (parent,) = mlflow_client(outputs).search_runs([os.environ.get(store.ENV_EXPERIMENT) or "1"])
    assert parent.info.status == "FAILED"
    assert not any(os.environ.get(key) for key in (store.ENV_URI, store.ENV_EXPERIMENT, store.ENV_PARENT))
