"""Fault handling pieces with real parts: fingerprints, stale-run reaping, limits, job counts."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sweep_testing import compose, mlflow_client


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


def test_job_past_its_time_limit_fails_alone(outputs, shared_cache, monkeypatch):
    from precision_sweep.job import run_job
    from precision_sweep.limits import JobTimeout
    from precision_sweep import runtime as runtime_module

    original = runtime_module.run_batches

    def slow_batches(*args, **kwargs):  # a real slow evaluation: sleep in the loop
        time.sleep(3)
        return original(*args, **kwargs)

    monkeypatch.setattr(runtime_module, "run_batches", slow_batches)
    cfg = compose([f"paths.outputs={outputs}", f"paths.cache={shared_cache}", "runtime.progress=false",
                   "precision=fp32", "limits.timeout_minutes=0.02"])
    with pytest.raises(JobTimeout):
        run_job(cfg)
    client = mlflow_client(outputs)
    (run,) = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["error_class"] == "JobTimeout"


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
