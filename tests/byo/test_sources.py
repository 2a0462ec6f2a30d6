"""Bring your own model and data: real multiruns on tiny real models and datasets.

Each multirun is ``-m precision=fp32,fp16 target=ios16`` on a model file and a dataset written
by the test into ``tmp_path``; the child runs' metrics and params are checked in the real
MLflow store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from byo_helpers import (
    assert_store_intact,
    image_cnn,
    lambda_model,
    prepopulate,
    random_samples,
    tf_keras_gru,
    two_output_mlp,
    write_image_folder,
    write_npz,
)
from sweep_testing import compose, mlflow_client, run_cli

GRID = ["-m", "precision=fp32,fp16", "target=ios16", "runtime=emulator", "runtime.progress=false"]


def _sweep(tmp_path: Path, *overrides: str) -> tuple[list, object]:
    result = run_cli(["precision-sweep", *GRID, *overrides], cwd=tmp_path)
    client = mlflow_client(tmp_path / "outputs")
    experiment = client.get_experiment_by_name("precision-sweep")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    children = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    assert all(r.info.status != "RUNNING" for r in runs)
    return children, result


def _assert_measured(children, result, n_samples: int) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    by_precision = {r.data.params["precision"]: r for r in children}
    assert sorted(by_precision) == ["fp16", "fp32"]
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.metrics["n_samples"] == n_samples
        assert run.data.metrics["agreement"] >= 0.9
    assert by_precision["fp32"].data.metrics["agreement"] == 1.0
    assert by_precision["fp32"].data.metrics["max_abs_diff"] <= 1e-4
    return by_precision


@pytest.mark.slow
def test_keras_file_on_an_image_folder(tmp_path):
    image_cnn(shape=(12, 12, 3), classes=3).save(tmp_path / "cnn.keras")
    images = write_image_folder(tmp_path / "images", classes=("eel", "cat", "dog"), per_class=5, size=(16, 20))
    (images / "cat" / "README.txt").write_text("not an image\n")
    children, result = _sweep(
        tmp_path, "model=keras", f"model.path={tmp_path / 'cnn.keras'}",
        "dataset=image_folder", f"dataset.path={images}", "dataset.test_size=0.8",
    )
    runs = _assert_measured(children, result, n_samples=12)
    params = runs["fp16"].data.tags  # a source's details are provenance: tags
    assert params["dataset_classes"] == "cat,dog,eel"  # sorted folder names = label order
    assert params["dataset_skipped_files"] == "1"
    assert params["dataset_n_calib"] == "3"
    assert params["model_safe_mode"] == "True" and params["model_source"] == "keras"
    assert len(params["dataset_hash"]) == 16
    logs = "".join(p.read_text() for p in (tmp_path / "outputs").rglob("*.log"))
    assert "skipped 1 file(s)" in logs and "README.txt" in logs


@pytest.mark.slow
def test_saved_model_with_a_chosen_signature_and_output(tmp_path):
    two_output_mlp(features=6, classes=4).export(str(tmp_path / "exported"), verbose=False)
    x, y = random_samples(20, (6,), 4)
    data = write_npz(tmp_path / "features.npz", x, y)
    children, result = _sweep(
        tmp_path, "model=saved_model", f"model.path={tmp_path / 'exported'}", "model.signature=serve",
        "model.output=output_0", "dataset=npz", f"dataset.path={data}", "dataset.test_size=1.0",
    )
    runs = _assert_measured(children, result, n_samples=20)
    params = runs["fp32"].data.tags
    assert params["model_signature"] == "serve" and params["model_output"] == "output_0"
    assert params["model_input"] == "feat [6] float32"


@pytest.mark.slow
def test_h5_file_with_logits_on_npz(tmp_path):
    image_cnn(shape=(12, 12, 3), classes=3, logits=True).save(tmp_path / "cnn.h5")
    x, y = random_samples(16, (12, 12, 3), 3)
    data = write_npz(tmp_path / "images.npz", (x * 255).astype(np.uint8), y)
    children, result = _sweep(
        tmp_path, "model=keras", f"model.path={tmp_path / 'cnn.h5'}", "model.outputs_are=logits",
        "dataset=npz", f"dataset.path={data}", "dataset.scale=0.00392156862745098",
        "dataset.mean=[0.5]", "dataset.std=[0.25]", "dataset.test_size=0.5",
    )
    runs = _assert_measured(children, result, n_samples=8)
    assert runs["fp16"].data.tags["model_outputs_are"] == "logits"


@pytest.mark.slow
def test_tf_keras_gru_on_sequences(tmp_path):
    pytest.importorskip("tf_keras")
    tf_keras_gru(steps=5, features=3, classes=4).save(tmp_path / "gru.h5")
    x, y = random_samples(20, (5, 3), 4)
    data = write_npz(tmp_path / "seqs.npz", x, y)
    children, result = _sweep(
        tmp_path, "model=tf_keras", f"model.path={tmp_path / 'gru.h5'}", "dataset=npz",
        f"dataset.path={data}", "dataset.test_size=1.0",
    )
    _assert_measured(children, result, n_samples=20)


def test_tf_keras_gru_converts_where_keras3_does_not(tmp_path):
    """tf_keras loads a Keras 2 GRU as a concrete function that coremltools converts."""
    pytest.importorskip("tf_keras")
    import coremltools as ct

    from precision_sweep.data import load_inputs

    tf_keras_gru().save(tmp_path / "gru.keras")
    write_npz(tmp_path / "seqs.npz", *random_samples(10, (5, 3), 4))
    cfg = compose(["model=tf_keras", f"model.path={tmp_path / 'gru.keras'}", "dataset=npz",
                   f"dataset.path={tmp_path / 'seqs.npz'}", "dataset.test_size=1.0"])
    dataset, model = load_inputs(cfg.model, cfg.dataset, tmp_path / "cache")
    assert model.input_shape == (5, 3) and model.n_outputs == 4 and model.input_name == "seq"
    program = ct.convert(
        model.keras_model, source="tensorflow", convert_to="milinternal",
        inputs=[ct.TensorType(name=model.input_name, shape=(1, *model.input_shape))],
        minimum_deployment_target=ct.target.iOS16, pass_pipeline=ct.PassPipeline.EMPTY,
    )
    assert "while_loop" in {op.op_type for op in program.functions["main"].operations}
    baseline = model.predict_fn(dataset.x_test)
    assert baseline.shape == (10, 4) and np.allclose(baseline.sum(axis=1), 1.0, atol=1e-5)


def test_lambda_model_is_refused_by_default_and_runs_with_the_opt_in(outputs, capsys, tmp_path):
    from precision_sweep.app import run_task
    from precision_sweep.job import run_job

    lambda_model(features=6, classes=3).save(tmp_path / "lambda.keras")
    data = write_npz(tmp_path / "d.npz", *random_samples(12, (6,), 3))
    common = [f"paths.outputs={outputs}", "runtime=emulator", "runtime.progress=false", "precision=fp32",
              "model=keras", f"model.path={tmp_path / 'lambda.keras'}", "dataset=npz", f"dataset.path={data}"]
    earlier = prepopulate(outputs)
    with pytest.raises(SystemExit) as exit_info:
        run_task(compose(common))  # as the command runs a job
    assert exit_info.value.code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "contains Lambda layer(s) double" in message and "model.safe_mode=false" in message
    assert_store_intact(outputs, earlier)

    metrics = run_job(compose([*common, "model.safe_mode=false"]))
    assert metrics["agreement"] == 1.0
    client = mlflow_client(outputs)
    runs = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id],
                              filter_string="attributes.status = 'FINISHED'")
    opted = [r for r in runs if r.data.tags.get("model_safe_mode") == "False"]
    assert len(opted) == 1 and opted[0].data.tags["model_lambda_layers"] == "double"
