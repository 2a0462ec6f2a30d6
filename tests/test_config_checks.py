"""Config values are checked before any work: fixed choices at composition, numeric ranges and
folders before a run exists, NaN/Inf samples at load."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException

from sweep_testing import CONF, compose, run_cli

# (overrides, the key named, the valid range named)
OUT_OF_RANGE = [
    (["runtime.batch_size=0"], "runtime.batch_size=0", "a whole number of at least 1"),
    (["precision=palettize", "precision.weight_palettization.nbits=5"], "precision.weight_palettization.nbits=5", "one of 1, 2, 3, 4, 6, 8"),
    (["precision=palettize_grouped", "precision.weight_palettization.group_size=0"], "precision.weight_palettization.group_size=0", "at least 1"),
    (["precision=sparse", "precision.weight_pruning.target_sparsity=1.5"], "precision.weight_pruning.target_sparsity=1.5", "in [0, 1)"),
    (["precision=int8_per_block", "precision.weight_quantization.block_size=0"], "precision.weight_quantization.block_size=0", "at least 1"),
    (["precision=int8", "precision.weight_quantization.weight_threshold=-1"], "precision.weight_quantization.weight_threshold=-1", "at least 0"),
    (["precision=w8a8", "precision.activation_quantization.calibration_samples=0"], "precision.activation_quantization.calibration_samples=0", "at least 1"),
    (["precision=fp16_auto", "precision.auto_repair.min_agreement=1.5"], "precision.auto_repair.min_agreement=1.5", "in [0, 1]"),
    (["precision=fp16_auto", "precision.auto_repair.calib_samples=0"], "precision.auto_repair.calib_samples=0", "at least 1"),
    (["dataset.calib_size=-1"], "dataset.calib_size=-1", "at least 0"),
    (["dataset.test_size=0"], "dataset.test_size=0.0", "in (0, 1]"),
    (["dataset.limit=0"], "dataset.limit=0", "dataset.limit=null evaluates every test sample"),
    (["model.max_batch=0"], "model.max_batch=0", "at least 1"),
    (["pick.max_drop=-1"], "pick.max_drop=-1.0", "at least 0"),
    (["pick.confidence=1"], "pick.confidence=1.0", "in (0, 1)"),
    (["pick.n_resamples=10"], "pick.n_resamples=10", "at least 100"),
    (["diagnosis.samples=0"], "diagnosis.samples=0", "at least 1"),
    (["diagnosis.below_agreement=-0.5"], "diagnosis.below_agreement=-0.5", "of at least 0"),
    (["limits.timeout_minutes=0"], "limits.timeout_minutes=0.0", "limits.timeout_minutes=null for no limit"),
    (["seed=-1"], "seed=-1", "in [0, 4294967295]"),
]


@pytest.mark.parametrize(("overrides", "key", "valid"), OUT_OF_RANGE, ids=[o[-1] for o, _, _ in OUT_OF_RANGE])
def test_a_value_outside_its_range_is_named_with_the_range(overrides, key, valid):
    from precision_sweep.config_checks import check_ranges
    from precision_sweep.errors import UserInputError

    with pytest.raises(UserInputError) as raised:
        check_ranges(compose(overrides))
    message = str(raised.value)
    assert message.startswith(key + " is not ") and valid in message, message


def test_every_problem_is_named_in_one_paragraph():
    from precision_sweep.config_checks import check_ranges
    from precision_sweep.errors import UserInputError

    with pytest.raises(UserInputError) as raised:
        check_ranges(compose(["runtime.batch_size=0", "pick.max_drop=-1"]))
    assert "runtime.batch_size=0" in str(raised.value) and "pick.max_drop=-1.0" in str(raised.value)


@pytest.mark.parametrize("group", ["precision", "model", "dataset", "target", "compute_units", "device", "diagnosis", "pick"])
def test_every_shipped_option_is_within_range(group):
    from precision_sweep.config_checks import check_ranges

    for option in sorted((CONF / group).glob("*.yaml")):
        check_ranges(compose([f"{group}={option.stem}"]))


@pytest.mark.parametrize(("override", "choices"), [
    ("model.outputs_are=softmax", "probabilities, logits"),
    ("model.source=onnx", "builtin, keras, saved_model, tf_keras"),
    ("dataset.layout=nwhc", "nhwc, nchw"),
    ("dataset.color=cmyk", "auto, grayscale, rgb"),
    ("runtime.name=fast", "auto, emulator, coreml"),
    ("pick.rule=strict", "point, confident"),
])
def test_a_wrong_choice_fails_at_composition_with_the_choices(override, choices):
    with pytest.raises(ConfigCompositionException) as raised:
        compose([override])
    assert f"expected one of [{choices}]" in str(raised.value.__cause__ or raised.value)


def test_out_of_range_value_exits_2_before_anything_is_stored(outputs):
    result = run_cli(["precision-sweep", f"paths.outputs={outputs}", "precision=palettize",
                      "precision.weight_palettization.nbits=5"], cwd=outputs)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "precision.weight_palettization.nbits=5 is not one of 1, 2, 3, 4, 6, 8" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (outputs / "mlflow.db").exists() and not (outputs / "runs").exists()


def test_a_grid_is_refused_before_its_parent_run_when_a_shared_value_is_out_of_range(outputs):
    result = run_cli(["precision-sweep", "-m", f"paths.outputs={outputs}", "precision=fp32,fp16",
                      "runtime.batch_size=0"], cwd=outputs)
    assert result.returncode == 2 and "runtime.batch_size=0 is not a whole number of at least 1" in " ".join(result.stderr.split())
    assert not (outputs / "mlflow.db").exists()


def test_an_output_folder_that_is_a_file_is_refused_up_front(tmp_path):
    a_file = tmp_path / "outputs"
    a_file.write_text("not a folder")
    result = run_cli(["precision-sweep", f"paths.outputs={a_file}"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"paths.outputs={a_file} is a file" in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert a_file.read_text() == "not a folder"


def test_folder_checks(tmp_path):
    from precision_sweep.config_checks import check_folder, check_folders
    from precision_sweep.errors import UserInputError

    check_folder(tmp_path / "new" / "deeper", "paths.cache")  # created later: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="needs .*file as a folder, but that is a file"):
        check_folder(tmp_path / "file" / "cache", "paths.cache")
    (tmp_path / "db").mkdir()
    with pytest.raises(UserInputError, match="names a folder, not a database file"):
        check_folders(compose([f"paths.outputs={tmp_path}", f"tracking.uri=sqlite:///{tmp_path / 'db'}"]))
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(UserInputError, match="is not writable by this user"):
            check_folder(locked / "outputs", "paths.outputs")


def test_samples_with_nan_or_inf_are_refused_at_load_with_count_and_first_index(tmp_path):
    from precision_sweep.data.loading import load_dataset
    from precision_sweep.errors import UserInputError

    x = np.random.default_rng(0).random((40, 8, 8, 1)).astype(np.float32)
    x[7, 2, 3, 0] = np.nan
    x[21, 0, 0, 0] = np.inf
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=np.arange(40) % 4)
    cfg = compose(["dataset=npz", f"dataset.path={path}"]).dataset
    with pytest.raises(UserInputError, match=r"2 of 40 samples .* hold NaN or Inf values \(the first is sample 7\)"):
        load_dataset(cfg)


def test_the_configuration_page_lists_the_generated_rules():
    from pathlib import Path

    from precision_sweep.config import Config
    from precision_sweep.config_checks import rules_markdown

    page = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    block = page.split("<!-- config-rules:start -->\n")[1].split("\n<!-- config-rules:end -->")[0]
    assert block == rules_markdown(Config)
    assert "| `precision.weight_palettization.nbits` | one of 1, 2, 3, 4, 6, 8 |" in block


def test_a_long_path_in_an_error_is_never_broken_across_lines(capsys):
    from precision_sweep.cli.report import fail

    path = "/tmp/pytest-of-root/pytest-131/popen-gw1/test-an-output-folder-that-is-a-file-0/" + "x" * 120
    with pytest.raises(SystemExit):
        fail("precision-sweep", f"error: paths.outputs={path} is a file. Point paths.outputs at a folder.")
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if path in line], lines  # the whole path on one line


def test_shards_without_ray_installed_are_refused_before_any_work(monkeypatch):
    """runtime.shards=2 on a machine without Ray: one paragraph naming the fix; 1 needs nothing."""
    import importlib.util

    from precision_sweep.config_checks import check_shards
    from precision_sweep.errors import UserInputError
    from sweep_testing import compose

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    with pytest.raises(UserInputError, match=r"runtime.shards=2 .* Ray is not installed .*pip install -e '.\[ray\]'"):
        check_shards(compose(["runtime.shards=2"]))
    check_shards(compose(["runtime.shards=1"]))
