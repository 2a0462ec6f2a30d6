"""Models with several outputs (issue 25): every output is converted, matched by name between TF
and Core ML, and its drift logged (``max_abs_diff/<output>``, ``agreement/<output>`` where it
holds class probabilities); the output named by ``model.output`` is the one judged. A real
Keras model with a class head and a value head, a real sweep into MLflow, and an output name
that does not exist refused in one paragraph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweep_testing import mlflow_client, run_cli


def two_headed(root: Path, epochs: int = 30) -> tuple[Path, Path]:
    """Class probabilities ("probs", judged) and a regression head ("value") on one trunk."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    inputs = keras.Input((6,), name="features")
    trunk = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(3, activation="softmax", name="probs")(trunk),
                                 keras.layers.Dense(2, name="value")(trunk)])
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    if epochs:
        model.fit(x, [y, x[:, :2]], epochs=epochs, verbose=0)
    model_path, data_path = root / "two_heads.keras", root / "data.npz"
    model.save(model_path)
    np.savez(data_path, x=x, y=y)
    return model_path, data_path


def _runs(outputs: Path) -> list:
    client = mlflow_client(outputs)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.mark.slow
def test_every_output_drifts_by_name_through_a_sweep(tmp_path):
    model_path, data_path = two_headed(tmp_path)
    result = run_cli(["precision-sweep", "-m", "model=keras", f"model.path={model_path}", "model.output=probs",
                      "dataset=npz", f"dataset.path={data_path}", "precision=fp32,fp16,int8", "target=ios16,ios18",
                      "compute_units=cpu_only", "progress=false", "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [r for r in _runs(tmp_path / "outputs") if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(jobs) == 6 and {r.info.status for r in jobs} == {"FINISHED"}
    for run in jobs:
        m = run.data.metrics
        # the judged output is "probs": its drift is the job's max_abs_diff and agreement
        assert m["max_abs_diff/probs"] == m["max_abs_diff"] and m["agreement/probs"] == m["agreement"]
        assert "max_abs_diff/value" in m and "mean_abs_diff/value" in m
        assert "agreement/value" not in m  # a regression head has no top-1
        assert m["accuracy_delta_ci_low"] <= m["accuracy_delta"] <= m["accuracy_delta_ci_high"]
    by_precision = {(r.data.params["precision"], r.data.params["target"]): r.data.metrics for r in jobs}
    assert all(by_precision[("fp32", t)]["max_abs_diff/value"] < 1e-4 for t in ("ios16", "ios18"))
    assert all(by_precision[(p, t)]["max_abs_diff/value"] > 1e-5 for p in ("fp16", "int8") for t in ("ios16", "ios18"))
    pick = run_cli(["precision-pick", "--max-drop", "5", "--tracking-uri", f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"],
                   cwd=tmp_path)
    assert pick.returncode == 0 and "pick: run" in pick.stdout, pick.stderr[-2000:]


def test_an_output_name_that_does_not_exist_names_the_outputs(tmp_path):
    from precision_sweep.data import load_inputs
    from precision_sweep.errors import UserInputError
    from sweep_testing import compose

    model_path, data_path = two_headed(tmp_path, epochs=0)
    cfg = compose(["model=keras", f"model.path={model_path}", "model.output=score", "dataset=npz", f"dataset.path={data_path}"])
    with pytest.raises(UserInputError) as info:
        load_inputs(cfg.model, cfg.dataset, tmp_path / "cache")
    message = " ".join(str(info.value).split())
    assert "model.output=score is not an output" in message and "probs, value" in message
