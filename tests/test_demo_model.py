"""model=digits_mlp_sensitive on dataset=digits_shifted, the demo where per-layer precision
matters: uniform 2-bit palettization breaks a 1 pp budget, int8 keeps it, and 2 bits on
``wide2`` alone (8 bits elsewhere) keeps it at a clearly smaller size than uniform 4-bit. Real
training, conversions and emulation at iOS18 on the 4,050 test samples (on the 450 of plain
digits, one training run's 4-bit delta was -0.44 pp and another's -1.33 pp: the test split
must resolve the budget whatever the training's thread timing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweep_testing import compose

# Trains the demo model in a cache of its own (about 80 s): in the slow tier.
pytestmark = pytest.mark.slow

BUDGET_PP = 1.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from precision_sweep.data import load_dataset, load_model

    outputs = tmp_path_factory.mktemp("demo")
    cfg = compose([f"paths.outputs={outputs}", "model=digits_mlp_sensitive", "dataset=digits_shifted", "target=ios18"])
    dataset = load_dataset(cfg.dataset)
    model = load_model(cfg.model, dataset, cfg.paths.cache)
    baseline = model.keras_model.predict(dataset.x_test, verbose=0).argmax(1)
    return cfg, dataset, model, float(np.mean(baseline == dataset.y_test))


def _convert(demo, name: str, *overrides: str):
    from precision_sweep.convert import convert_variant

    cfg, _, model, _ = demo
    recipe = compose([f"paths.outputs={cfg.paths.outputs}", "target=ios18", *overrides])
    path = Path(cfg.paths.outputs) / f"{name}.mlpackage"
    return convert_variant(model, recipe.precision, recipe.target, path, cache_dir=cfg.paths.cache).path


def _delta_pp_and_size(demo, path) -> tuple[float, int]:
    from precision_sweep.convert.converter import package_size
    from precision_sweep.emulator import Emulator

    _, dataset, _, baseline_accuracy = demo
    emulator = Emulator(str(path), "cpu_only")
    probs = emulator.predict({emulator.input_names[0]: dataset.x_test})[emulator.output_names[0]]
    accuracy = float(np.mean(probs.argmax(1) == dataset.y_test))
    return (accuracy - baseline_accuracy) * 100, package_size(path)


def test_uniform_2bit_breaks_the_budget_and_int8_keeps_it(demo):
    assert demo[3] >= 0.95
    pal2, _ = _delta_pp_and_size(demo, _convert(demo, "pal2", "precision=palettize", "precision.weight_palettization.nbits=2"))
    int8, _ = _delta_pp_and_size(demo, _convert(demo, "int8", "precision=int8"))
    assert pal2 < -3 * BUDGET_PP, f"uniform 2-bit palettization moved accuracy by only {pal2:+.2f} pp"
    assert int8 >= -BUDGET_PP, f"int8 moved accuracy by {int8:+.2f} pp"


def test_2bit_on_wide2_alone_meets_the_budget_smaller_than_uniform_4bit(demo):
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    cfg = demo[0]
    pal4, pal4_size = _delta_pp_and_size(demo, _convert(demo, "pal4", "precision=palettize", "precision.weight_palettization.nbits=4"))
    assert pal4 >= -BUDGET_PP
    fp16 = ct.models.MLModel(str(_convert(demo, "fp16", "precision=fp16")), skip_model_load=True)
    weights = cto.get_weights_metadata(fp16, weight_threshold=128)
    # The weight consts are named transpose_<i>...; the layer is in the op that reads them.
    wide2 = [name for name, meta in weights.items() if any("_wide2_" in op.name for op in meta.child_ops)]
    assert wide2, f"no weight of layer wide2 among {sorted(weights)}"
    kmeans = {"mode": "kmeans", "granularity": "per_tensor", "weight_threshold": 128}
    config = cto.OptimizationConfig(
        global_config=cto.OpPalettizerConfig(nbits=8, **kmeans),
        op_name_configs={name: cto.OpPalettizerConfig(nbits=2, **kmeans) for name in wide2},
    )
    path = Path(cfg.paths.outputs) / "mixed.mlpackage"
    cto.palettize_weights(fp16, config).save(str(path))
    mixed, mixed_size = _delta_pp_and_size(demo, path)
    assert mixed >= -BUDGET_PP, f"2 bits on wide2 moved accuracy by {mixed:+.2f} pp"
    assert mixed_size <= 0.8 * pal4_size, f"mixed {mixed_size} bytes vs uniform 4-bit {pal4_size}"
