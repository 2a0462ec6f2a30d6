"""A team's shared tracking store: sweeps recorded to a real MLflow server on PostgreSQL, and
an unusable store refused before any job starts.

Owns: two sweeps launched at once from two processes into one experiment on the server of
:mod:`postgres_server` (nothing lost or misfiled); a sweep losing the race to create the
experiment using the winner's; a PostgreSQL URI with a wrong password, a store nobody answers
at and a missing driver (one paragraph with the fix, exit 2, no run left RUNNING, the password
never printed). The tests that need no server run by default; the others start PostgreSQL and
MLflow and are slow.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import pytest

from sweep_testing import run_cli

PARALLEL = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"]
# Sweep A: 8 jobs on 2 workers. Sweep B, launched at the same time by another process: 4 jobs on
# other targets, so that a run filed under the wrong parent shows as a wrong cell.
GRID_A = {"precision": ["fp32", "fp16", "int8", "fp16_mixed"], "target": ["ios16", "ios17"]}
GRID_B = {"precision": ["fp32", "int8"], "target": ["ios15", "ios18"]}
EXPERIMENT = "precision-sweep"
WRONG_PASSWORD = "not-the-password"


def _grid_args(grid: dict[str, list[str]]) -> list[str]:
    return [f"{key}={','.join(values)}" for key, values in grid.items()]


def _cells(grid: dict[str, list[str]]) -> list[tuple[str, str]]:
    return sorted(product(grid["precision"], grid["target"]))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sweep_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "precision_sweep", "-m", "runtime.progress=false", *args]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRECISION_SWEEP_") and k != "MLFLOW_TRACKING_URI"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _start_sweep(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    cwd.mkdir()
    with open(cwd / "sweep.log", "w") as log:  # the child keeps its own copy of the file
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def _wait(process: subprocess.Popen, cwd: Path, timeout: float = 1800) -> str:
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = (cwd / "sweep.log").read_text(errors="replace")
    assert process.returncode == 0, f"sweep in {cwd} exited {process.returncode}:\n{output[-4000:]}"
    return output


def _all_runs(client):
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiment_ids, max_results=5000)


def _one_paragraph_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("precision-sweep: error:"))
    return " ".join(" ".join(lines[start:]).split())


# -- two sweeps at once into one experiment on the team's server ----------------------------


@pytest.mark.slow
def test_two_concurrent_sweeps_on_a_postgres_store_file_every_job_under_its_own_parent(tracking_server, shared_cache, tmp_path):
    from mlflow.tracking import MlflowClient

    cache = f"paths.cache={shared_cache}"
    # A names the server in the config, B through $MLFLOW_TRACKING_URI: the two ways the README gives.
    sweep_a = _start_sweep(
        _sweep_command(*PARALLEL, "tracking=server", f"tracking.uri={tracking_server.uri}", *_grid_args(GRID_A), cache),
        tmp_path / "a", _clean_env(),
    )
    sweep_b = _start_sweep(
        _sweep_command("tracking=server", *_grid_args(GRID_B), cache),
        tmp_path / "b", _clean_env(MLFLOW_TRACKING_URI=tracking_server.uri),
    )
    _wait(sweep_a, tmp_path / "a")
    _wait(sweep_b, tmp_path / "b")

    client = MlflowClient(tracking_uri=tracking_server.uri)
    runs = _all_runs(client)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    assert client.search_runs(["0"]) == []  # nothing in "Default"
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert {r.info.experiment_id for r in runs} == {experiment.experiment_id}  # both sweeps, one experiment

    parents = {r.data.tags["sweep_dir"]: r for r in runs if r.data.tags.get("precision_sweep.role") == "sweep"}
    jobs = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(parents) == 2 and len(jobs) == 8 + 4
    parent_a = _parent_of_sweep_in(parents, tmp_path / "a")
    parent_b = _parent_of_sweep_in(parents, tmp_path / "b")
    _assert_children_are_the_grid(client, jobs, parent_a, GRID_A)
    _assert_children_are_the_grid(client, jobs, parent_b, GRID_B)
    assert {r.data.tags.get("mlflow.parentRunId") for r in jobs} == {parent_a.info.run_id, parent_b.info.run_id}
    # The two sweeps really overlapped, and A really ran on two workers.
    assert parent_a.info.start_time < parent_b.info.end_time and parent_b.info.start_time < parent_a.info.end_time
    children_a = [r for r in jobs if r.data.tags["mlflow.parentRunId"] == parent_a.info.run_id]
    assert len({r.data.tags["precision_sweep.pid"] for r in children_a}) >= 2
    # Artifacts went through the server into its --artifacts-destination, not to a client folder.
    assert any(tracking_server.artifacts.rglob("predictions.npz"))
    assert not (tmp_path / "a" / "outputs" / "mlflow.db").exists()
    assert not (tmp_path / "b" / "outputs" / "mlflow.db").exists()


def _parent_of_sweep_in(parents: dict, cwd: Path):
    (parent,) = [run for sweep_dir, run in parents.items() if Path(sweep_dir).is_relative_to(cwd)]
    return parent


def _assert_children_are_the_grid(client, jobs, parent, grid) -> None:
    children = [r for r in jobs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    cells = sorted((r.data.params["precision"], r.data.params["target"]) for r in children)
    assert cells == _cells(grid), f"parent {parent.info.run_id} has {cells}"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["n_jobs"] == str(len(cells)) and parent.data.tags["n_failed"] == "0"
    assert all(r.info.status == "FINISHED" for r in children)
    evaluated = [r for r in children if r.data.tags.get("precision_sweep.outcome") == "evaluated"]
    assert evaluated, f"no job of parent {parent.info.run_id} was evaluated"
    for run in evaluated:
        assert "accuracy" in run.data.metrics
        assert "predictions.npz" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_a_sweep_that_loses_the_race_to_create_the_experiment_in_postgres_uses_the_winners(tracking_server):
    from mlflow.tracking import MlflowClient

    from precision_sweep.tracking import store

    client = MlflowClient(tracking_uri=tracking_server.uri)
    winner = client.create_experiment("created-by-another-sweep")  # between our look-up and create
    assert store.create_or_find_experiment(client, "created-by-another-sweep", None) == winner


# -- an unusable store: refused before any job, one paragraph, exit 2 -----------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["-m", "precision=fp32,fp16", "target=ios16"], ["precision=fp32"]], ids=["multirun", "single-run"])
def test_wrong_postgres_password_fails_before_any_job(postgres_db, tmp_path, mode):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=postgres_db.uri)  # the right password: MLflow's tables exist
    before = {r.info.run_id for r in _all_runs(client)}
    bad_uri = postgres_db.uri_with(WRONG_PASSWORD)
    start = time.monotonic()
    result = run_cli(["precision-sweep", *mode, f"tracking.uri={bad_uri}"], cwd=tmp_path, timeout=300)
    elapsed = time.monotonic() - start

    assert result.returncode == 2, result.stderr[-3000:]
    message = _one_paragraph_error(result.stderr)
    assert f"postgresql://{postgres_db.role}:***@127.0.0.1:{postgres_db.port}/{postgres_db.database}" in message
    assert "password authentication failed" in message and "Fix:" in message
    assert WRONG_PASSWORD not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s: MLflow's connection retries were not bypassed"
    assert {r.info.run_id for r in _all_runs(client)} == before  # no run created, none RUNNING
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


MULTIRUN = ["-m", "precision=fp32,fp16", "target=ios16"]
SINGLE_RUN = ["precision=fp32"]


# Both places the launching process first touches the store: on_multirun_start, open_job_run.
@pytest.mark.parametrize("scheme, mode", [("http", MULTIRUN), ("postgresql", MULTIRUN), ("postgresql", SINGLE_RUN)],
                         ids=["http-multirun", "postgresql-multirun", "postgresql-single-run"])
def test_store_nobody_answers_at_fails_fast_with_the_fix(tmp_path, scheme, mode):
    if scheme == "postgresql":
        pytest.importorskip("psycopg", reason="the PostgreSQL driver is missing: pip install 'psycopg[binary]'")
    port = _closed_port()
    uri = {"http": f"http://127.0.0.1:{port}",
           "postgresql": f"postgresql://mlflow:{WRONG_PASSWORD}@127.0.0.1:{port}/mlflow"}[scheme]
    start = time.monotonic()
    result = run_cli(["precision-sweep", *mode, "tracking=server", f"tracking.uri={uri}"], cwd=tmp_path, timeout=300)
    elapsed = time.monotonic() - start

    assert result.returncode == 2, result.stderr[-3000:]
    message = _one_paragraph_error(result.stderr)
    assert f"127.0.0.1:{port}" in message
    assert "nothing is listening at that host and port" in message and "Fix: start the server" in message
    assert WRONG_PASSWORD not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s: MLflow's connection retries were not bypassed"
    assert not (tmp_path / "outputs" / "mlflow.db").exists()
    assert not list((tmp_path / "outputs").glob("multirun/*/*/*.log"))  # no job started


def test_missing_database_driver_names_the_package_to_install(tmp_path):
    import importlib.util

    from precision_sweep.errors import UserInputError
    from precision_sweep.tracking import store

    if importlib.util.find_spec("pg8000") is not None:
        pytest.skip("pg8000 is installed: no missing driver to report")
    uri = f"postgresql+pg8000://mlflow:{WRONG_PASSWORD}@127.0.0.1:{_closed_port()}/mlflow"
    with pytest.raises(UserInputError) as caught:
        store.prepare_experiment(uri, EXPERIMENT, None)
    message = str(caught.value)
    assert "the database driver is not installed" in message and "No module named 'pg8000'" in message
    assert "mlflow:***@127.0.0.1" in message and WRONG_PASSWORD not in message


def test_losing_the_race_to_create_the_experiment_is_not_an_error(tmp_path):
    from mlflow.tracking import MlflowClient

    from precision_sweep.tracking import store

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    winner = client.create_experiment(EXPERIMENT)  # another sweep, between our look-up and create
    assert store.create_or_find_experiment(client, EXPERIMENT, None) == winner


def test_the_readme_team_set_up_is_the_commands_the_fixture_runs():
    """README.md's team set-up shows, line for line, what tests/cluster/postgres_server.py runs."""
    script = Path(__file__).with_name("postgres_server.py")
    printed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    lines = [line for line in printed.splitlines() if line.strip()]
    assert len(lines) >= 6
    for line in lines:
        assert line in readme, f"README.md's team set-up lacks: {line}"
