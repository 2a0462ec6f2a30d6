"""The model the app ships: ``model.input_type=image`` (a Core ML ImageType fed 8-bit pixels)
and ``model.classifier=true`` (ct.ClassifierConfig, accuracy read from classLabel), with real
conversions of the embedded digits model and of tiny Keras models, and real MLflow stores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from byo_helpers import refused, two_output_mlp
from sweep_testing import compose, mlflow_client, run_cli

APP = ["model.input_type=image", "model.classifier=true"]


def _job(outputs: Path, cache: Path, *overrides):
    from precision_sweep.job import run_job

    metrics = run_job(compose([f"paths.outputs={outputs}", f"paths.cache={cache}", "runtime.progress=false", *overrides]))
    client = mlflow_client(outputs)
    (run,) = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    return metrics, run, client


def _package(client, run, tmp_path: Path) -> Path:
    (name,) = [a.path for a in client.list_artifacts(run.info.run_id) if a.path.endswith(".mlpackage")]
    return Path(client.download_artifacts(run.info.run_id, name, str(tmp_path)))


def _description(package: Path):
    import coremltools as ct

    return ct.models.MLModel(str(package), skip_model_load=True).get_spec().description


def test_fp32_cpu_only_image_classifier_agrees_with_tf_and_reads_class_label(outputs, shared_cache, tmp_path):
    from coremltools.proto import FeatureTypes_pb2

    from precision_sweep.data.loading import load_dataset
    from precision_sweep.emulator import Emulator

    metrics, run, client = _job(outputs, shared_cache, *APP, "precision=fp32", "compute_units=cpu_only")
    assert run.info.status == "FINISHED"
    assert metrics["agreement"] == 1.0 and metrics["accuracy_delta"] == 0.0
    assert run.data.params["input_type"] == "image" and run.data.params["classifier"] == "true"
    assert run.data.params["image_type"] == "scale=0.0625 bias=[0.0] color_layout=GRAYSCALE"
    assert run.data.tags["accuracy_from"] == "classLabel"

    package = _package(client, run, tmp_path)
    description = _description(package)
    (image_input,) = description.input
    assert image_input.type.WhichOneof("Type") == "imageType"
    assert FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image_input.type.imageType.colorSpace) == "GRAYSCALE"
    assert description.predictedFeatureName == "classLabel"
    assert [o.name for o in description.output] == ["classLabel", "classLabel_probs"]

    # what an app does: 8-bit pixels in, the label read out; accuracy recomputed from it
    dataset = load_dataset(compose(["dataset=digits"]).dataset, cache_dir=shared_cache)
    emulator = Emulator(package, "cpu_only")
    assert emulator.classifier() == ("classLabel", "classLabel_probs", [str(i) for i in range(10)])
    pixels = np.transpose(dataset.pixels_test, (0, 3, 1, 2))
    assert pixels.max() == 16 and np.all(np.mod(pixels, 1) == 0)  # the digits' own 0..16 levels
    labels = emulator.predict({"image": pixels})["classLabel"]
    assert metrics["accuracy"] == pytest.approx(float(np.mean(labels == np.array(dataset.class_names)[dataset.y_test])))


@pytest.mark.parametrize("target, layout", [("ios15", "GRAYSCALE"), ("ios16", "GRAYSCALE_FLOAT16")])
def test_fp16_grayscale_input_is_float16_where_the_target_allows_it(outputs, shared_cache, tmp_path, target, layout):
    from coremltools.proto import FeatureTypes_pb2

    from precision_sweep.emulator import Emulator

    metrics, run, client = _job(outputs, shared_cache, *APP, "precision=fp16", f"target={target}", "compute_units=all")
    assert run.info.status == "FINISHED" and metrics["agreement"] >= 0.99
    package = _package(client, run, tmp_path)
    (image_input,) = _description(package).input
    assert FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image_input.type.imageType.colorSpace) == layout
    (dtype,) = [d for _, d in Emulator(package, "all").plan.inputs.values()]
    assert dtype == (np.float16 if layout == "GRAYSCALE_FLOAT16" else np.float32)
    assert run.data.params["image_type"].endswith(f"color_layout={layout}")


def test_the_default_interface_is_unchanged(outputs, shared_cache, tmp_path):
    metrics, run, client = _job(outputs, shared_cache, "precision=fp32", "compute_units=cpu_only")
    (tensor_input,) = _description(_package(client, run, tmp_path)).input
    assert tensor_input.type.WhichOneof("Type") == "multiArrayType"
    assert run.data.tags["accuracy_from"] == "top-1" and "image_type" not in run.data.params


def test_a_classifier_with_integer_classes_and_a_cached_plan(tmp_path):
    """classify as its op definition says: the label of the largest probability, ties to the
    first class; int64 classes stay int64; a plan read back from the cache gives the same."""
    import coremltools as ct
    import keras

    from precision_sweep.emulator import Execution
    from precision_sweep.emulator.ops.classify import classify

    labels, probabilities = classify(np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]], np.float32), np.array([7, 8, 9]))
    assert labels.tolist() == [8, 7] and probabilities.dtype == np.float32

    inputs = keras.Input((4,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    mlmodel = ct.convert(model, inputs=[ct.TensorType(name="features", shape=(1, 4))],
                         classifier_config=ct.ClassifierConfig([10, 20, 30]), minimum_deployment_target=ct.target.iOS16,
                         skip_model_load=True)
    mlmodel.save(str(tmp_path / "ints.mlpackage"))
    x = np.random.default_rng(0).random((1, 4)).astype(np.float32)
    expected = [10, 20, 30][int(np.argmax(model.predict(x, verbose=0)))]
    for _ in range(2):  # compiled, then read from the plan cache (no pickle: int64 classes as an array)
        emulator = Execution("cpu_only", plan_cache=str(tmp_path / "plans")).emulator(tmp_path / "ints.mlpackage")
        out = emulator.predict({"features": x})
        assert out["classLabel"].dtype == np.int64 and out["classLabel"].tolist() == [expected]
    assert any((tmp_path / "plans").rglob("*.json"))


# -- bad input ------------------------------------------------------------------------------------


def _refused(outputs: Path, capsys, *overrides) -> str:
    from precision_sweep.app import run_task

    cfg = compose([f"paths.outputs={outputs}", "runtime.progress=false", "precision=fp32", *overrides])
    return refused(outputs, capsys, "precision-sweep", lambda: run_task(cfg))


def test_image_input_for_a_model_whose_input_is_not_an_image(outputs, tmp_path, capsys):
    model = two_output_mlp(features=6, classes=4)
    path = tmp_path / "mlp.keras"
    model.save(path)
    x = np.random.default_rng(0).integers(0, 255, (40, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 4)
    message = _refused(outputs, capsys, "model=keras", f"model.path={path}", "model.output=0", "dataset=npz",
                       f"dataset.path={tmp_path / 'd.npz'}", "model.input_type=image")
    assert "model.input_type=image" in message and "not an image" in message and "(6,)" in message


def test_image_input_with_samples_that_are_not_pixels(outputs, tmp_path, capsys):
    from byo_helpers import image_cnn

    image_cnn(shape=(8, 8, 3), classes=3).save(tmp_path / "cnn.keras")
    x = np.random.default_rng(0).random((30, 8, 8, 3)).astype(np.float32)  # already scaled floats
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3)
    message = _refused(outputs, capsys, "model=keras", f"model.path={tmp_path / 'cnn.keras'}", "dataset=npz",
                       f"dataset.path={tmp_path / 'd.npz'}", "model.input_type=image")
    assert "8-bit pixels" in message and "not whole numbers" in message


def test_a_per_channel_std_has_no_image_type(outputs, tmp_path, capsys):
    from byo_helpers import image_cnn

    image_cnn(shape=(8, 8, 3), classes=3).save(tmp_path / "cnn.keras")
    x = np.random.default_rng(0).integers(0, 256, (30, 8, 8, 3)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3)
    message = _refused(outputs, capsys, "model=keras", f"model.path={tmp_path / 'cnn.keras'}", "dataset=npz",
                       f"dataset.path={tmp_path / 'd.npz'}", "model.input_type=image", "dataset.scale=0.00392156862745098",
                       "dataset.mean=[0.485,0.456,0.406]", "dataset.std=[0.229,0.224,0.225]")
    assert "one scale for every channel" in message and "Normalization layer" in message


def test_a_classifier_needs_one_class_name_per_output(outputs, tmp_path, capsys):
    from byo_helpers import image_cnn

    image_cnn(shape=(8, 8, 3), classes=4).save(tmp_path / "cnn.keras")
    x = np.random.default_rng(0).integers(0, 256, (30, 8, 8, 3)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3, class_names=np.array(["a", "b", "c"]))
    message = _refused(outputs, capsys, "model=keras", f"model.path={tmp_path / 'cnn.keras'}", "dataset=npz",
                       f"dataset.path={tmp_path / 'd.npz'}", "model.classifier=true")
    assert "outputs 4 classes and the dataset names 3" in message


def test_preprocessing_values_convert_between_config_and_image_type():
    from omegaconf import OmegaConf

    from precision_sweep.data.preprocessing import Preprocessing

    cfg = OmegaConf.create({"scale": 1 / 127.5, "mean": [1.0], "std": None, "channel_order": "bgr"})
    value = Preprocessing.from_dataset(cfg, 3)
    assert value.close_to(Preprocessing.from_image_type(2 / 255, [-1, -1, -1], "BGR"))
    assert value.image_type_source() == "ct.ImageType(scale=2/255, bias=[-1.0, -1.0, -1.0], color_layout=ct.colorlayout.BGR)"
    assert value.describe() == "[-1, 1] BGR"
    pixels = np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3)
    np.testing.assert_allclose(value.apply(pixels), pixels[..., ::-1] / 127.5 - 1.0, rtol=1e-6)
    imagenet = OmegaConf.create({"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                 "channel_order": "rgb"})
    from precision_sweep.errors import UserInputError

    with pytest.raises(UserInputError, match="one scale for every channel"):
        Preprocessing.from_dataset(imagenet, 3).image_type_arguments()


@pytest.mark.slow
def test_an_image_classifier_sweep_over_precision_target_and_compute_units(tmp_path):
    """The standard conversion (ImageType + ClassifierConfig) as a real multirun grid."""
    outputs = tmp_path / "outputs"
    result = run_cli(["precision-sweep", "-m", "precision=fp32,fp16,int8", "target=ios15,ios16",
                      "compute_units=cpu_only,all", *APP, f"paths.outputs={outputs}", "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow_client(outputs)
    runs = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    jobs = {(r.data.params["precision"], r.data.params["target"], r.data.params["compute_units"]): r for r in runs
            if r.data.tags.get("mlflow.parentRunId")}
    assert len(jobs) == 12
    evaluated = {k: r for k, r in jobs.items() if r.info.status == "FINISHED" and "agreement" in r.data.metrics}
    assert set(evaluated) == {k for k in jobs if not (k[0] == "int8" and k[1] == "ios15")}
    for key, run in evaluated.items():
        assert run.data.tags["accuracy_from"] == "classLabel", key
        assert run.data.params["input_type"] == "image", key
    assert evaluated[("fp32", "ios15", "cpu_only")].data.metrics["agreement"] == 1.0
    assert evaluated[("fp32", "ios16", "cpu_only")].data.metrics["agreement"] == 1.0


def test_an_auto_repair_recipe_with_the_app_interface_is_skipped_before_converting(outputs, shared_cache):
    from precision_sweep.job import run_job

    assert run_job(compose([f"paths.outputs={outputs}", f"paths.cache={shared_cache}", "runtime.progress=false",
                            "precision=fp16_auto", *APP])) is None
    client = mlflow_client(outputs)
    (run,) = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    assert run.data.tags.get("precision_sweep.outcome") == "skipped", run.data.tags
    assert not any(a.path.endswith(".mlpackage") for a in client.list_artifacts(run.info.run_id))
