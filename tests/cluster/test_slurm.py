"""``hydra/launcher=slurm`` on a real single-node SLURM cluster (:mod:`slurm_cluster`).

Each test runs the real ``precision-sweep`` command with ``SLURM_CONF`` pointing at the test
cluster, then reads the real SQLite MLflow store back: a grid lands under one parent, a job
cancelled with ``scancel`` or stopped by its SLURM time limit never stays RUNNING and
``resume=true`` completes the grid, and a partition that does not exist is refused before any
run exists. The cancelled and the timed-out job are held mid-run by a model the test withholds
(:class:`sweep_testing.WithheldModel`), not by a slow model: the same on any machine. Minutes
each: marked slow.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_testing import WithheldModel, mlflow_client, run_cli

pytestmark = pytest.mark.slow

# One CPU and 2 GB per job: two jobs at once on this 2-core test machine.
RESOURCES = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
QUIET = ["runtime.progress=false", "progress=false"]
SWEEP_SECONDS = 1500


def slurm_command(cluster, outputs: Path, cache: Path, *overrides: str) -> list[str]:
    return ["precision-sweep", "-m", "hydra/launcher=slurm", f"hydra.launcher.partition={cluster.partition}",
            *RESOURCES, *QUIET, f"paths.outputs={outputs}", f"paths.cache={cache}", *overrides]


def runs_by_role(client) -> tuple[list, list, list]:
    """(every run, the sweep parents oldest first, the job runs) of the precision-sweep experiment."""
    experiment = client.get_experiment_by_name("precision-sweep").experiment_id
    runs = client.search_runs([experiment], max_results=1000)
    parents = sorted((r for r in runs if r.data.tags.get("precision_sweep.role") == "sweep"), key=lambda r: r.info.start_time)
    jobs = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    return runs, parents, jobs


def children_of(jobs: list, parent) -> list:
    return [r for r in jobs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def cell(run) -> tuple[str, ...]:
    return run.data.params.get("precision"), run.data.params.get("target")


def assert_nothing_running(client, runs) -> None:
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    assert client.search_runs(["0"]) == []  # nothing in the Default experiment


def assert_resume_completes(client, finished_before: dict, cells: list) -> None:
    """The newest parent has one FINISHED child per cell: the cells FINISHED before are linked
    (``precision_sweep.reused_from``), only the others were measured again."""
    runs, parents, jobs = runs_by_role(client)
    new_parent = parents[-1]
    assert new_parent.info.status == "FINISHED"
    children = children_of(jobs, new_parent)
    assert sorted(map(cell, children)) == sorted(cells)
    assert all(r.info.status == "FINISHED" for r in children)
    reused = {r.data.tags.get("precision_sweep.reused_from") for r in children} - {None}
    assert reused == set(finished_before)
    measured = [r for r in children if "precision_sweep.reused_from" not in r.data.tags]
    assert len(measured) == len(cells) - len(finished_before)
    assert_nothing_running(client, runs)
    assert set(finished_before) <= {r.info.run_id for r in runs}  # nothing stored before was lost


def test_six_jobs_land_under_one_parent(slurm_cluster, tmp_path, shared_cache):
    outputs = tmp_path / "outputs"
    command = slurm_command(slurm_cluster, outputs, shared_cache, "precision=fp32,fp16,int8", "target=ios16,ios17")
    result = run_cli(command, cwd=tmp_path, timeout=SWEEP_SECONDS, env={"SLURM_CONF": str(slurm_cluster.conf)})
    assert result.returncode == 0, result.stderr[-3000:] + slurm_cluster.logs()

    client = mlflow_client(outputs)
    runs, parents, jobs = runs_by_role(client)
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert len(jobs) == 6
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert sorted(map(cell, jobs)) == sorted((p, t) for p in ("fp32", "fp16", "int8") for t in ("ios16", "ios17"))
    assert all(r.info.status == "FINISHED" for r in jobs)  # a skipped cell is FINISHED too, tagged skipped
    assert_nothing_running(client, runs)
    # Really run by SLURM: one array task per job, each in its own process.
    assert len(list((outputs / "multirun").glob("*/.submitit/*_*/*_log.out"))) == 6
    assert len({r.data.tags["precision_sweep.pid"] for r in jobs}) == 6


def _slurm_job_of(cluster, pid: str) -> str | None:
    """The squeue id (``array_task`` form) of the SLURM job whose process is ``pid``."""
    info = cluster.run("scontrol", "pidinfo", pid, check=False).stdout
    if "JobId=" not in info:
        return None
    raw = info.split("JobId=")[1].split()[0]
    listing = cluster.run("squeue", "-h", "-o", "%A %i").stdout.split("\n")
    return next((line.split()[1] for line in listing if line.split()[:1] == [raw]), None)


def _jobs_waiting_for_their_model(client) -> list:
    """The RUNNING job runs that have logged their params but not their model: with the model
    withheld (:class:`sweep_testing.WithheldModel`) they wait there, inside the block where the
    job turns SIGTERM into JobTerminated."""
    from mlflow.exceptions import MlflowException

    try:
        if client.get_experiment_by_name("precision-sweep") is None:
            return []  # the launching process is still creating the store
        _, _, jobs = runs_by_role(client)
    except MlflowException:  # the database is busy or being migrated
        return []
    return [r for r in jobs if r.info.status == "RUNNING" and "precision" in r.data.params
            and "model_hash" not in r.data.tags]


def _wait_for_status(client, run_id: str, statuses: tuple[str, ...], timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while client.get_run(run_id).info.status not in statuses:
        assert time.time() < deadline, f"run {run_id} still {client.get_run(run_id).info.status} after {timeout} s"
        time.sleep(0.5)


def test_scancel_mid_run_ends_the_run_killed_and_resume_completes_the_grid(slurm_cluster, tmp_path, shared_cache):
    outputs = tmp_path / "outputs"
    # A model no other test trains, withheld: every job waits for it, RUNNING, until released.
    grid = ["precision=fp32,fp16", "target=ios16,ios17", "model.seed=27"]
    withheld = WithheldModel(shared_cache, "model.seed=27")
    command = slurm_command(slurm_cluster, outputs, shared_cache, *grid)
    module = [sys.executable, "-m", "precision_sweep", *command[1:]]
    env = {k: v for k, v in slurm_cluster.env.items() if not k.startswith(("PRECISION_SWEEP_", "MLFLOW_"))}
    log = tmp_path / "first.log"
    with withheld, open(log, "w") as sink:
        first = subprocess.Popen(module, cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT)
        # The client opens the store only once the sweep has linked it into place: a client made
        # earlier creates and migrates the database itself, racing the sweep's own creation.
        client, victim, slurm_job = None, None, None
        deadline = time.time() + SWEEP_SECONDS
        while slurm_job is None and time.time() < deadline and first.poll() is None:
            time.sleep(0.5)
            if (outputs / "mlflow.db").exists():
                client = client or mlflow_client(outputs)
                waiting = _jobs_waiting_for_their_model(client)
                victim = waiting[0] if waiting else None
                slurm_job = victim and _slurm_job_of(slurm_cluster, victim.data.tags["precision_sweep.pid"])
        assert slurm_job, "no job was caught waiting for its model: " + log.read_text()[-3000:]
        # The victim cannot move on while the model is withheld: scancel reaches it mid-run.
        slurm_cluster.run("scancel", slurm_job)
        _wait_for_status(client, victim.info.run_id, ("KILLED", "FAILED", "FINISHED"))
        assert "model_hash" not in client.get_run(victim.info.run_id).data.tags  # still where it was caught
    first.wait(timeout=SWEEP_SECONDS)
    output = log.read_text()
    assert first.returncode != 0, output[-3000:]
    slurm_cluster.wait_until_queue_empty()  # the sweep's other jobs run on after the launcher gave up
    withheld.check_used()

    runs, parents, jobs = runs_by_role(client)
    killed = client.get_run(victim.info.run_id)
    assert killed.info.status == "KILLED", output[-3000:]
    assert killed.data.tags.get("error_class") == "JobTerminated"  # closed by the job itself, on SIGTERM
    (parent,) = parents
    assert parent.info.status == "FAILED"
    assert parent.data.tags.get("precision_sweep.incomplete") == "true"
    assert_nothing_running(client, runs)
    finished_before = {r.info.run_id: cell(r) for r in jobs if r.info.status == "FINISHED"}
    assert len(finished_before) == 3 and cell(victim) not in finished_before.values()

    second = run_cli(slurm_command(slurm_cluster, outputs, shared_cache, *grid, "resume=true"), cwd=tmp_path,
                     timeout=SWEEP_SECONDS, env={"SLURM_CONF": str(slurm_cluster.conf)})
    assert second.returncode == 0, second.stderr[-3000:]
    assert_resume_completes(client, finished_before, [(p, t) for p in ("fp32", "fp16") for t in ("ios16", "ios17")])


# A 3-minute SLURM time limit; submitit asks for USR2 60 s before it (SLURM sends it up to a
# minute earlier still), so a job is warned between 1 and 2 minutes in, then SIGTERMed at 3.
TIME_LIMIT = ["hydra.launcher.timeout_min=3", "hydra.launcher.signal_delay_s=60"]


def test_a_job_past_its_slurm_time_limit_never_stays_running_and_resume_completes(slurm_cluster, tmp_path, shared_cache):
    outputs = tmp_path / "outputs"
    # Two models: the default one (seed 0), measured before the sweep so that its job needs seconds
    # under the limit on any machine, and one no other test trains (seed 28), withheld: its job
    # waits for it past the time limit, however fast the machine.
    grid = ["precision=fp16", "model.seed=0,28"]
    warm = run_cli(["precision-sweep", "precision=fp16", *QUIET, f"paths.outputs={tmp_path / 'warm'}",
                    f"paths.cache={shared_cache}"], cwd=tmp_path, timeout=SWEEP_SECONDS)
    assert warm.returncode == 0, warm.stderr[-3000:]
    with WithheldModel(shared_cache, "model.seed=28") as withheld:
        first = run_cli(slurm_command(slurm_cluster, outputs, shared_cache, *grid, *TIME_LIMIT),
                        cwd=tmp_path, timeout=SWEEP_SECONDS, env={"SLURM_CONF": str(slurm_cluster.conf)})
        assert first.returncode != 0, first.stderr[-3000:]
        slurm_cluster.wait_until_queue_empty()

    client = mlflow_client(outputs)
    runs, parents, jobs = runs_by_role(client)
    (parent,) = parents
    assert parent.info.status == "FAILED", first.stderr[-3000:]
    assert_nothing_running(client, runs)
    # The withheld model's job never got its model (model_hash is a provenance tag): stopped while
    # waiting for it, KILLED (SIGTERM) or FAILED (submitit's warning signal), the reason recorded.
    stopped = [r for r in jobs if r.info.status != "FINISHED"]
    assert len(stopped) == 1, [(r.info.status, r.data.tags.get("model_hash")) for r in jobs]
    assert "model_hash" not in stopped[0].data.tags and "precision" in stopped[0].data.params
    assert stopped[0].info.status in ("KILLED", "FAILED") and stopped[0].data.tags.get("error_class")
    finished_before = {r.info.run_id: cell(r) for r in jobs if r.info.status == "FINISHED"}
    fast_model = {r.data.tags["model_hash"] for r in jobs if r.info.status == "FINISHED"}
    assert len(fast_model) == 1

    second = run_cli(slurm_command(slurm_cluster, outputs, shared_cache, *grid, "hydra.launcher.timeout_min=20",
                                   "resume=true"), cwd=tmp_path, timeout=SWEEP_SECONDS,
                     env={"SLURM_CONF": str(slurm_cluster.conf)})
    assert second.returncode == 0, second.stderr[-3000:]
    withheld.check_used()
    assert_resume_completes(client, finished_before, [("fp16", "ios16")] * 2)
    _, parents, jobs = runs_by_role(client)
    models = {r.data.tags["model_hash"] for r in children_of(jobs, parents[-1])}
    assert len(models) == 2 and fast_model <= models  # both cells: the default and the withheld model


def test_a_partition_that_does_not_exist_is_refused_before_any_run(slurm_cluster, tmp_path):
    outputs = tmp_path / "outputs"
    command = slurm_command(slurm_cluster, outputs, tmp_path / "cache", "precision=fp32,fp16")
    command[command.index(f"hydra.launcher.partition={slurm_cluster.partition}")] = "hydra.launcher.partition=nosuch"
    result = run_cli(command, cwd=tmp_path, env={"SLURM_CONF": str(slurm_cluster.conf)})
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("precision-sweep: error: hydra.launcher.partition=nosuch: SLURM has no partition named nosuch")
    assert f"(its partitions: {slurm_cluster.partition};" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (outputs / "mlflow.db").exists()  # no store, so no run at all
    assert slurm_cluster.queue() == []  # and nothing was submitted
