"""Config composition: defaults, groups, schema checking, ready grids."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sweep_testing import CONF, SWEEPS, compose


def test_defaults_are_the_documented_ones():
    cfg = compose()
    chosen = {g: cfg[g].name for g in ("model", "dataset", "precision", "target", "compute_units", "device", "runtime")}
    assert chosen == {
        "model": "digits_cnn",
        "dataset": "digits",
        "precision": "fp16",
        "target": "ios16",
        "compute_units": "all",
        "device": "m1",
        "runtime": "auto",
    }
    assert cfg.tracking.uri.startswith("sqlite:///")
    assert cfg.tracking.uri.endswith("/outputs/mlflow.db")


def test_every_group_option_composes_and_opens_with_a_comment():
    for group in ("model", "dataset", "precision", "target", "compute_units", "device", "runtime", "tracking"):
        options = sorted((CONF / group).glob("*.yaml"))
        assert options, group
        for option in options:
            assert option.read_text().startswith("#"), option
            assert option.stem == option.stem.lower() and " " not in option.stem
            cfg = compose([f"{group}={option.stem}"])
            assert cfg[group].name == option.stem


def test_mistyped_key_fails_at_composition():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose(["precision.compute_precison=float32"])


@pytest.mark.parametrize("override, choices", [("device=m9", ("m1", "m2", "m5")),
                                               ("compute_units=gpu", ("cpu_only", "cpu_and_gpu", "cpu_and_ne", "all"))])
def test_unknown_device_or_compute_units_fails_with_the_choices(override, choices):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as info:
        compose([override])
    assert all(choice in str(info.value) for choice in choices)


def test_a_wrong_device_or_compute_units_value_fails_at_composition():
    from hydra.errors import ConfigCompositionException

    for override in ("device.name=m9", "compute_units.name=gpu"):
        with pytest.raises(ConfigCompositionException) as info:
            compose([override])
        assert "m1" in str(info.value.__cause__) or "cpu_only" in str(info.value.__cause__)


def test_unknown_precision_fails_with_hydra_choices():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as info:
        compose(["precision=fp8"])
    assert "fp16" in str(info.value) and "int8" in str(info.value)


def test_int8_precision_maps_to_coremltools_quantizer_fields():
    cfg = compose(["precision=int8"])
    wq = cfg.precision.weight_quantization
    assert (wq.mode, wq.dtype, wq.granularity) == ("linear_symmetric", "int8", "per_channel")
    assert cfg.precision.compute_precision == "float16"


def test_every_ready_grid_is_a_multirun_of_the_sweep_group():
    from hydra.types import RunMode

    for option in sorted(SWEEPS.glob("*.yaml")):
        text = option.read_text()
        assert text.startswith("# @package _global_") and f"precision-sweep sweep={option.stem}" in text
        cfg = compose([f"sweep={option.stem}"], return_hydra_config=True)
        assert cfg.hydra.mode == RunMode.MULTIRUN and cfg.hydra.sweeper.params
        assert cfg.hydra.runtime.choices.sweep == option.stem


def test_default_sweep_file_names_its_command_and_grid():
    text = (SWEEPS / "default.yaml").read_text()
    assert "precision-sweep sweep=default" in text
    grid = OmegaConf.load(SWEEPS / "default.yaml").hydra.sweeper.params
    assert grid.precision.split(",") == ["fp32", "fp16", "int8"]
    assert grid.target.split(",") == ["ios15", "ios16", "ios17", "ios18"]
