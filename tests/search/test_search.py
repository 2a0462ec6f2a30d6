"""precision=search end to end (issue 24): real Hydra runs of the CLI on the demo model and
dataset (digits_mlp_sensitive on digits_shifted at iOS18), a real MLflow store, real
conversions, the emulator; and the bad inputs refused before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sweep_testing import mlflow_client, run_cli

DEMO = ["model=digits_mlp_sensitive", "dataset=digits_shifted", "target=ios18", "compute_units=cpu_only", "diagnosis=off"]


def _common(root: Path, cache: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"paths.cache={cache}", *DEMO]


def _runs(root: Path) -> pd.DataFrame:
    client = mlflow_client(root)
    rows = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], max_results=5000):
            rows.append({"run_id": run.info.run_id, "status": run.info.status, "role": run.data.tags.get("precision_sweep.role"),
                         "parent": run.data.tags.get("mlflow.parentRunId"), **run.data.params,
                         **{f"metric:{k}": v for k, v in run.data.metrics.items()}, "tags": run.data.tags,
                         "artifact_uri": run.info.artifact_uri})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The uniform recipes and one search on the demo, sharing a cache (the model trains once)."""
    root = tmp_path_factory.mktemp("search")
    cache = root / "cache"
    uniform = [
        ["-m", "precision=palettize", "precision.weight_palettization.nbits=2,4,6,8"],
        ["-m", "precision=int8,int4_per_block"],
    ]
    for i, grid in enumerate(uniform):
        result = run_cli(["precision-sweep", *grid, *_common(root, cache), f"hydra.sweep.dir={root / f'grid{i}'}"], cwd=root)
        assert result.returncode == 0, result.stderr[-3000:]
    search_dir = root / "search"
    result = run_cli(["precision-sweep", "precision=search", *_common(root, cache), f"hydra.run.dir={search_dir}"], cwd=root)
    return root, cache, search_dir, result


@pytest.mark.slow
def test_the_search_beats_every_uniform_recipe_within_budget_and_confirms_it_held_out(demo):
    from precision_sweep.pick.select import pick

    root, _, search_dir, result = demo
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _runs(root)
    jobs = runs[runs["role"] == "job"]
    uniform = jobs[jobs["precision"] != "search"].assign(accuracy_delta=lambda f: f["metric:accuracy_delta"],
                                                         target="ios18", status="FINISHED")
    decision = pick(uniform, 1.0, "model_size_bytes", "confident")
    assert decision.pick is not None
    smallest_uniform = decision.pick["cost"]
    # the demo's point: uniform 2 bits misses the budget, int8 keeps it
    pal2 = uniform[uniform["metric:model_size_bytes"] == uniform["metric:model_size_bytes"].min()].iloc[0]
    assert 100 * pal2["metric:accuracy_delta"] < -1
    assert abs(100 * uniform[uniform["precision"] == "int8"].iloc[0]["metric:accuracy_delta"]) <= 1

    search = jobs[jobs["precision"] == "search"].iloc[0]
    assert search["status"] == "FINISHED"
    assert search["metric:model_size_bytes"] <= 0.8 * smallest_uniform, (search["metric:model_size_bytes"], smallest_uniform)
    # On the search split the chosen point keeps the budget with the selection's margin: its
    # lower bound, simultaneous over the candidates and lowered by the held-out CI's half width,
    # sits below the split's own CI bound and within the budget.
    best = json.loads((Path(search["artifact_uri"].removeprefix("file://")) / "search.json").read_text())["best"]
    assert best["ok"] and best["size_bytes"] == search["metric:model_size_bytes"]
    assert -1.0 <= best["select_low_pp"] < best["ci_low_pp"], best
    # The budget is judged held out, on the held-out CI's lower bound (rule confident), and the
    # exit code says it. (Selected on the split's own CI, without the margin, the chosen point
    # missed there on an AMD EPYC: -0.40 pp on the search split, -1.33 pp held out.)
    assert 100 * search["metric:accuracy_delta_ci_low"] >= -1.0
    assert search["tags"]["search_budget_met"] == "true"
    assert "met on the held-out split" in search["tags"]["search_summary"]
    assert int(search["held_out_samples"]) + int(search["search_samples"]) == 4050
    evaluations, exhaustive = search["metric:search_evaluations"], search["metric:search_exhaustive_evaluations"]
    assert exhaustive == 6 ** 5 and 0 < evaluations <= 0.25 * exhaustive
    assert "evaluations" in result.stderr + result.stdout or "search:" in (search_dir / "app.log").read_text()

    trials = runs[runs["parent"] == search["run_id"]]
    assert len(trials) >= 10 and set(trials["status"]) == {"FINISHED"} and set(trials["role"]) == {"search_trial"}
    assert {"greedy", "tpe"} <= set(trials["source"])

    sensitivity = pd.read_csv(search_dir / "sensitivity.csv")
    assert {"project", "wide1", "wide2", "squeeze", "probs"} == set(sensitivity["layer"])
    worst = sensitivity.sort_values("delta_pp").iloc[0]
    assert (worst["layer"], worst["choice"]) == ("project", "pal2")  # the sensitive layer, named
    for name in ("sensitivity.png", "search_front.png", "search_points.csv"):
        assert (search_dir / name).stat().st_size > 1000


@pytest.mark.slow
def test_an_exported_recipe_rebuilds_the_identical_package(demo, tmp_path):
    from precision_sweep.emulator import Emulator

    root, cache, search_dir, _ = demo
    recipes = sorted((search_dir / "recipes" / "precision").glob("search_*_1.yaml"))
    assert recipes, "the front's smallest point is exported"
    recipe = yaml.safe_load(recipes[0].read_text())
    assert recipe["per_op_weights"]["ops"] and recipe["compute_precision"] == "float16"
    out = tmp_path / "again"
    result = run_cli(["precision-sweep", "--config-dir", str(search_dir / "recipes"), f"precision={recipe['name']}",
                      f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"paths.cache={cache}", *DEMO,
                      f"hydra.run.dir={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    again = _runs(tmp_path)
    again = again[again["role"] == "job"].iloc[0]
    searched = _runs(root)
    searched = searched[(searched["role"] == "job") & (searched["precision"] == "search")].iloc[0]
    assert again["metric:model_size_bytes"] == searched["metric:model_size_bytes"]
    first, second = (Emulator(next(folder.glob("*.mlpackage")), "cpu_only") for folder in (search_dir, out))
    x = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    a, b = (e.predict({e.input_names[0]: x})[e.output_names[0]] for e in (first, second))
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.slow
def test_the_search_is_deterministic_for_a_seed(demo, tmp_path):
    root, cache, search_dir, _ = demo
    fresh = tmp_path / "cache"
    shutil.copytree(cache, fresh, ignore=shutil.ignore_patterns("search"))  # the trained model, not the search's state
    out = tmp_path / "again"
    result = run_cli(["precision-sweep", "precision=search", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                      f"paths.cache={fresh}", *DEMO, f"hydra.run.dir={out}"], cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    first = pd.read_csv(search_dir / "search_points.csv")
    second = pd.read_csv(out / "search_points.csv")
    pd.testing.assert_frame_equal(first, second)
    recipes = [yaml.safe_load(next((d / "recipes" / "precision").glob("search_*_1.yaml")).read_text())["per_op_weights"]
               for d in (search_dir, out)]
    assert recipes[0] == recipes[1]


@pytest.mark.parametrize("overrides, words", [
    (["target=ios16", "precision.search.choices=[fp16,int8,int4_block32]"], ["int4_block32", "iOS18", "target=ios16"]),
    (["precision.search.choices=[fp16,pal5]"], ["pal5", "palettizes"]),
    (["precision.search.choices=[fp16]"], ["nothing to search"]),
    (["pick.max_drop=-1", "precision.search.max_trials=0"], ["pick.max_drop=-1"]),
])
def test_a_search_that_cannot_run_is_refused_before_any_work(tmp_path, overrides, words):
    """One paragraph, exit 2, before the run is created (no store is even written)."""
    store = tmp_path / "mlflow.db"
    result = run_cli(["precision-sweep", "precision=search", "target=ios18", f"tracking.uri=sqlite:///{store}",
                      f"paths.cache={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'out'}", *overrides], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()
    assert message[0].startswith("precision-sweep: ")
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    runs = _runs(tmp_path) if store.exists() else pd.DataFrame()
    assert runs.empty or "RUNNING" not in set(runs["status"])


@pytest.mark.slow
def test_a_layer_the_model_does_not_have_is_refused_with_its_layers(tmp_path):
    store = tmp_path / "mlflow.db"
    result = run_cli(["precision-sweep", "precision=search", "target=ios18", f"tracking.uri=sqlite:///{store}",
                      f"paths.cache={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'out'}",
                      "+precision.search.layers.nope=[int8,pal4]"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "'nope'" in result.stderr and "conv1" in result.stderr and "Traceback" not in result.stderr
    runs = _runs(tmp_path) if store.exists() else pd.DataFrame()
    assert runs.empty, runs  # refused before the job's run is created


@pytest.mark.slow
def test_precision_sensitivity_shows_each_layer_and_setting(demo, tmp_path):
    root, _, _, _ = demo
    runs = _runs(root)
    search = runs[(runs["role"] == "job") & (runs["precision"] == "search")].iloc[0]
    result = run_cli(["precision-sensitivity", search["run_id"], "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}",
                      "--out", str(tmp_path / "out")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.strip().startswith("layer"))
    assert header.split() == ["layer", "op_type", "weights", "int8", "pal8", "pal6", "pal4", "pal2"]
    project = next(line for line in lines if line.strip().startswith("project"))
    assert project.split()[2] == "1,024" and project.rstrip().endswith("*")  # misses the budget alone at 2 bits
    assert (tmp_path / "out" / "sensitivity.png").stat().st_size > 1000
    missing = run_cli(["precision-sensitivity", "no-such-run", "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"], cwd=tmp_path)
    assert missing.returncode == 2 and "no run with id" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.slow
def test_a_search_that_meets_no_budget_still_answers_and_exits_1(tmp_path):
    """Every layer at a 1-bit palette: nothing meets 1 pp; the job finishes with the closest point,
    how far it misses and the layers holding it back, and the command exits 1."""
    store = tmp_path / "mlflow.db"
    result = run_cli(["precision-sweep", "precision=search", "target=ios16", "compute_units=cpu_only", "diagnosis=off",
                      "precision.search.choices=[pal1]", "precision.search.max_trials=2",
                      f"tracking.uri=sqlite:///{store}", f"paths.cache={tmp_path / 'cache'}",
                      f"hydra.run.dir={tmp_path / 'out'}"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "no point within the budget" in result.stderr and "Traceback" not in result.stderr
    runs = _runs(tmp_path)
    job = runs[runs["role"] == "job"].iloc[0]
    assert job["status"] == "FINISHED" and job["tags"]["search_budget_met"] == "false"
    summary = job["tags"]["search_summary"]
    assert "misses it by" in summary and "held back by" in summary and "pal1" in summary
    assert set(runs[runs["role"] == "search_trial"]["status"]) == {"FINISHED"}


@pytest.mark.slow
def test_nsga2_keeps_the_size_and_delta_front(demo, tmp_path):
    root, cache, _, _ = demo
    out = tmp_path / "nsga2"
    result = run_cli(["precision-sweep", "precision=search", "precision.search.sampler=nsga2", "precision.search.max_trials=16",
                      f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"paths.cache={cache}", *DEMO,
                      f"hydra.run.dir={out}"], cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    points = pd.read_csv(out / "search_points.csv")
    assert (points["source"] == "nsga2").sum() == 16
    front = points[points["on_front"]].sort_values("size_bytes")
    assert len(front) >= 2 and front["delta_pp"].is_monotonic_increasing  # bigger points on the front are more accurate
    assert (out / "search_front.png").stat().st_size > 1000
