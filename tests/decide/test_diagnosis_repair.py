"""Per-op drift diagnosis and mixed-precision repair on models with a known culprit layer.

Real TF models trained by the test (a few seconds), real coremltools conversions, the emulator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sweep_testing import compose, mlflow_client
from models import digits_data, int8_sensitive_model, overflow_model


@pytest.fixture(scope="module")
def data():
    return digits_data()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("decide")


def _convert(model, precision: str, out: Path):
    from precision_sweep.convert import convert_variant

    cfg = compose([f"precision={precision}", "target=ios16"])
    return convert_variant(model, cfg.precision, cfg.target, out / f"{model.name}-{precision}.mlpackage")


@pytest.fixture(scope="module")
def overflow(data, workdir):
    from precision_sweep.diagnose.run import fp32_twin

    model = overflow_model(data)
    target = compose(["target=ios16"]).target
    return model, _convert(model, "fp16", workdir), fp32_twin(model, target)


@pytest.fixture(scope="module")
def sensitive(data, workdir):
    from precision_sweep.diagnose.run import fp32_twin

    model = int8_sensitive_model(data)
    target = compose(["target=ios16"]).target
    return model, _convert(model, "int8", workdir), fp32_twin(model, target)


def _diagnose(model, variant, reference, x):
    from precision_sweep.diagnose.drift import diagnose
    from precision_sweep.data.layers import LayerMapper

    return diagnose(variant, reference, x, None, LayerMapper.from_keras(model.keras_model), threshold=0.05)


def test_layer_mapper_follows_keras_scopes():
    from precision_sweep.data.layers import LayerMapper

    mapper = LayerMapper(["image", "conv1", "conv10", "pool", "dense"], "digits_cnn", input_names=["image"])
    assert mapper.layer_of("digits_cnn_1_conv1_1_BiasAdd_cast_fp16") == "conv1"
    assert mapper.layer_of("digits_cnn_1/conv10_1/BiasAdd") == "conv10"
    assert mapper.layer_of("max_pool_0_cast_fp16") == ""  # a coremltools name, not layer "pool"
    assert mapper.layer_of("Identity", "digits_cnn_1_dense_1_Softmax_cast_fp16") == "dense"


def test_normalize_follows_coremltools_renames():
    from precision_sweep.diagnose.drift import normalize

    assert normalize("m_1_conv1_1_BiasAdd_cast_fp16") == "m_1_conv1_1_BiasAdd"
    assert normalize("transpose_0_to_fp16_quantized") == "transpose_0"
    assert normalize("x_cast_fp16_to_fp32_to_fp16") == "x"


def test_fp16_overflow_is_traced_to_its_layer(overflow, data):
    model, variant, reference = overflow
    report = _diagnose(model, variant.path, reference, data.x_test[:64])
    table = report.table
    first = table[table["is_first_nonfinite"]].iloc[0]
    assert (first["layer"], first["op_type"]) == ("hot", "conv")
    assert report.first_nonfinite_op == first["op_name"] == "overflow_cnn_1_hot_1_BiasAdd_cast_fp16"
    assert report.first_op == report.first_nonfinite_op and report.first_layer == "hot"
    before = table[table["position"] < first["position"]]
    assert not before["nonfinite"].any() and (before["rel_error"] < 0.01).all()
    assert report.ranked_layers[0] == "hot"
    assert "hot" in report.summary()


def test_int8_sensitive_layer_is_ranked_first(sensitive, data):
    model, variant, reference = sensitive
    report = _diagnose(model, variant.path, reference, data.x_test[:64])
    assert report.ranked_layers[0] == "dense"
    assert report.first_layer == "dense" and not report.first_nonfinite_op
    dense = report.table[(report.table["layer"] == "dense") & (report.table["op_type"] == "linear")].iloc[0]
    assert dense["sqnr_db"] < 10 and dense["cosine"] < 0.95  # the damage, in the reported measures


def test_drift_artifacts(overflow, data, tmp_path):
    from precision_sweep.diagnose.run import drift_tags, write_report

    model, variant, reference = overflow
    report = _diagnose(model, variant.path, reference, data.x_test[:32])
    csv, png = write_report(report, tmp_path, 0.05, "overflow fp16")
    import pandas as pd

    table = pd.read_csv(csv)
    assert {"rel_error", "cosine", "sqnr_db", "nonfinite", "layer", "op_name"} <= set(table.columns)
    assert png.read_bytes()[:4] == b"\x89PNG"
    tags = drift_tags(report)
    assert tags["drift_first_layer"] == "hot" and tags["drift_nonfinite_layer"] == "hot"


def _agreement(package, model, x):
    from precision_sweep.data.models import predict_probabilities
    from precision_sweep.emulator import Emulator

    emulator = Emulator(package, compute_units="all")
    with np.errstate(all="ignore"):
        out = emulator.predict({emulator.input_names[0]: x})[emulator.output_names[0]]
    return float(np.mean(out.argmax(-1) == predict_probabilities(model, x).argmax(-1)))


def test_fp16_auto_restores_agreement_keeping_most_ops_in_fp16(overflow, data, workdir):
    from precision_sweep.convert.calibration import calibration_data
    from precision_sweep.repair.greedy import repair
    from precision_sweep.convert.schema import AutoRepairConfig

    model, variant, reference = overflow
    assert _agreement(variant.path, model, data.x_test) < 0.5  # broken before the repair
    x, y = calibration_data(data, 512)
    result = repair(model, "iOS16", "fp16", variant.path, None, reference, x, y, AutoRepairConfig(),
                    workdir / "overflow-fp16_auto.mlpackage")
    assert result.budget_met
    assert _agreement(result.path, model, data.x_test) >= 0.99  # on the test split, never seen
    # The overflowing conv, its ReLU and the conv that scales back down: 3 of 14 ops.
    assert result.kept == ["overflow_cnn_1_hot_1_BiasAdd", "overflow_cnn_1_hot_1_Relu", "overflow_cnn_1_cool_1_BiasAdd"]
    assert result.kept_layers == ["hot", "cool"]
    assert result.n_candidates == 14 and result.kept_fraction == pytest.approx(3 / 14)
    assert result.size_bytes > result.base_size_bytes  # fp32 weights of the kept convs


def test_int8_auto_keeps_only_the_sensitive_layer_in_fp16(sensitive, data, workdir, outputs):
    """Through repair_in_job, as a job runs it: metrics, tags and repair.json on a real run."""
    from precision_sweep.repair.greedy import repair_in_job
    from precision_sweep.tracking import store
    from precision_sweep.tracking.job_run import JobRun

    model, variant, _ = sensitive
    cfg = compose(["precision=int8_auto", "target=ios16", f"paths.outputs={outputs}", "compute_units=all"])
    uri = f"sqlite:///{outputs / 'mlflow.db'}"
    experiment = store.prepare_experiment(uri, "precision-sweep", str(outputs / "art"))
    run = JobRun(store.client_for(uri), experiment, None, "int8_auto")
    job_dir = outputs / "job"
    job_dir.mkdir()
    import shutil

    start = job_dir / variant.path.name
    shutil.copytree(variant.path, start)
    import dataclasses

    repaired = repair_in_job(cfg, run, model, data, dataclasses.replace(variant, path=start))
    run.finish()
    assert _agreement(repaired.path, model, data.x_test) >= 0.99
    client = mlflow_client(outputs)
    logged = client.get_run(run.run_id)
    assert logged.data.metrics["repair_kept_ops"] == 1
    assert logged.data.tags["repair_kept_layers"] == "dense" and logged.data.tags["repair_budget_met"] == "true"
    assert logged.data.metrics["repair_size_cost_bytes"] > 0
    record = json.loads(Path(client.download_artifacts(run.run_id, "repair.json", str(outputs))).read_text())
    assert record["kept_ops"] == ["int8_cnn_1_dense_1_BiasAdd_cast_fp16"] and record["kind"] == "int8"
    assert record["rounds"][0]["ok"] is False and record["rounds"][-1]["ok"] is True
