"""task=detection through real sweeps (issue 25): the tiny detector of :mod:`detectors` (boxes and
per-class scores out, NMS outside the model), and the same detector with its NMS inside (a
registered Keras layer, batch 1, converted to MIL ``non_maximum_suppression``), with their npz of
labelled boxes, through real Hydra multiruns (fp32, fp16, int8 x two targets) into a real MLflow
store with COCO mAP by pycocotools, its paired-bootstrap CI, the per-box confidence comparison
and the pick; labels that do not fit the outputs refused before converting; a custom-layer module
that cannot be imported and a batch fixed above 1 refused while loading; and the per-box
comparison catching scores that all read 1.0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import detectors
from sweep_testing import failed_job_errors, mlflow_client, run_cli

from precision_sweep.tracking.job_run import OUTCOME_TAG

TASKS = Path(__file__).parent
DETECTION = ["task=detection", "model=keras", "model.output=scores", "dataset=npz", "dataset.test_size=0.5"]


def _runs(outputs: Path) -> list:
    client = mlflow_client(outputs)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.mark.slow
def test_a_detector_with_nms_outside_sweeps_with_map_ci_box_confidences_and_pick(tmp_path):
    model_path, data_path = detectors.save(tmp_path)
    result = run_cli(["precision-sweep", "-m", *DETECTION, f"model.path={model_path}", f"dataset.path={data_path}",
                      "precision=fp32,fp16,int8", "target=ios16,ios18", "compute_units=cpu_only", "diagnosis=off",
                      "progress=false", "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [r for r in _runs(tmp_path / "outputs") if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(jobs) == 6 and {r.info.status for r in jobs} == {"FINISHED"}
    for run in jobs:
        m = run.data.metrics
        assert run.data.params["task"] == "detection" and run.data.tags["task_metric"] == "map_50_95"
        assert m["baseline_map_50"] == 1.0 and 0.5 < m["baseline_map_50_95"] < 1.0  # boxes near, not on, the labels
        assert m["metric_delta"] == pytest.approx(m["map_50_95"] - m["baseline_map_50_95"])
        assert m["metric_delta_ci_low"] <= m["metric_delta"] <= m["metric_delta_ci_high"]
        assert m["metric_n_resamples"] == 2000 and m["n_samples"] == 30
        assert m["matched_fraction"] == 1.0 and m["baseline_detections_per_image"] > 1
        assert {"max_abs_diff/boxes", "max_abs_diff/scores", "score_max_abs_diff", "box_max_abs_diff"} <= set(m)
    by_cell = {(r.data.params["precision"], r.data.params["target"]): r.data.metrics for r in jobs}
    assert all(by_cell[("fp32", t)]["box_max_abs_diff"] < 1e-4 and by_cell[("fp32", t)]["metric_delta"] == 0
               for t in ("ios16", "ios18"))
    assert all(by_cell[("int8", t)]["box_max_abs_diff"] > 1e-4 for t in ("ios16", "ios18"))  # int8 box head moves boxes
    pick = run_cli(["precision-pick", "--max-drop", "2", "--tracking-uri", f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"],
                   cwd=tmp_path)
    assert pick.returncode == 0 and "pick: run" in pick.stdout, pick.stderr[-2000:]


@pytest.mark.slow
def test_a_detector_with_nms_inside_sweeps_with_map_ci_box_confidences_and_pick(tmp_path):
    model_path, data_path = detectors.save(tmp_path, nms_inside=True)
    cache = tmp_path / "cache"
    result = run_cli(["precision-sweep", "-m", *DETECTION, f"model.path={model_path}", f"dataset.path={data_path}",
                      "model.imports=[kept_boxes]", "task.compare.nms=inside", "task.compare.classes=classes",
                      "precision=fp32,fp16,int8", "target=ios14,ios16,ios18", "compute_units=cpu_only", "diagnosis=off",
                      f"paths.cache={cache}", "progress=false", "runtime.progress=false"], cwd=tmp_path,
                     env={"PYTHONPATH": str(TASKS)})  # where kept_boxes, the layer's module, is
    assert result.returncode == 0, result.stderr[-3000:] + failed_job_errors(tmp_path / "outputs")
    runs = [r for r in _runs(tmp_path / "outputs") if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(runs) == 9 and {r.info.status for r in runs} == {"FINISHED"}
    # coremltools 9 cannot convert TF's NMS at iOS17+: those cells are skipped, saying why and what to do
    skipped = [r for r in runs if r.data.params["target"] == "ios18"]
    assert len(skipped) == 3 and all(r.data.tags.get(OUTCOME_TAG) == "skipped" for r in skipped), [r.data.tags for r in skipped]
    assert all("only for iOS15 and iOS16" in r.data.tags["skip_reason"] for r in skipped)
    jobs = [r for r in runs if r.data.params["target"] != "ios18"]
    for run in jobs:
        m = run.data.metrics
        assert run.data.tags["task_metric"] == "map_50_95"
        assert m["baseline_map_50"] == 1.0 and 0.5 < m["baseline_map_50_95"] < 1.0
        assert m["metric_delta"] == pytest.approx(m["map_50_95"] - m["baseline_map_50_95"])
        assert m["metric_delta_ci_low"] <= m["metric_delta"] <= m["metric_delta_ci_high"]
        assert m["metric_n_resamples"] == 2000 and m["n_samples"] == 30
        assert m["matched_fraction"] == 1.0 and 1 < m["baseline_detections_per_image"] <= 3
        assert {"max_abs_diff/boxes", "max_abs_diff/scores", "max_abs_diff/classes", "score_max_abs_diff"} <= set(m)
    by_cell = {(r.data.params["precision"], r.data.params["target"]): r.data.metrics for r in jobs}
    assert all(by_cell[("fp32", t)]["box_max_abs_diff"] < 1e-4 and by_cell[("fp32", t)]["metric_delta"] == 0
               for t in ("ios14", "ios16"))
    assert all(by_cell[("int8", t)]["box_max_abs_diff"] > 1e-4 for t in ("ios14", "ios16"))
    # The NMS ran inside the converted models, one image at a time: an ML program's MIL op at
    # iOS16, a neuralnetwork's NonMaximumSuppression layer at iOS14.
    import coremltools as ct

    packages = sorted((cache / "convert").rglob("*.mlpackage"))
    files = sorted(p for p in (cache / "convert").rglob("*.mlmodel") if not any(part.endswith(".mlpackage") for part in p.parts))
    assert packages and files
    for package in packages:
        spec = ct.utils.load_spec(str(package))
        assert 'type: "non_maximum_suppression"' in str(spec.mlProgram)
        assert spec.description.input[0].type.multiArrayType.shape[0] == 1
    for file in files:
        spec = ct.utils.load_spec(str(file))
        assert "NonMaximumSuppression" in [layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers]
        assert spec.description.input[0].type.multiArrayType.shape[0] == 1
    pick = run_cli(["precision-pick", "--max-drop", "2", "--tracking-uri", f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"],
                   cwd=tmp_path)
    assert pick.returncode == 0 and "pick: run" in pick.stdout, pick.stderr[-2000:]


@pytest.mark.parametrize("case", ["unimportable", "batch_of_four"])
def test_a_custom_layer_module_or_a_batch_that_cannot_be_evaluated_is_refused_while_loading(tmp_path, case, monkeypatch):
    """The job's own loading (load_inputs): one paragraph naming the key and the fix."""
    import keras

    from precision_sweep.data import load_inputs
    from precision_sweep.errors import UserInputError
    from sweep_testing import compose

    monkeypatch.syspath_prepend(str(TASKS))
    model_path, data_path = detectors.save(tmp_path, n=8, nms_inside=True)
    imports = "[kept_boxes]"
    if case == "unimportable":
        imports, expected = "[kept_boxs]", "model.imports lists 'kept_boxs', which cannot be imported"
    else:
        image = keras.Input((detectors.SIZE, detectors.SIZE, 1), batch_size=4, name="image")
        boxes, scores = detectors.detector()(image)
        named = [keras.layers.Identity(name=name)(tensor) for name, tensor in (("boxes", boxes), ("scores", scores))]
        keras.Model(image, named).save(model_path)
        expected = "fix their batch dimension at [4]"
    cfg = compose([*DETECTION, f"model.path={model_path}", f"dataset.path={data_path}", f"model.imports={imports}",
                   "task.compare.nms=inside", "task.compare.classes=classes"])
    with pytest.raises(UserInputError) as info:
        load_inputs(cfg.model, cfg.dataset, tmp_path / "cache", labels=cfg.task.labels)
    assert expected in " ".join(str(info.value).split())


@pytest.mark.slow
def test_a_box_outside_the_image_is_refused_before_converting(tmp_path):
    model_path, data_path = detectors.save(tmp_path, n=12)
    x, y = detectors.images_and_boxes(12)
    y[:, 0, 3] = 20.0  # x_max past the 16-pixel image
    np.savez(data_path, x=x, y=y)
    expected = "lies outside the 16 x 16 image"
    result = run_cli(["precision-sweep", *DETECTION, f"model.path={model_path}", f"dataset.path={data_path}",
                      "precision=fp16", "target=ios18", "diagnosis=off", "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in " ".join(result.stderr.split()), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "outputs").rglob("*.mlpackage"))  # nothing converted
    assert "RUNNING" not in {r.info.status for r in _runs(tmp_path / "outputs")}


def test_an_output_name_the_detector_does_not_have_is_refused_with_its_outputs():
    from precision_sweep.errors import UserInputError
    from precision_sweep.metrics.tasks.detection_outputs import check

    x, y = detectors.images_and_boxes(8)
    boxes, scores = detectors.detector().predict(x, verbose=0)
    with pytest.raises(UserInputError) as info:
        check(y, {"boxes": boxes, "scores": scores}, boxes="box", input_shape=(16, 16, 1))
    assert "task.compare.boxes=box names no output of the model; its outputs are boxes, scores" in str(info.value)


def test_scores_that_all_read_one_keep_the_boxes_and_show_in_the_box_comparison():
    """Ultralytics #13079: a converted detector whose confidences are all 1.0. mAP@.5 barely
    moves (the ranking within an image is lost, the boxes are right); the per-box comparison
    shows the confidences at once."""
    from precision_sweep.metrics.tasks.detection_outputs import compare

    model = detectors.detector()
    x, y = detectors.images_and_boxes(40)
    boxes, scores = model.predict(x, verbose=0)
    saturated = np.where(scores > 0.05, 1.0, scores).astype(np.float32)
    results = compare(y, {"boxes": boxes, "scores": saturated}, {"boxes": boxes, "scores": scores},
                      input_shape=(16, 16, 1), n_resamples=200)
    drift = results[-1]
    assert drift["matched_fraction"] == 1.0 and drift["box_max_abs_diff"] == 0.0
    assert drift["score_max_abs_diff"] > 0.04  # TF's confidences (about 0.95) are not 1.0
    assert all(abs(s - 1.0) > 1e-4 for s in scores[scores > 0.05])


def test_a_change_to_the_custom_layers_code_is_a_change_to_the_model(tmp_path, monkeypatch):
    """model.imports' source files are part of the model card's key and of the model's content
    hash: a cached conversion or baseline of the old layer code is never reused."""
    from precision_sweep.data import load_inputs
    from precision_sweep.data.models.card import card_key
    from precision_sweep.hashing import modules_fingerprint
    from sweep_testing import compose

    helpers = tmp_path / "layers" / "detector_layer_helpers.py"  # a second module the model's layers use
    helpers.parent.mkdir()
    helpers.write_text("BOX_PADDING = 0.0\n")
    monkeypatch.syspath_prepend(str(helpers.parent))
    model_path, data_path = detectors.save(tmp_path, n=8, nms_inside=True)
    cfg = compose([*DETECTION, f"model.path={model_path}", f"dataset.path={data_path}",
                   "model.imports=[kept_boxes,detector_layer_helpers]", "task.compare.nms=inside", "task.compare.classes=classes"])
    names = ["kept_boxes", "detector_layer_helpers"]
    before = modules_fingerprint(names), card_key(cfg.model, model_path)
    _, model = load_inputs(cfg.model, cfg.dataset, tmp_path / "cache", labels=cfg.task.labels)
    helpers.write_text("BOX_PADDING = 1.0\n")
    after = modules_fingerprint(names), card_key(cfg.model, model_path)
    _, changed = load_inputs(cfg.model, cfg.dataset, tmp_path / "cache", labels=cfg.task.labels)
    assert [name for name, _ in before[0]] == names
    assert before[0][0] == after[0][0] and before[0][1] != after[0][1] and before[1] != after[1]
    assert model.content_hash != changed.content_hash
