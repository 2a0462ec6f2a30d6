"""The default sweeper (``hydra/sweeper=precision_sweep``): Hydra's basic sweeper whose
pre-launch check composes a covering subset of the grid's jobs instead of every job."""

from __future__ import annotations

import itertools

import pytest

from hydra_plugins.precision_sweep_sweeper.sweeper import covering_jobs
from sweep_testing import compose, mlflow_client, run_cli


def _grid(fixed: list[str], **axes: list[str]) -> list[list[str]]:
    return [[f"{key}={value}" for key, value in zip(axes, values)] + fixed
            for values in itertools.product(*axes.values())]


@pytest.mark.parametrize("axes", [
    {"precision": ["fp32", "fp16", "int8"], "target": ["ios15", "ios16", "ios17", "ios18"]},
    {"precision": ["fp32", "fp16", "int8"], "target": ["ios15", "ios16", "ios17", "ios18"],
     "compute_units": ["cpu_only", "cpu_and_gpu", "all", "cpu_and_ne"], "device": ["m1", "m5"]},
    {"precision": ["fp16"], "target": ["ios17"]},
])
def test_covering_jobs_are_jobs_of_the_grid_holding_every_override_as_many_as_its_longest_axis(axes):
    batch = _grid(["paths.cache=/tmp/x", "seed=3"], **axes)
    chosen = covering_jobs(batch)
    assert all(job in batch for job in chosen)
    assert {o for job in chosen for o in job} == {o for job in batch for o in job}
    assert len(chosen) == max(len(values) for values in axes.values())


def test_covering_jobs_of_a_batch_that_is_not_a_grid_still_hold_every_override():
    batch = [["a=1", "b=1"], ["a=1", "b=2"], ["a=2", "b=1"], ["c=5"]]
    chosen = covering_jobs(batch)
    assert {o for job in chosen for o in job} == {"a=1", "a=2", "b=1", "b=2", "c=5"}
    assert covering_jobs([]) == []
    assert covering_jobs([[]]) == [[]]  # one job without overrides is still composed


def test_the_default_config_sweeps_with_it_and_keeps_the_basic_sweepers_fields():
    sweeper = compose(["sweep=default"], return_hydra_config=True).hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.precision_sweep_sweeper.sweeper.CoveringSweeper"
    assert dict(sweeper.params) == {"precision": "fp32,fp16,int8", "target": "ios15,ios16,ios17,ios18"}


@pytest.mark.parametrize("grid, wrong, group", [
    (["precision=fp32,fp99", "target=ios16,ios17,ios18"], "precision/fp99", "precision"),
    (["precision=fp32,fp16", "target=ios16,ios17,ios99"], "target/ios99", "target"),
])
def test_a_wrong_value_anywhere_in_the_grid_stops_the_sweep_before_any_job(tmp_path, grid, wrong, group):
    result = run_cli(["precision-sweep", "-m", *grid, "progress=false"], cwd=tmp_path)
    assert result.returncode != 0
    assert f"Could not find '{wrong}'" in result.stderr
    assert f"Available options in '{group}'" in result.stderr
    assert "No job had started: fix what the error above names" in result.stderr
    assert "resume=true" not in result.stderr  # resuming would fail the same way
    client = mlflow_client(tmp_path / "outputs")
    runs = [run for experiment in client.search_experiments()
            for run in client.search_runs([experiment.experiment_id])]
    assert [run.data.tags.get("precision_sweep.role") for run in runs] == ["sweep"]
    assert runs[0].info.status == "FAILED"


def test_a_key_only_some_swept_recipes_have_is_named_with_the_fix_before_any_job(tmp_path):
    """precision.weight_palettization.nbits swept beside int8 (whose weight_palettization is null):
    one paragraph naming the pair and the fix, no traceback, no child run."""
    result = run_cli(["precision-sweep", "-m", "precision=palettize,int8", "precision.weight_palettization.nbits=2,4",
                      "progress=false"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "AssertionError" not in result.stderr
    assert ("The sweep pairs `precision=int8` with `precision.weight_palettization.nbits=" in result.stderr
            and "own grid" in result.stderr), result.stderr[-2000:]
    assert "No job had started" in result.stderr
    client = mlflow_client(tmp_path / "outputs")
    runs = [run for experiment in client.search_experiments() for run in client.search_runs([experiment.experiment_id])]
    assert [run.data.tags.get("precision_sweep.role") for run in runs] == ["sweep"]
    assert runs[0].info.status == "FAILED"
