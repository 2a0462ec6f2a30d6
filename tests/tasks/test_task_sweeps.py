"""task=regression|segmentation|embedding through real sweeps (issue 25, first slice): a tiny
Keras model built here, an npz dataset of its task, a real Hydra multirun (fp32, fp16, int8 x two
targets) into a real MLflow store, then precision-pick on the task's metric; and labels that do
not fit the outputs, refused before any conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweep_testing import mlflow_client, run_cli

GRID = ["precision=fp32,fp16,int8", "target=ios16,ios18", "compute_units=cpu_only", "diagnosis=off", "progress=false",
        "runtime.progress=false"]


def _regression(root: Path) -> tuple[Path, Path]:
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = np.stack([x[:, 0] - 2 * x[:, 1], np.sin(x[:, 2]) + x[:, 3] * x[:, 4]], axis=1).astype(np.float32)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    model.fit(x, y, epochs=40, verbose=0)
    return _save(root, model, x, y)


def _segmentation(root: Path) -> tuple[Path, Path]:
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(120, 8, 8, 1)).astype(np.float32)
    y = (x[..., 0] > 0.33).astype(np.int64) + (x[..., 0] > 0.66)  # three classes per pixel
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 1, activation="relu"),
                              keras.layers.Conv2D(3, 1, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, verbose=0)
    return _save(root, model, x, y)


def _embedding(root: Path) -> tuple[Path, Path]:
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(10, 12))
    ids = np.repeat(np.arange(10), 20)
    x = (centers[ids] + 0.7 * rng.normal(size=(200, 12))).astype(np.float32)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(8)])
    return _save(root, model, x, ids.astype(np.int64))


def _save(root: Path, model, x, y) -> tuple[Path, Path]:
    model_path, data_path = root / "model.keras", root / "data.npz"
    model.save(model_path)
    np.savez(data_path, x=x, y=y)
    return model_path, data_path


TASKS = {"regression": (_regression, "mae", False), "segmentation": (_segmentation, "miou", True),
         "embedding": (_embedding, "recall_at_1", True)}


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_task_sweeps_into_mlflow_with_its_metric_delta_ci_and_pick(tmp_path, task):
    build, primary, higher_is_better = TASKS[task]
    model_path, data_path = build(tmp_path)
    result = run_cli(["precision-sweep", "-m", f"task={task}", "model=keras", f"model.path={model_path}", "dataset=npz",
                      f"dataset.path={data_path}", "dataset.test_size=0.5", *GRID], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow_client(tmp_path / "outputs")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    jobs = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(jobs) == 6
    evaluated = [r for r in jobs if r.data.tags.get("precision_sweep.outcome") != "skipped"]
    assert evaluated and {r.info.status for r in evaluated} == {"FINISHED"}
    for run in evaluated:
        m = run.data.metrics
        assert run.data.params["task"] == task and run.data.tags["task_metric"] == primary
        assert m["metric_delta"] == pytest.approx(m[primary] - m[f"baseline_{primary}"])
        assert m["metric_delta_ci_low"] <= m["metric_delta"] <= m["metric_delta_ci_high"]
        assert m["metric_gain"] == pytest.approx(m["metric_delta"] if higher_is_better else -m["metric_delta"])
        assert m["metric_n_resamples"] == 2000 and m["model_size_bytes"] > 0
        assert "accuracy" not in m
    fp32 = [r for r in evaluated if r.data.params["precision"] == "fp32"]
    assert fp32 and all(abs(r.data.metrics["metric_delta"]) < 1e-3 for r in fp32)  # fp32 keeps TF's metric
    if task == "regression":  # int8 weights move a regressor's outputs: a measured, non-zero delta
        int8 = [r for r in evaluated if r.data.params["precision"] == "int8"]
        assert int8 and all(r.data.metrics["max_abs_diff"] > 1e-4 for r in int8)

    pick = run_cli(["precision-pick", "--max-drop", "50", "--tracking-uri", f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"],
                   cwd=tmp_path)
    assert pick.returncode == 0, pick.stderr[-2000:]
    assert "pick: run" in pick.stdout


@pytest.mark.slow
def test_segmentation_masks_of_the_wrong_size_are_refused_before_converting(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 1, activation="softmax")])
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.uniform(size=(20, 8, 8, 1)).astype(np.float32),
             y=rng.integers(0, 3, size=(20, 6, 6)))
    result = run_cli(["precision-sweep", "task=segmentation", "model=keras", f"model.path={model_path}", "dataset=npz",
                      f"dataset.path={tmp_path / 'data.npz'}", "diagnosis=off", "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "6 x 6 pixels" in result.stderr and "8" in result.stderr, result.stderr[-2000:]
    assert not list((tmp_path / "outputs").rglob("*.mlpackage"))  # nothing converted
    client = mlflow_client(tmp_path / "outputs")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert "RUNNING" not in {r.info.status for r in runs}


def test_a_task_on_a_dataset_of_class_folders_is_refused_with_the_fix(tmp_path):
    result = run_cli(["precision-sweep", "task=regression", "diagnosis=off", "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "dataset=npz" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_users_metric_by_target_is_compared_with_the_paired_bootstrap(tmp_path):
    """The user's function of (labels, outputs) -> float (here the library's own MAE, which any
    importable function can stand for), named by _target_ in the task config."""
    model_path, data_path = _regression(tmp_path)
    result = run_cli(["precision-sweep", "task=regression", "task.compare._target_=precision_sweep.metrics.tasks.user.compare",
                      "~task.compare.metrics", "+task.compare.metric=precision_sweep.metrics.tasks.regression.mae",
                      "+task.compare.higher_is_better=false", "model=keras", f"model.path={model_path}", "dataset=npz",
                      f"dataset.path={data_path}", "precision=int8", "target=ios18", "compute_units=cpu_only",
                      "diagnosis=off", "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow_client(tmp_path / "outputs")
    run = next(r for e in client.search_experiments() for r in client.search_runs([e.experiment_id]))
    m = run.data.metrics
    assert run.data.tags["task_metric"] == "mae" and m["metric_n_resamples"] == 2000
    assert m["metric_delta_ci_low"] <= m["metric_delta"] <= m["metric_delta_ci_high"]
    assert m["metric_gain"] == pytest.approx(-m["metric_delta"])


@pytest.mark.slow
def test_a_metric_target_that_cannot_be_imported_is_refused_in_one_paragraph(tmp_path):
    model_path, data_path = _regression(tmp_path)
    result = run_cli(["precision-sweep", "task=regression", "task.compare._target_=nowhere.metrics.mae", "model=keras",
                      f"model.path={model_path}", "dataset=npz", f"dataset.path={data_path}", "diagnosis=off",
                      "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "nowhere.metrics.mae" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "outputs").rglob("*.mlpackage"))


@pytest.mark.slow
def test_a_classification_of_an_output_that_is_not_class_scores_names_the_tasks(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 1, activation="softmax")])
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", x=np.zeros((10, 8, 8, 1), np.float32), y=np.zeros(10, np.int64))
    result = run_cli(["precision-sweep", "model=keras", f"model.path={tmp_path / 'model.keras'}", "dataset=npz",
                      f"dataset.path={tmp_path / 'data.npz'}", "diagnosis=off", "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "not (batch, classes)" in result.stderr and "task=segmentation" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("override", ["precision=search", "precision=fp16_auto", "model.classifier=true"])
def test_a_task_with_what_judges_classes_is_refused_before_anything_is_stored(tmp_path, override):
    store = tmp_path / "mlflow.db"
    result = run_cli(["precision-sweep", "task=regression", "target=ios18", override, f"tracking.uri=sqlite:///{store}",
                      f"hydra.run.dir={tmp_path / 'out'}"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "task=regression cannot be combined with" in result.stderr and "Traceback" not in result.stderr
    assert not store.exists() or not [r for e in mlflow_client(tmp_path).search_experiments()
                                       for r in mlflow_client(tmp_path).search_runs([e.experiment_id])]


@pytest.mark.slow
def test_a_task_metric_lost_beyond_its_ci_is_traced_to_the_ops(tmp_path):
    """1-bit palettized weights wreck the regressor's MAE: the loss lies beyond its CI, so the job
    runs the drift diagnosis as it does for a classifier that disagrees."""
    model_path, data_path = _regression(tmp_path)
    result = run_cli(["precision-sweep", "task=regression", "model=keras", f"model.path={model_path}", "dataset=npz",
                      f"dataset.path={data_path}", "precision=palettize", "precision.weight_palettization.nbits=1",
                      "target=ios18", "compute_units=cpu_only", "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow_client(tmp_path / "outputs")
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert run.data.metrics["metric_gain_ci_high"] < 0  # MAE worse, beyond the CI
    assert {"drift.csv", "drift.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.data.tags["drift_first_layer"]  # the layer the drift starts at, named
