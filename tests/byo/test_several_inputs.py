"""Models with several named inputs (issue 25): a two-input text classifier (int32 token ids and
an int32 padding mask) built and trained here, fed from an npz holding one array per input and
from a user's function yielding ``({name: batch}, labels)``; through a real sweep into MLflow
with its accuracy, CI and pick, and each input mistake refused in one paragraph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweep_testing import mlflow_client, run_cli

from byo_dataset_functions import TEXT_CLASSES as CLASSES
from byo_dataset_functions import TEXT_LENGTH as LENGTH
from byo_dataset_functions import TEXT_VOCABULARY as VOCABULARY
from byo_dataset_functions import text_arrays as _text_data

BYO = Path(__file__).parent


def text_classifier(root: Path, epochs: int = 40) -> tuple[Path, Path]:
    """A masked mean of token embeddings -> dense -> softmax, saved as .keras, and its npz."""
    import keras

    keras.utils.set_random_seed(0)
    tokens, mask, y = _text_data()
    ids = keras.Input((LENGTH,), dtype="int32", name="token_ids")
    padding = keras.Input((LENGTH,), dtype="int32", name="padding_mask")
    embedded = keras.layers.Embedding(VOCABULARY, 16)(ids)
    weights = keras.ops.expand_dims(keras.ops.cast(padding, "float32"), -1)
    pooled = keras.ops.sum(embedded * weights, axis=1) / keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)
    first = keras.layers.Flatten()(keras.layers.Embedding(VOCABULARY, 8)(ids[:, :1]))
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Concatenate()([pooled, first]))
    model = keras.Model([ids, padding], keras.layers.Dense(CLASSES, activation="softmax", name="probs")(hidden))
    model.compile("adam", "sparse_categorical_crossentropy")
    if epochs:
        model.fit({"token_ids": tokens, "padding_mask": mask}, y, epochs=epochs, verbose=0)
    model_path, data_path = root / "text.keras", root / "text.npz"
    model.save(model_path)
    np.savez(data_path, token_ids=tokens, padding_mask=mask, y=y)
    return model_path, data_path


def _runs(outputs: Path) -> list:
    client = mlflow_client(outputs)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_named_samples_index_every_input_alike_and_hash_by_name():
    from precision_sweep.samples import NamedSamples, feeds_of, hash_parts

    tokens, mask, _ = _text_data(n=20)
    samples = NamedSamples({"token_ids": tokens, "padding_mask": mask})
    picked = samples[np.array([3, 1])]
    assert len(samples) == 20 and len(samples[5:9]) == 4
    assert np.array_equal(picked.arrays["token_ids"], tokens[[3, 1]]) and np.array_equal(picked.arrays["padding_mask"], mask[[3, 1]])
    assert set(feeds_of(samples, "ignored")) == {"token_ids", "padding_mask"}
    assert [a.shape for a in hash_parts(samples)] == [mask.shape, tokens.shape]  # by name: padding_mask first
    with pytest.raises(ValueError, match="different numbers of samples"):
        NamedSamples({"token_ids": tokens, "padding_mask": mask[:5]})


@pytest.mark.slow
def test_a_two_input_text_classifier_sweeps_into_mlflow_with_its_ci_and_pick(tmp_path):
    model_path, data_path = text_classifier(tmp_path)
    result = run_cli(["precision-sweep", "-m", "model=keras", f"model.path={model_path}", "dataset=npz",
                      f"dataset.path={data_path}", "dataset.test_size=0.5", "precision=fp32,fp16,int8",
                      "target=ios16,ios18", "compute_units=cpu_only", "progress=false", "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [r for r in _runs(tmp_path / "outputs") if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(jobs) == 6 and {r.info.status for r in jobs} == {"FINISHED"}
    for run in jobs:
        m = run.data.metrics
        assert run.data.tags["model_input"] == "token_ids [10] int32, padding_mask [10] int32"
        assert run.data.tags["dataset_n_test"] == "150"
        assert m["baseline_accuracy"] > 0.6  # the trained classifier, not chance (1/3)
        assert m["accuracy_delta_ci_low"] <= m["accuracy_delta"] <= m["accuracy_delta_ci_high"]
        assert 0 < m["agreement"] <= 1 and m["model_size_bytes"] > 0
    fp32 = [r for r in jobs if r.data.params["precision"] == "fp32"]
    assert all(r.data.metrics["max_abs_diff"] < 1e-4 and r.data.metrics["agreement"] == 1.0 for r in fp32)
    int8 = [r for r in jobs if r.data.params["precision"] == "int8"]
    assert all(r.data.metrics["max_abs_diff"] > 0 for r in int8)  # the embedding's int8 weights move the scores
    pick = run_cli(["precision-pick", "--max-drop", "5", "--tracking-uri", f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"],
                   cwd=tmp_path)
    assert pick.returncode == 0, pick.stderr[-2000:]
    assert "pick: run" in pick.stdout


@pytest.mark.slow
def test_named_batches_of_a_users_function_and_calibrated_activations(tmp_path, monkeypatch):
    """dataset=python yielding dicts by input name; w8a8 calibrates both inputs' program."""
    model_path, _ = text_classifier(tmp_path)
    result = run_cli(["precision-sweep", "model=keras", f"model.path={model_path}", "dataset=python",
                      "dataset.target=byo_dataset_functions.text_batches", "dataset.test_size=0.5", "precision=w8a8",
                      "target=ios18", "compute_units=cpu_only", "runtime.progress=false"], cwd=tmp_path,
                     env={"PYTHONPATH": str(BYO)})
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = _runs(tmp_path / "outputs")
    assert run.info.status == "FINISHED" and run.data.tags["dataset_n_test"] == "100"
    assert run.data.metrics["accuracy_delta_ci_low"] <= run.data.metrics["accuracy_delta"]


@pytest.mark.slow
def test_an_image_input_type_for_a_several_input_model_is_one_paragraph_exit_2(tmp_path):
    """Through the CLI: exit 2, one paragraph, nothing converted, no run left RUNNING."""
    model_path, data_path = text_classifier(tmp_path, epochs=0)
    result = run_cli(["precision-sweep", "model=keras", f"model.path={model_path}", "dataset=npz",
                      f"dataset.path={data_path}", "precision=fp16", "target=ios18", "diagnosis=off",
                      "runtime.progress=false", "model.input_type=image"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Set model.input_type=tensor" in " ".join(result.stderr.split()), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "outputs").rglob("*.mlpackage"))  # nothing converted
    assert "RUNNING" not in {r.info.status for r in _runs(tmp_path / "outputs")}


@pytest.mark.parametrize("case", ["missing_array", "one_array", "input_shape"])
def test_data_mistakes_of_a_several_input_model_are_refused_while_loading(tmp_path, case):
    """The job's own loading (load_inputs, before the baseline): the paragraph names the fix."""
    from precision_sweep.data import load_inputs
    from precision_sweep.errors import UserInputError
    from sweep_testing import compose

    model_path, data_path = text_classifier(tmp_path, epochs=0)
    tokens, _, y = _text_data(n=40)
    extra = []
    if case == "missing_array":
        np.savez(data_path, token_ids=tokens, y=y)
        expected = "no array padding_mask"
    elif case == "one_array":
        np.savez(data_path, x=tokens, y=y)
        expected = "no array token_ids or padding_mask"
    else:
        extra = ["model.input_shape=[10]"]
        expected = "describe a single input"
    cfg = compose(["model=keras", f"model.path={model_path}", "dataset=npz", f"dataset.path={data_path}", *extra])
    with pytest.raises(UserInputError) as info:
        load_inputs(cfg.model, cfg.dataset, tmp_path / "cache")
    assert expected in " ".join(str(info.value).split())
