"""Neuralnetwork targets (issue 23): real conversions of the digits model at iOS13/iOS14 and
macOS10_15/macOS11 give ``.mlmodel`` files of the neuralnetwork format, with the app's image
input and classifier output; the recipes store the weights as they say (fp16, 8-bit linear,
look-up tables), the size metrics mean what they mean for ML Programs, the entries are cached,
the cells the format cannot hold are skipped with their reason, and the files run end to end
in the emulator (its NN loader) and as sweep jobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweep_testing import compose, mlflow_client, run_cli

NN_TARGETS = {"ios13": 4, "ios14": 5, "macos10_15": 4, "macos11": 5}


@pytest.fixture(scope="module")
def digits(shared_cache):
    from precision_sweep.data import load_inputs

    cfg = compose([])
    dataset, model = load_inputs(cfg.model, cfg.dataset, shared_cache)
    return dataset, model


@pytest.fixture(scope="module")
def convert_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("nn-convert-cache")


def convert(digits, recipe: str, target: str, out_dir: Path, cache_dir=None, overrides=()):
    """(converted, spec) of the digits model at ``recipe`` x ``target``, as a job converts it."""
    import coremltools as ct

    from precision_sweep.convert import convert_variant
    from precision_sweep.convert.app_interface import interface_for

    dataset, model = digits
    cfg = compose([f"precision={recipe}", f"target={target}", *overrides])
    converted = convert_variant(model, cfg.precision, cfg.target, out_dir / f"{recipe}-{target}.mlmodel",
                                cache_dir=cache_dir, interface=interface_for(cfg, model, dataset))
    return converted, ct.utils.load_spec(str(converted.path))


def _network(spec):
    return getattr(spec, spec.WhichOneof("Type"))


def _weighted_layers(spec):
    """{layer type: layer params} of the layers holding a weight matrix (conv and dense)."""
    layers = {}
    for layer in _network(spec).layers:
        kind = layer.WhichOneof("layer")
        if kind in ("convolution", "innerProduct"):
            layers.setdefault(kind, []).append(getattr(layer, kind))
    return layers


@pytest.mark.parametrize("target", sorted(NN_TARGETS))
def test_each_nn_target_gives_a_neuralnetwork_mlmodel(digits, convert_cache, tmp_path, target):
    from precision_sweep.convert.targets import MLPROGRAM, NEURALNETWORK, model_format, package_spec_version

    cfg = compose([f"target={target}"])
    assert model_format(cfg.target.coremltools_target) == NEURALNETWORK
    assert model_format(compose(["target=ios15"]).target.coremltools_target) == MLPROGRAM
    converted, spec = convert(digits, "fp32", target, tmp_path, convert_cache)
    assert converted.path.is_file() and converted.path.suffix == ".mlmodel"
    assert spec.WhichOneof("Type") == "neuralNetwork"
    # coremltools writes the lowest spec the layers need: the digits model's are all iOS13 layers
    assert spec.specificationVersion == converted.spec_version == package_spec_version(converted.path) == 4
    assert converted.spec_version <= NN_TARGETS[target]
    platform = "macOS10_15" if target.startswith("macos") else "iOS13"
    assert converted.effective_target == platform
    assert {"convolution", "innerProduct"} <= set(_weighted_layers(spec))
    assert converted.bits_per_weight == pytest.approx(32.0)
    assert converted.compression_ratio == pytest.approx(1.0)


def test_effective_target_of_nn_spec_versions():
    from precision_sweep.convert.targets import effective_target_name

    assert effective_target_name(4, "iOS14") == "iOS13"
    assert effective_target_name(5, "iOS13") == "iOS14"
    assert effective_target_name(4, "macOS11") == "macOS10_15"
    assert effective_target_name(5, "macOS10_15") == "macOS11"
    for version, name in ((6, "iOS15"), (7, "iOS16"), (8, "iOS17"), (9, "iOS18")):
        assert effective_target_name(version, "iOS13") == name
    assert effective_target_name(9, "macOS11") == "macOS15"


def test_image_classifier_at_ios13_carries_the_scaler_and_class_label(digits, convert_cache, tmp_path):
    """The standard example's conversion: ImageType + ClassifierConfig at iOS13."""
    from precision_sweep.convert.app_interface import interface_for

    overrides = ["model.input_type=image", "model.classifier=true"]
    converted, spec = convert(digits, "fp32", "ios13", tmp_path, convert_cache, overrides)
    assert spec.WhichOneof("Type") == "neuralNetworkClassifier"
    (feature,) = spec.description.input
    assert feature.type.WhichOneof("Type") == "imageType"
    assert (feature.type.imageType.height, feature.type.imageType.width) == (8, 8)
    cfg = compose(["target=ios13", *overrides])
    interface = interface_for(cfg, digits[1], digits[0])
    scale, bias, layout, _ = interface.image
    assert layout == "GRAYSCALE"
    (preprocessing,) = spec.neuralNetworkClassifier.preprocessing
    assert preprocessing.featureName == feature.name
    assert preprocessing.scaler.channelScale == pytest.approx(scale)
    assert preprocessing.scaler.grayBias == pytest.approx(bias[0])
    assert spec.description.predictedFeatureName == "classLabel"
    assert list(spec.neuralNetworkClassifier.stringClassLabels.vector) == [str(c) for c in digits[0].class_names]
    # a compressed classifier is still a classifier with the same preprocessing
    _, int8 = convert(digits, "int8", "ios13", tmp_path, convert_cache, overrides)
    assert int8.WhichOneof("Type") == "neuralNetworkClassifier"
    assert int8.neuralNetworkClassifier.preprocessing[0].scaler.channelScale == pytest.approx(scale)


def _main_weights(params) -> list:
    return [p.weights for kinds in params.values() for p in kinds]


def _biases(params) -> list:
    return [p.bias for kinds in params.values() for p in kinds if p.hasBias]


def test_fp16_stores_float16_weights(digits, convert_cache, tmp_path):
    converted, spec = convert(digits, "fp16", "ios13", tmp_path, convert_cache)
    params = _weighted_layers(spec)
    for weights in _main_weights(params) + _biases(params):
        assert len(weights.floatValue) == 0 and len(weights.float16Value) > 0
        assert not weights.rawValue and not weights.quantization.numberOfBits
    assert converted.bits_per_weight == pytest.approx(16.0)
    assert converted.compression_ratio > 1.9


def test_int8_stores_8_bit_linear_weights_per_output_channel(digits, convert_cache, tmp_path):
    converted, spec = convert(digits, "int8", "ios14", tmp_path, convert_cache)
    params = _weighted_layers(spec)
    for kind, layers in params.items():
        for layer in layers:
            weights = layer.weights
            quantization = weights.quantization
            assert quantization.numberOfBits == 8
            assert quantization.WhichOneof("QuantizationType") == "linearQuantization"
            assert len(quantization.linearQuantization.scale) == layer.outputChannels
            assert len(weights.floatValue) == 0
            count = layer.outputChannels * (layer.inputChannels if kind == "innerProduct"
                                            else layer.kernelChannels * layer.kernelSize[0] * layer.kernelSize[1])
            if count >= 128:
                assert len(weights.rawValue) == count
    # biases are below the weight threshold: fp16, as in the ML Program int8 recipe
    for bias in _biases(params):
        assert len(bias.float16Value) > 0 and not bias.quantization.numberOfBits
    assert converted.bits_per_weight == pytest.approx(8.25, abs=0.3)


@pytest.mark.parametrize(("recipe", "overrides", "nbits", "table"), [
    ("palettize", [], 4, "kmeans"),
    ("palettize", ["precision.weight_palettization.nbits=2"], 2, "kmeans"),
    ("palettize", ["precision.weight_palettization.nbits=3", "precision.weight_palettization.mode=uniform"], 3, "linear"),
    ("nn_lut_linear", [], 4, "linear"),
    ("nn_lut_linear", ["precision.nn_weight_quantization.nbits=1"], 1, "linear"),
])
def test_lookup_tables_of_2_to_the_nbits_entries(digits, convert_cache, tmp_path, recipe, overrides, nbits, table):
    converted, spec = convert(digits, recipe, "ios13", tmp_path, convert_cache, overrides)
    params = _weighted_layers(spec)
    for weights in _main_weights(params):
        quantization = weights.quantization
        assert quantization.numberOfBits == nbits
        lut = np.array(quantization.lookupTableQuantization.floatValue)
        assert len(lut) == 2**nbits
        if table == "linear":  # evenly spaced
            np.testing.assert_allclose(np.diff(lut), np.diff(lut)[0], rtol=1e-4)
        n = len(weights.rawValue) * 8 // nbits
        assert n >= 128
    assert converted.bits_per_weight == pytest.approx(nbits, abs=0.35)  # + tables, fp16 biases


def test_weights_size_counts_weight_params_bytes(digits, convert_cache, tmp_path):
    from precision_sweep.convert.converter import nn_weights_bytes, weights_size

    for recipe in ("fp32", "fp16", "int8", "palettize"):
        converted, spec = convert(digits, recipe, "ios13", tmp_path, convert_cache)
        expected = 0
        for layer in _network(spec).layers:
            for field, value in getattr(layer, layer.WhichOneof("layer")).ListFields():
                if field.message_type is not None and field.message_type.name == "WeightParams":
                    q = value.quantization
                    expected += (4 * len(value.floatValue) + len(value.float16Value) + len(value.rawValue)
                                 + len(value.int8RawValue) + 4 * (len(q.linearQuantization.scale)
                                 + len(q.linearQuantization.bias) + len(q.lookupTableQuantization.floatValue)))
        assert weights_size(converted.path) == nn_weights_bytes(spec) == converted.weights_bytes == expected
        assert converted.size_bytes > converted.weights_bytes
    fp32 = convert(digits, "fp32", "ios13", tmp_path, convert_cache)[0]
    assert fp32.reference_weights_bytes == fp32.weights_bytes == 4 * digits[1].keras_model.count_params()


def test_second_conversion_reads_the_cache(digits, tmp_path, monkeypatch):
    """A fresh process (empty memos) finds every entry on disk: nothing converted, quantized
    or parsed (the weight bytes come from the record beside the entry)."""
    import coremltools as ct
    from coremltools.models.neural_network import quantization_utils

    from precision_sweep.convert import converter

    cache = tmp_path / "cache"
    first = {r: convert(digits, r, "ios14", tmp_path / "first", cache)[0] for r in ("fp32", "fp16", "int8")}
    entries = sorted((cache / "convert").rglob("*.mlmodel"))
    assert len(entries) == 3  # the fp32 base, the fp16 and int8 compressed entries
    assert all(entry.with_name(entry.name + ".weights.json").is_file() for entry in entries)

    def refuse(*args, **kwargs):
        raise AssertionError("converted again")

    for memo in ("_FRONTEND", "_BASE", "_COMPRESSED"):
        monkeypatch.setattr(converter, memo, {})
    monkeypatch.setattr(ct, "convert", refuse)
    monkeypatch.setattr(quantization_utils, "quantize_weights", refuse)
    monkeypatch.setattr(converter, "weights_size", refuse)
    for recipe, before in first.items():
        again = convert(digits, recipe, "ios14", tmp_path / "again", cache)[0]
        assert again.path.read_bytes() == before.path.read_bytes()
        assert (again.weights_bytes, again.reference_weights_bytes) == (before.weights_bytes, before.reference_weights_bytes)
    assert sorted((cache / "convert").rglob("*.mlmodel")) == entries


def test_ml_program_cache_keys_are_unchanged(digits, tmp_path):
    """The format enters the keys of neuralnetwork entries only: an ML Program base entry keeps
    the key it had before the neuralnetwork targets."""
    from precision_sweep.convert.converter import _versions
    from precision_sweep.hashing import hash_config

    cache = tmp_path / "cache"
    convert(digits, "fp32", "ios15", tmp_path, cache)
    model = digits[1]
    key = hash_config({"stage": "base", "model": model.content_hash, "target": "iOS15", "compute": "float32",
                       "max_batch": 1024, "input": model.input_name, "versions": _versions()})
    assert (cache / "convert" / "base" / f"{model.name}-iOS15-float32-{key}.mlpackage").is_dir()


@pytest.mark.parametrize(("recipe", "why"), [
    ("fp16_mixed", "no per-op compute precision"),
    ("fp16_auto", "automatic repair"),
    ("int8_auto", "automatic repair"),
    ("int8_per_tensor", "per output channel only"),
    ("int8_per_block", "per-block"),
    ("int4_per_block", "per-block"),
    ("palettize_grouped", "per-grouped-channel"),
    ("sparse", "no sparse storage"),
    ("sparse_int8", "no sparse storage"),
    ("sparse_palettize", "no sparse storage"),
    ("w8a8", "activation quantization"),
])
def test_recipes_the_format_cannot_hold_are_refused_with_their_reason(recipe, why):
    from precision_sweep.convert import invalid_reason

    for target in NN_TARGETS:
        cfg = compose([f"precision={recipe}", f"target={target}"])
        reason = invalid_reason(cfg.precision, cfg.target)
        assert reason and reason.startswith(f"{recipe} cannot deploy at {target}: ") and why in reason, reason


def test_nn_only_recipe_is_refused_at_ml_program_targets():
    from precision_sweep.convert import invalid_reason

    for target in ("ios15", "ios16", "ios18", "macos12", "macos15"):
        cfg = compose(["precision=nn_lut_linear", f"target={target}"])
        reason = invalid_reason(cfg.precision, cfg.target)
        assert reason and "neuralnetwork" in reason and "palettize" in reason, reason
    for target in NN_TARGETS:
        cfg = compose(["precision=nn_lut_linear", f"target={target}"])
        assert invalid_reason(cfg.precision, cfg.target) is None


def test_overrides_move_nn_cells():
    from precision_sweep.convert import invalid_reason
    from precision_sweep.convert.recipes import NNStage, nn_weight_stages

    ios13 = compose(["target=ios13"]).target
    # 4-bit linear weights: quantize_weights does them (ML Programs need iOS18 for int4)
    cfg = compose(["precision=int8", "precision.weight_quantization.dtype=int4", "precision.weight_quantization.mode=linear"])
    assert invalid_reason(cfg.precision, ios13) is None
    assert nn_weight_stages(cfg.precision) == (NNStage(4, "linear", 128), NNStage(16, "linear"))
    cfg = compose(["precision=int8", "precision.weight_quantization.dtype=int4"])
    assert "8-bit only" in invalid_reason(cfg.precision, ios13)
    cfg = compose(["precision=nn_lut_linear", "precision.nn_weight_quantization.quantization_mode=linear_symmetric",
                   "precision.nn_weight_quantization.nbits=4"])
    assert "8-bit only" in invalid_reason(cfg.precision, ios13)
    # 3-bit palettization needs iOS18 as an ML Program, not as a neuralnetwork
    cfg = compose(["precision=palettize", "precision.weight_palettization.nbits=3"])
    assert invalid_reason(cfg.precision, ios13) is None
    assert nn_weight_stages(compose(["precision=fp32"]).precision) == ()
    assert nn_weight_stages(compose(["precision=fp16"]).precision) == (NNStage(16, "linear"),)
    assert nn_weight_stages(compose(["precision=palettize"]).precision) == (NNStage(4, "kmeans_lut", 128), NNStage(16, "linear"))


def test_fp32_cpu_only_agrees_with_tensorflow_and_all_computes_in_fp16(digits, convert_cache, tmp_path):
    """End to end through the emulator's NN loader: the FP32 .mlmodel on the CPU is TensorFlow
    to 1e-4; on compute_units=all (GPU/Neural Engine) the same file computes in fp16."""
    from precision_sweep.emulator import Emulator

    dataset, model = digits
    reference = model.keras_model.predict(dataset.x_test, verbose=0)
    converted, _ = convert(digits, "fp32", "ios13", tmp_path, convert_cache)
    diffs = {}
    for units in ("cpu_only", "all"):
        emulator = Emulator(converted.path, units)
        outputs = emulator.predict({emulator.input_names[0]: dataset.x_test})[emulator.output_names[0]]
        diffs[units] = float(np.abs(outputs.astype(np.float32) - reference).max())
        assert (outputs.argmax(-1) == reference.argmax(-1)).mean() >= 0.99
    assert diffs["cpu_only"] <= 1e-4, diffs
    assert diffs["all"] > 1e-4, diffs  # fp16 arithmetic, whatever the weights


@pytest.mark.parametrize("recipe", ["fp16", "int8", "palettize", "nn_lut_linear"])
def test_compressed_nn_models_run_and_agree(digits, convert_cache, tmp_path, recipe):
    from precision_sweep.emulator import Emulator

    dataset, model = digits
    reference = model.keras_model.predict(dataset.x_test, verbose=0)
    converted, _ = convert(digits, recipe, "ios14", tmp_path, convert_cache)
    emulator = Emulator(converted.path, "cpu_only")
    outputs = emulator.predict({emulator.input_names[0]: dataset.x_test})[emulator.output_names[0]]
    assert (outputs.argmax(-1) == reference.argmax(-1)).mean() >= 0.98
    if recipe in ("fp16", "int8"):
        assert np.abs(outputs.astype(np.float32) - reference).max() < 0.05


@pytest.mark.slow
def test_image_classifier_jobs_at_ios13_read_class_label(tmp_path, shared_cache):
    """The standard example (ImageType + ClassifierConfig at iOS13) as sweep jobs: evaluated
    from 8-bit pixels, accuracy from classLabel, the .mlmodel logged as the job's model."""
    result = run_cli(["precision-sweep", "-m", "precision=fp32,int8", "target=ios13", "compute_units=cpu_only,all",
                      "model.input_type=image", "model.classifier=true", f"paths.cache={shared_cache}",
                      "runtime.progress=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow_client(tmp_path / "outputs")
    experiment = client.get_experiment_by_name("precision-sweep")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    children = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(children) == 4
    for child in children:
        assert child.data.tags["precision_sweep.outcome"] == "evaluated"
        assert child.data.tags["accuracy_from"] == "classLabel"
        assert child.data.params["model_format"] == "neuralnetwork"
        assert child.data.params["effective_target"] == "ios13"
        assert child.data.metrics["accuracy"] >= 0.95
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert any(name.endswith(".mlmodel") for name in names), names
        if child.data.params["precision"] == "fp32" and child.data.params["compute_units"] == "cpu_only":
            assert child.data.metrics["agreement"] == 1.0


@pytest.mark.slow
def test_unholdable_cells_are_skipped_children_with_their_reason(tmp_path, shared_cache):
    """A real multirun: every cell a neuralnetwork target cannot hold, and the NN-only recipe at
    an ML Program target, is a skipped child (FINISHED) with its reason and its model_format."""
    from precision_sweep.convert import invalid_reason

    recipes = ["fp16_mixed", "int8_per_tensor", "w8a8", "nn_lut_linear"]
    targets = ["ios13", "ios15"]
    result = run_cli(["precision-sweep", "-m", f"precision={','.join(recipes)}", f"target={','.join(targets)}",
                      f"paths.cache={shared_cache}", "dataset.limit=60", "runtime.progress=false",
                      "hydra/launcher=basic"], cwd=tmp_path)
    client = mlflow_client(tmp_path / "outputs")
    experiment = client.get_experiment_by_name("precision-sweep")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    children = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    assert len(children) == len(recipes) * len(targets)
    skipped = set()
    for child in children:
        recipe, target = child.data.params["precision"], child.data.params["target"]
        cfg = compose([f"precision={recipe}", f"target={target}"])
        reason = invalid_reason(cfg.precision, cfg.target)
        assert child.data.params["model_format"] == ("neuralnetwork" if target == "ios13" else "mlprogram")
        if reason:
            skipped.add((recipe, target))
            assert child.info.status == "FINISHED"
            assert child.data.tags["precision_sweep.outcome"] == "skipped"
            assert child.data.tags["skip_reason"] == reason
    assert {("fp16_mixed", "ios13"), ("int8_per_tensor", "ios13"), ("w8a8", "ios13"), ("w8a8", "ios15"),
            ("nn_lut_linear", "ios15"), ("int8_per_tensor", "ios15")} == skipped
    assert result.returncode == 0, result.stderr[-3000:]
