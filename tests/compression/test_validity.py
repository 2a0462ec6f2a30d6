"""The precision x target validity matrix, recipe schemas, and skipped cells in a real multirun."""

from __future__ import annotations

import pytest

from sweep_testing import CONF, compose, mlflow_client, run_cli
from helpers import RECIPES

TARGETS = ["ios13", "ios14", "ios15", "ios16", "ios17", "ios18",
           "macos10_15", "macos11", "macos12", "macos13", "macos14", "macos15"]
# Lowest ML Program release (spec version) each recipe needs; macOS N needs spec N-6. None:
# neuralnetwork targets only.
MIN_SPEC = {
    "nn_lut_linear": None,
    "fp32": 6, "fp16": 6, "fp16_mixed": 6,
    "int8": 7, "int8_per_tensor": 7, "palettize": 7, "sparse": 7,
    "w8a8": 8,
    "int8_per_block": 9, "int4_per_block": 9, "palettize_grouped": 9, "sparse_int8": 9, "sparse_palettize": 9,
}
SPEC = {"ios13": 4, "ios14": 5, "ios15": 6, "ios16": 7, "ios17": 8, "ios18": 9,
        "macos10_15": 4, "macos11": 5, "macos12": 6, "macos13": 7, "macos14": 8, "macos15": 9}
# What a neuralnetwork target (spec 4, 5) holds: quantize_weights' fp16, per-channel linear and
# per-weight look-up tables; the others, and a word of the reason they are not.
NN_VALID = {"fp32", "fp16", "int8", "palettize", "nn_lut_linear"}
NN_WHY = {
    "fp16_mixed": "per-op compute precision", "int8_per_tensor": "per output channel only",
    "int8_per_block": "per-block", "int4_per_block": "per-block", "palettize_grouped": "per-grouped-channel",
    "sparse": "sparse", "sparse_int8": "sparse", "sparse_palettize": "sparse", "w8a8": "activation quantization",
}
WHY = {
    "w8a8": "iOS17/macOS14", "int8_per_block": "per-block", "int4_per_block": "per-block",
    "palettize_grouped": "per-grouped-channel", "sparse_int8": "joint pruning + quantization",
    "sparse_palettize": "joint pruning + palettization",
}


def test_every_recipe_file_is_tested():
    assert {p.stem for p in (CONF / "precision").glob("*.yaml")} >= set(RECIPES)
    assert set(RECIPES) == set(MIN_SPEC) == NN_VALID | set(NN_WHY)


def test_validity_matrix_and_reasons():
    from precision_sweep.convert.validity import validity_matrix

    precisions = [compose([f"precision={r}"]).precision for r in RECIPES]
    targets = [compose([f"target={t}"]).target for t in TARGETS]
    matrix = validity_matrix(precisions, targets)
    for (recipe, target), reason in matrix.items():
        if SPEC[target] < 6:  # neuralnetwork
            if recipe in NN_VALID:
                assert reason is None, (recipe, target, reason)
            else:
                assert reason.startswith(f"{recipe} cannot deploy at {target}: ") and NN_WHY[recipe] in reason, reason
            continue
        if MIN_SPEC[recipe] is None:
            assert "neuralnetwork" in reason, reason
            continue
        if SPEC[target] >= MIN_SPEC[recipe]:
            assert reason is None, (recipe, target, reason)
            continue
        assert reason and reason.startswith(f"{recipe} cannot deploy at {target}: "), reason
        needed = {7: "iOS16/macOS13", 8: "iOS17/macOS14", 9: "iOS18/macOS15"}[MIN_SPEC[recipe]]
        assert needed in reason, reason
        if SPEC[target] >= 7 and recipe in WHY:
            assert WHY[recipe] in reason, reason


def test_overridden_recipes_change_validity():
    from precision_sweep.convert import invalid_reason

    ios16 = compose(["target=ios16"]).target
    cfg = compose(["precision=palettize", "precision.weight_palettization.granularity=per_grouped_channel"])
    assert "per-grouped-channel" in invalid_reason(cfg.precision, ios16)
    cfg = compose(["precision=int8", "precision.weight_quantization.dtype=int4"])
    assert "4-bit" in invalid_reason(cfg.precision, ios16)
    cfg = compose(["precision=palettize", "precision.weight_palettization.nbits=3"])
    assert "3-bit" in invalid_reason(cfg.precision, ios16)


@pytest.mark.parametrize(
    "override",
    [
        "precision.weight_palettization.nbitz=4",            # mistyped key
        "precision.weight_palettization.mode=kmean",         # not a PalettizationMode
        "precision.weight_quantization.granularity=per_blok",
        "precision.weight_quantization.dtype=int3",
        "precision.activation_quantization.calibration_samples=many",
    ],
)
def test_mistyped_recipe_keys_fail_at_composition(override):
    from hydra.errors import ConfigCompositionException

    recipe = override.split(".")[1]
    name = {"weight_palettization": "palettize", "weight_quantization": "int8", "activation_quantization": "w8a8"}[recipe]
    with pytest.raises(ConfigCompositionException):
        compose([f"precision={name}", override])


def test_recipes_map_onto_coremltools_configs():
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from precision_sweep.convert.recipes import compute_precision, optimization_config

    cfg = compose(["precision=palettize_grouped"]).precision
    config = optimization_config("OpPalettizerConfig", cfg.weight_palettization)
    assert isinstance(config.global_config, cto.OpPalettizerConfig)
    assert (config.global_config.nbits, config.global_config.group_size) == (4, 16)
    assert "per_grouped_channel" in str(config.global_config.granularity).lower()
    mixed = compute_precision(compose(["precision=fp16_mixed"]).precision)
    assert isinstance(mixed, ct.transform.FP16ComputePrecision)
    assert compute_precision(compose(["precision=fp32"]).precision) == ct.precision.FLOAT32


def test_markdown_table_lists_every_cell():
    from precision_sweep.convert.validity import markdown_table

    precisions = [compose([f"precision={r}"]).precision for r in RECIPES]
    targets = [compose([f"target={t}"]).target for t in ("ios15", "ios16", "ios17", "ios18")]
    table = markdown_table(precisions, targets).splitlines()
    assert len(table) == 2 + len(RECIPES)
    assert table[0] == "| precision | ios15 | ios16 | ios17 | ios18 |"
    assert "skipped: activation quantization (W8A8) needs iOS17/macOS14" in next(l for l in table if l.startswith("| w8a8 |"))
    targets = [compose([f"target={t}"]).target for t in ("ios13", "ios14", "ios15")]
    table = markdown_table(precisions, targets).splitlines()
    assert table[0] == "| precision | ios13 | ios14 | ios15 |"
    assert next(l for l in table if l.startswith("| int8 |")).startswith("| int8 | yes | yes | skipped: ")
    assert next(l for l in table if l.startswith("| nn_lut_linear |")).startswith("| nn_lut_linear | yes | yes | skipped: ")


def _children(outputs):
    client = mlflow_client(outputs)
    experiment = client.get_experiment_by_name("precision-sweep")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]


def _check_cells(children, recipes, targets):
    from precision_sweep.convert import invalid_reason

    assert len(children) == len(recipes) * len(targets)
    for child in children:
        recipe, target = child.data.params["precision"], child.data.params["target"]
        cfg = compose([f"precision={recipe}", f"target={target}"])
        reason = invalid_reason(cfg.precision, cfg.target)
        assert child.info.status == "FINISHED", (recipe, target)
        assert child.data.params["model_format"] == ("neuralnetwork" if SPEC[target] < 6 else "mlprogram")
        if reason:
            assert child.data.tags["precision_sweep.outcome"] == "skipped"
            assert child.data.tags["skip_reason"] == reason
            assert child.data.params["effective_target"] == "n/a"
        else:
            assert child.data.tags["precision_sweep.outcome"] == "evaluated", (recipe, target)
            if SPEC[target] < 6:  # a neuralnetwork model has the lowest spec its layers need
                assert int(child.data.params["spec_version"]) <= SPEC[target], (recipe, target)
            else:
                assert child.data.params["effective_target"] == target
            for metric in ("weights_bytes", "compression_ratio", "bits_per_weight", "model_size_bytes"):
                assert metric in child.data.metrics


@pytest.mark.slow
def test_invalid_cells_are_skipped_children_in_a_multirun(tmp_path, shared_cache):
    recipes = ["w8a8", "int4_per_block", "sparse_palettize"]
    targets = ["ios15", "macos13", "macos14"]
    result = run_cli(
        ["precision-sweep", "-m", f"precision={','.join(recipes)}", f"target={','.join(targets)}",
         f"paths.cache={shared_cache}", "dataset.limit=60", "runtime.progress=false"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    children = _children(tmp_path / "outputs")
    _check_cells(children, recipes, targets)
    evaluated = [c for c in children if c.data.tags["precision_sweep.outcome"] == "evaluated"]
    assert [(c.data.params["precision"], c.data.params["target"]) for c in evaluated] == [("w8a8", "macos14")]
    assert evaluated[0].data.params["spec_version"] == "8"


@pytest.mark.slow
def test_full_sweep_and_every_invalid_cell_of_the_matrix(tmp_path, shared_cache):
    """sweeps/full.yaml as shipped (both formats), then every recipe at the other targets
    below iOS18/macOS15."""
    full = tmp_path / "full"
    full.mkdir()
    result = run_cli(["precision-sweep", "sweep=full", f"paths.cache={shared_cache}",
                      "runtime.progress=false"], cwd=full, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_cells(_children(full / "outputs"), RECIPES, ["ios13", "ios14", "ios16", "ios17", "ios18"])
    rest = tmp_path / "rest"
    rest.mkdir()
    targets = ["ios15", "macos10_15", "macos11", "macos12", "macos13", "macos14"]
    result = run_cli(["precision-sweep", "-m", f"precision={','.join(RECIPES)}", f"target={','.join(targets)}",
                      f"paths.cache={shared_cache}", "dataset.limit=60", "runtime.progress=false"], cwd=rest, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_cells(_children(rest / "outputs"), RECIPES, targets)
