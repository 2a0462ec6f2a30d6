"""``precision-compare``: a Core ML file the user converted, against its Keras source.

Real parts: a small RGB CNN trained here (tests/app_models.py), files converted with
``ct.convert(model, inputs=[ct.ImageType(...)], classifier_config=ct.ClassifierConfig(...))``
as an app's are, right or wrong, and the real command run in-process (its ``main``) on a real
MLflow store under ``tmp_path``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import app_models
from byo_helpers import image_cnn, refused, store_state

TWO_OVER_255 = ["dataset.scale=0.00784313725490196", "dataset.mean=[1.0]"]  # pixels -> [-1, 1], as the core was trained


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("app_files")
    core = app_models.train_core()
    rescaling = app_models.with_rescaling(core)
    paths = {"core": root / "core.keras", "rescaling": root / "rescaling.keras", "data": root / "digits_rgb.npz"}
    core.save(paths["core"])
    rescaling.save(paths["rescaling"])
    app_models.save_npz(paths["data"])
    convert = app_models.convert_file
    paths["right"] = convert(core, root / "right.mlpackage", 2 / 255, [-1, -1, -1])
    paths["range01"] = convert(core, root / "range01.mlpackage", 1 / 255, [0, 0, 0])
    paths["bgr"] = convert(core, root / "bgr.mlpackage", 2 / 255, [-1, -1, -1], "BGR")
    paths["double"] = convert(rescaling, root / "double.mlpackage", 2 / 255, [-1, -1, -1])
    paths["rescaling_right"] = convert(rescaling, root / "rescaling_right.mlpackage", 1.0, [0, 0, 0])
    return paths


def _compare(capsys, model: Path, coreml: Path, data: Path, outputs: Path, *overrides) -> str:
    """Run the command in-process; it must return (exit 0) and print its report."""
    from precision_sweep.cli.compare import main

    main([str(model), str(coreml), str(data), f"paths.outputs={outputs}", "dataset.test_size=0.5", *overrides])
    return capsys.readouterr().out


def _run(outputs: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("precision-sweep")
    (run,) = client.search_runs([experiment.experiment_id])
    return run


def _image_type(text: str) -> tuple[float, list[float], str]:
    """The ``ct.ImageType(...)`` arguments the doctor printed, as values."""
    match = re.search(r"ct\.ImageType\(scale=([^,]+), bias=\[([^\]]*)\], color_layout=ct\.colorlayout\.(\w+)\)", text)
    assert match, text

    def value(token: str) -> float:
        token = token.strip()
        if "/" in token:
            numerator, denominator = token.split("/")
            return float(numerator) / float(denominator)
        return float(token)

    return value(match.group(1)), [value(t) for t in match.group(2).split(",")], match.group(3)


@pytest.mark.parametrize(
    "case, model, tf_side, cause",
    [
        ("double", "rescaling", ["dataset.scale=1.0"], "double scaling"),
        ("bgr", "core", TWO_OVER_255, "swapped channel order"),
        ("range01", "core", TWO_OVER_255, "input range: the file gives [0, 1] to a model that expects [-1, 1]"),
    ],
)
def test_a_wrong_file_is_diagnosed_and_the_printed_image_type_fixes_it(files, tmp_path, capsys, case, model, tf_side, cause):
    import keras

    out = _compare(capsys, files[model], files[case], files["data"], tmp_path / "wrong", *tf_side)
    assert "Preprocessing doctor" in out and cause in out, out
    run = _run(tmp_path / "wrong")
    assert run.info.status == "FINISHED"
    assert run.data.params["precision"] == "file" and run.data.tags["accuracy_from"] == "classLabel"
    assert run.data.metrics["agreement"] < 0.99
    assert run.data.metrics["accuracy_delta"] < 0  # the drop is shown
    assert cause.split(":")[0] in run.data.tags["preprocessing_cause"]
    assert run.data.tags["mlflow.note.content"].startswith("Preprocessing doctor")

    scale, bias, layout = _image_type(out)
    fixed = app_models.convert_file(keras.models.load_model(files[model]), tmp_path / "fixed.mlpackage", scale, bias, layout)
    out = _compare(capsys, files[model], fixed, files["data"], tmp_path / "fixed_store", *tf_side)
    run = _run(tmp_path / "fixed_store")
    assert run.data.metrics["agreement"] == 1.0, out
    assert "verdict: the file agrees with TF" in out and "Preprocessing doctor" not in out
    assert "preprocessing_doctor" not in run.data.tags


@pytest.mark.parametrize("case, model, tf_side", [("right", "core", TWO_OVER_255),
                                                  ("rescaling_right", "rescaling", ["dataset.scale=1.0"])])
def test_a_correct_file_is_never_flagged(files, tmp_path, capsys, case, model, tf_side):
    out = _compare(capsys, files[model], files[case], files["data"], tmp_path, *tf_side, "compute_units=cpu_only")
    run = _run(tmp_path)
    assert run.data.metrics["agreement"] == 1.0
    assert run.data.metrics["accuracy"] == run.data.metrics["baseline_accuracy"] > 0.9
    assert "preprocessing_doctor" not in run.data.tags and "Preprocessing doctor" not in out
    assert f"TF {100 * run.data.metrics['baseline_accuracy']:.2f}%" in out


def test_the_doctor_reads_the_file_s_own_preprocessing(files):
    from precision_sweep.data.preprocessing import Preprocessing
    from precision_sweep.diagnose.preprocessing import file_preprocessing
    from precision_sweep.emulator import Emulator

    read = file_preprocessing(Emulator(files["bgr"], "cpu_only"), "BGR")
    assert read.close_to(Preprocessing.from_image_type(2 / 255, [-1, -1, -1], "BGR"))
    assert read.describe() == "[-1, 1] BGR"
    assert not read.close_to(Preprocessing.from_image_type(2 / 255, [-1, -1, -1], "RGB"))


# -- bad input: one paragraph, exit 2, nothing RUNNING, nothing lost -------------------------------


def _refused(capsys, outputs: Path, *args) -> str:
    from precision_sweep.cli.compare import main

    return refused(outputs, capsys, "precision-compare",
                   lambda: main([*map(str, args), f"paths.outputs={outputs}", "dataset.test_size=0.5"]))


def test_an_input_whose_name_does_not_fit_the_model(files, tmp_path, capsys):
    import coremltools as ct
    import keras

    inputs = keras.Input((8, 8, 3), name="pixels")  # another model's file, its input named otherwise
    other = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    mlmodel = ct.convert(other, inputs=[ct.ImageType(name="pixels", shape=(1, 8, 8, 3), scale=2 / 255, bias=[-1, -1, -1])],
                         classifier_config=ct.ClassifierConfig(app_models.CLASS_NAMES), minimum_deployment_target=ct.target.iOS16, skip_model_load=True)
    mlmodel.save(str(tmp_path / "renamed.mlpackage"))
    message = _refused(capsys, tmp_path / "out", files["core"], tmp_path / "renamed.mlpackage", files["data"], *TWO_OVER_255)
    assert "named 'pixels'" in message and "'image'" in message and "matched by name" in message


def test_an_image_size_that_does_not_fit_the_data(files, tmp_path, capsys):
    import coremltools as ct

    twelve = image_cnn(shape=(12, 12, 3), classes=10)  # a file of 12x12 images against the 8x8 data
    mlmodel = ct.convert(twelve, inputs=[ct.ImageType(name="image", shape=(1, 12, 12, 3), scale=2 / 255, bias=[-1, -1, -1])],
                         minimum_deployment_target=ct.target.iOS16, skip_model_load=True)
    mlmodel.save(str(tmp_path / "big.mlpackage"))
    message = _refused(capsys, tmp_path / "out", files["core"], tmp_path / "big.mlpackage", files["data"], *TWO_OVER_255)
    assert "takes 12x12 RGB images" in message and "8x8" in message


@pytest.mark.parametrize("labels, words", [
    ([f"class_{i}" for i in range(10)], "labels that differ from the dataset's classes"),
    ([f"digit_{i}" for i in range(9)], "9 labels but the dataset has 10 classes"),
])
def test_classifier_labels_that_do_not_match_the_dataset(files, tmp_path, capsys, labels, words):
    import coremltools as ct
    import keras

    model = keras.models.load_model(files["core"])
    if len(labels) != 10:  # a 9-class head on the same features
        model = keras.Model(model.inputs, keras.layers.Dense(9, activation="softmax")(model.layers[-2].output))
    mlmodel = ct.convert(model, inputs=[ct.ImageType(name="image", shape=(1, 8, 8, 3), scale=2 / 255, bias=[-1, -1, -1])],
                         classifier_config=ct.ClassifierConfig(labels), minimum_deployment_target=ct.target.iOS16, skip_model_load=True)
    mlmodel.save(str(tmp_path / "labels.mlpackage"))
    message = _refused(capsys, tmp_path / "out", files["core"], tmp_path / "labels.mlpackage", files["data"], *TWO_OVER_255)
    assert words in message and "ct.ClassifierConfig" in message


def test_a_truncated_package(files, tmp_path, capsys):
    broken = tmp_path / "broken.mlpackage"
    shutil.copytree(files["right"], broken)
    (weights,) = (broken / "Data" / "com.apple.CoreML" / "weights").glob("*.bin")
    weights.write_bytes(weights.read_bytes()[:100])
    message = _refused(capsys, tmp_path / "out", files["core"], broken, files["data"], *TWO_OVER_255)
    assert "corrupt or truncated" in message and str(broken) in message


def test_a_package_without_weights(files, tmp_path, capsys):
    broken = tmp_path / "noweights.mlpackage"
    shutil.copytree(files["right"], broken)
    shutil.rmtree(broken / "Data" / "com.apple.CoreML" / "weights")
    message = _refused(capsys, tmp_path / "out", files["core"], broken, files["data"], *TWO_OVER_255)
    assert "corrupt" in message


def test_paths_that_do_not_exist(files, tmp_path, capsys):
    message = _refused(capsys, tmp_path / "out", files["core"], tmp_path / "nope.mlpackage", files["data"])
    assert "does not exist" in message and "nope.mlpackage" in message
    message = _refused(capsys, tmp_path / "out2", tmp_path / "nope.keras", files["right"], files["data"])
    assert "MODEL" in message and "does not exist" in message
    message = _refused(capsys, tmp_path / "out3", files["core"], files["right"], tmp_path / "nope.npz")
    assert "DATA" in message and "does not exist" in message
    assert store_state(tmp_path / "out").keys() == store_state(tmp_path / "out2").keys() == store_state(tmp_path / "out3").keys()


def _nn_file(files, path: Path, color_layout: str) -> Path:
    import coremltools as ct
    import keras

    mlmodel = ct.convert(keras.models.load_model(files["core"]),
                         inputs=[ct.ImageType(name="image", shape=(1, 8, 8, 3), scale=2 / 255, bias=[-1, -1, -1],
                                              color_layout=getattr(ct.colorlayout, color_layout))],
                         classifier_config=ct.ClassifierConfig(app_models.CLASS_NAMES), minimum_deployment_target=ct.target.iOS13,
                         convert_to="neuralnetwork")
    mlmodel.save(str(path))
    return path


@pytest.mark.slow
def test_a_neuralnetwork_mlmodel_is_compared_and_diagnosed(files, tmp_path, capsys):
    """The standard example at iOS13 (a neuralNetworkClassifier .mlmodel): right, and BGR."""
    right = _nn_file(files, tmp_path / "right.mlmodel", "RGB")
    out = _compare(capsys, files["core"], right, files["data"], tmp_path / "right_store", *TWO_OVER_255, "compute_units=cpu_only")
    run = _run(tmp_path / "right_store")
    assert run.data.metrics["agreement"] == 1.0 and run.data.metrics["max_abs_diff"] <= 1e-4
    assert run.data.tags["accuracy_from"] == "classLabel" and run.data.params["target"] == "ios13"
    assert "verdict: the file agrees" in out

    wrong = _nn_file(files, tmp_path / "bgr.mlmodel", "BGR")
    out = _compare(capsys, files["core"], wrong, files["data"], tmp_path / "bgr_store", *TWO_OVER_255)
    assert "swapped channel order" in out
    assert "ct.ImageType(scale=2/255, bias=[-1.0, -1.0, -1.0], color_layout=ct.colorlayout.RGB)" in out


def test_model_files_the_emulator_cannot_run(files, tmp_path, capsys):
    import coremltools as ct
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    nn = ct.utils.load_spec(str(_nn_file(files, tmp_path / "nn.mlmodel", "RGB")))
    pipeline = ct.proto.Model_pb2.Model()
    pipeline.specificationVersion = nn.specificationVersion
    pipeline.description.CopyFrom(nn.description)
    pipeline.pipelineClassifier.pipeline.models.add().CopyFrom(nn)
    ct.utils.save_spec(pipeline, str(tmp_path / "pipeline.mlmodel"))
    message = _refused(capsys, tmp_path / "a", files["core"], tmp_path / "pipeline.mlmodel", files["data"])
    assert "pipelineClassifier model" in message and "ML programs and NeuralNetwork models" in message

    nn.specificationVersion = 99
    ct.utils.save_spec(nn, str(tmp_path / "future.mlmodel"))
    message = _refused(capsys, tmp_path / "b", files["core"], tmp_path / "future.mlmodel", files["data"])
    assert "specification version 99" in message

    builder = NeuralNetworkBuilder([("image", datatypes.Array(3, 8, 8))], [("y", None)], disable_rank5_shape_mapping=True)
    builder.add_elementwise("my_dot", ["image", "image"], "y", mode="DOT")  # a layer without an adapter
    ct.utils.save_spec(builder.spec, str(tmp_path / "dot.mlmodel"))
    message = _refused(capsys, tmp_path / "c", files["core"], tmp_path / "dot.mlmodel", files["data"])
    assert "'my_dot' (dot)" in message and "Supported layer types" in message


def test_a_bad_override_is_refused_before_any_run(files, tmp_path, capsys):
    message = _refused(capsys, tmp_path / "out", files["core"], files["right"], files["data"], "compute_units=gpu")
    assert "compute_units/gpu" in message


def test_labels_logged_match_the_file_s_predictions(files, tmp_path, capsys):
    """Accuracy is read from classLabel: the emulator's labels on the fed pixels, recomputed here."""
    from precision_sweep.data.preprocessing import ImageFeed
    from precision_sweep.emulator import Emulator

    _compare(capsys, files["core"], files["range01"], files["data"], tmp_path, *TWO_OVER_255, "dataset.test_size=1.0",
             "compute_units=cpu_only")
    run = _run(tmp_path)
    pixels, labels = app_models.rgb_digits()
    emulator = Emulator(files["range01"], "cpu_only")
    feed = ImageFeed("RGB")(pixels)
    predicted = np.concatenate([emulator.predict({"image": feed[i:i + 1]})["classLabel"] for i in range(len(feed))])
    expected = float(np.mean(predicted == np.array(app_models.CLASS_NAMES)[labels]))
    assert run.data.metrics["accuracy"] == pytest.approx(expected, abs=1e-12)


def test_precision_diagnose_shows_the_doctor_for_a_compared_file(files, tmp_path, capsys):
    from precision_sweep.cli.diagnose import main

    _compare(capsys, files["core"], files["bgr"], files["data"], tmp_path, *TWO_OVER_255)
    run = _run(tmp_path)
    main([run.info.run_id, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    out = capsys.readouterr().out
    assert f"run {run.info.run_id}: Preprocessing doctor" in out
    assert "swapped channel order" in out and "color_layout=ct.colorlayout.RGB" in out
    assert "no FP32 twin" in out


@pytest.mark.slow
def test_a_sweep_over_one_file_varies_compute_units_and_device(files, tmp_path):
    from sweep_testing import mlflow_client, run_cli

    common = ["-m", "model=keras", f"model.path={files['core']}", "dataset=npz", f"dataset.path={files['data']}",
              *TWO_OVER_255, "dataset.test_size=0.5", "runtime.progress=false", "compute_units=cpu_only,all", "device=m1,m5"]
    missing = run_cli(["precision-sweep", *common, f"model.coreml_file={tmp_path / 'nope.mlpackage'}",
                       f"paths.outputs={tmp_path / 'missing'}"], cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "missing" / "mlflow.db").exists()  # checked before the sweep's parent run

    result = run_cli(["precision-sweep", *common, f"model.coreml_file={files['bgr']}", f"paths.outputs={tmp_path / 'out'}"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow_client(tmp_path / "out")
    runs = [r for r in client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
            if r.data.tags.get("mlflow.parentRunId")]
    assert sorted((r.data.params["compute_units"], r.data.params["device"]) for r in runs) == [
        ("all", "m1"), ("all", "m5"), ("cpu_only", "m1"), ("cpu_only", "m5")]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["precision"] == "file" and run.data.params["coreml_file"] == str(files["bgr"])
        assert run.data.params["target"] == "ios16"
        assert "swapped channel order" in run.data.tags["preprocessing_cause"]


def test_a_group_choice_given_as_an_override_replaces_the_derived_one(files):
    """precision-compare model.h5 ... model=tf_keras: Hydra takes one choice per group."""
    from precision_sweep.cli.compare import _unless_given, compose_config, model_overrides

    derived = model_overrides(str(files["core"]))
    assert derived[0] == "model=keras"
    given = ["model=tf_keras", "dataset.scale=1.0"]
    overrides = [*_unless_given(derived, given), "dataset=digits", *given]
    assert overrides[0] == f"model.path={files['core']}"
    cfg = compose_config(overrides)
    assert cfg.model.source == "tf_keras" and cfg.model.path == str(files["core"])
