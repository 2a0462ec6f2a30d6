"""Every bad input ends with a one-paragraph error, a non-zero exit and an intact MLflow store.

Each test pre-populates the store with a finished run, runs one real job in-process (the
function the Hydra app calls) or the real command, and asserts three things: the exit code,
a key phrase of the message, and that the store holds no RUNNING run and still holds the
earlier run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from byo_helpers import (
    assert_store_intact,
    image_cnn,
    prepopulate,
    random_samples,
    store_state,
    write_image_folder,
    write_npz,
)
from sweep_testing import compose, run_cli


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny real model files shared by the tests of this module."""
    root = tmp_path_factory.mktemp("models")
    cnn = image_cnn(shape=(12, 12, 3), classes=3)
    cnn.save(root / "cnn.keras")
    cnn.save(root / "cnn.h5")
    image_cnn(shape=(12, 12, 4), classes=3, name="four_channels").save(root / "rgba.keras")
    return {"cnn": root / "cnn.keras", "cnn_h5": root / "cnn.h5", "rgba": root / "rgba.keras"}


def _fails(outputs: Path, capsys, *overrides) -> str:
    """Run one job in-process as the command does; return its one-paragraph message after
    checking exit 2 and the store."""
    from precision_sweep.app import run_task

    earlier = prepopulate(outputs)
    cfg = compose([f"paths.outputs={outputs}", "runtime.progress=false", "precision=fp32", *overrides])
    with pytest.raises(SystemExit) as exit_info:
        run_task(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    message = err[err.index("precision-sweep: error:"):]
    assert "Traceback" not in message
    assert_store_intact(outputs, earlier)
    return " ".join(message.split())


def _npz_job(path: Path, model: Path) -> list[str]:
    return ["model=keras", f"model.path={model}", "dataset=npz", f"dataset.path={path}"]


def _folder_job(path: Path, model: Path, *extra) -> list[str]:
    return ["model=keras", f"model.path={model}", "dataset=image_folder", f"dataset.path={path}", *extra]


# -- model files ----------------------------------------------------------------------------


def test_missing_model_path(outputs, capsys, tmp_path):
    message = _fails(outputs, capsys, "model=keras", f"model.path={tmp_path / 'nope.keras'}")
    assert "model.path=" in message and "does not exist" in message


def test_truncated_keras_file(outputs, capsys, tmp_path, models):
    data = models["cnn"].read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    message = _fails(outputs, capsys, "model=keras", f"model.path={tmp_path / 'cut.keras'}")
    assert "truncated or corrupt" in message and "Re-save the model" in message


def test_corrupt_h5_file(outputs, capsys, tmp_path, models):
    data = models["cnn_h5"].read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[:2048])
    message = _fails(outputs, capsys, "model=keras", f"model.path={tmp_path / 'cut.h5'}")
    assert "truncated or corrupt" in message


def test_non_model_files(outputs, capsys, tmp_path):
    (tmp_path / "notes.keras").write_text("not a model\n")
    message = _fails(outputs, capsys, "model=keras", f"model.path={tmp_path / 'notes.keras'}")
    assert "is not a Keras model" in message and "zip archive" in message
    (tmp_path / "data.csv").write_text("1,2,3\n")
    message = _fails(outputs, capsys, "model=keras", f"model.path={tmp_path / 'data.csv'}")
    assert "expected a .keras or .h5 file" in message


def test_directory_is_not_a_saved_model(outputs, capsys, tmp_path):
    message = _fails(outputs, capsys, "model=saved_model", f"model.path={tmp_path}")
    assert "not a SavedModel directory" in message


# -- datasets -------------------------------------------------------------------------------


def test_empty_image_folder(outputs, capsys, tmp_path, models):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    message = _fails(outputs, capsys, *_folder_job(tmp_path / "images", models["cnn"]))
    assert "holds no PNG/JPEG images" in message


def test_image_file_that_does_not_decode_fails_naming_it(outputs, capsys, tmp_path, models):
    root = write_image_folder(tmp_path / "images", per_class=2)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    message = _fails(outputs, capsys, *_folder_job(root, models["cnn"]))
    assert "Cannot decode the image" in message and "broken.png" in message


def test_model_channels_that_images_cannot_fill(outputs, capsys, tmp_path, models):
    root = write_image_folder(tmp_path / "images", per_class=2)
    message = _fails(outputs, capsys, *_folder_job(root, models["rgba"]))
    assert "has 4 channels, which images cannot fill" in message


def test_image_size_mismatch_without_resize(outputs, capsys, tmp_path, models):
    root = write_image_folder(tmp_path / "images", per_class=2, size=(16, 20))
    message = _fails(outputs, capsys, *_folder_job(root, models["cnn"], "dataset.resize=false"))
    assert "dataset.resize=false" in message and "16x20" in message


def test_npz_samples_of_the_wrong_shape(outputs, capsys, tmp_path, models):
    x, y = random_samples(10, (8, 8, 3), 3)
    message = _fails(outputs, capsys, *_npz_job(write_npz(tmp_path / "d.npz", x, y), models["cnn"]))
    assert "have shape (8, 8, 3)" in message and "takes (12, 12, 3)" in message


def test_labels_outside_the_model_classes(outputs, capsys, tmp_path, models):
    x, y = random_samples(10, (12, 12, 3), 3)
    y[3] = 7
    message = _fails(outputs, capsys, *_npz_job(write_npz(tmp_path / "d.npz", x, y), models["cnn"]))
    assert "labels outside the model's output classes" in message and "outputs 3 classes" in message


def test_more_class_folders_than_model_outputs(outputs, capsys, tmp_path, models):
    root = write_image_folder(tmp_path / "images", classes=("a", "b", "c", "d"), per_class=2)
    message = _fails(outputs, capsys, *_folder_job(root, models["cnn"]))
    assert "outside the model's output classes" in message


def test_x_and_y_of_different_lengths(outputs, capsys, tmp_path, models):
    x, y = random_samples(10, (12, 12, 3), 3)
    message = _fails(outputs, capsys, *_npz_job(write_npz(tmp_path / "d.npz", x, y[:7]), models["cnn"]))
    assert "10 samples in x but 7 labels in y" in message


def test_npz_with_object_arrays_is_refused_without_pickle(outputs, capsys, tmp_path, models):
    x = np.empty(3, dtype=object)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(3))
    message = _fails(outputs, capsys, *_npz_job(tmp_path / "d.npz", models["cnn"]))
    assert "without pickle" in message


def test_missing_npz_path(outputs, capsys, tmp_path, models):
    message = _fails(outputs, capsys, *_npz_job(tmp_path / "none.npz", models["cnn"]))
    assert "dataset.path=" in message and "does not exist" in message


# -- the command: unknown choices, unreachable tracking store, multirun up-front checks ------


def test_unknown_precision_lists_the_choices(tmp_path):
    outputs = tmp_path / "outputs"
    earlier = prepopulate(outputs)
    result = run_cli(["precision-sweep", "precision=fp7"], cwd=tmp_path)
    assert result.returncode != 0
    assert "fp7" in result.stderr and "fp16" in result.stderr
    assert_store_intact(outputs, earlier)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_tracking_uri_fails_fast(tmp_path):
    outputs = tmp_path / "outputs"
    earlier = prepopulate(outputs)
    start = time.monotonic()
    result = run_cli(
        ["precision-sweep", "-m", "precision=fp32,fp16", "target=ios16",
         f"tracking.uri=http://127.0.0.1:{_closed_port()}"],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Cannot reach the MLflow tracking store" in result.stderr
    assert time.monotonic() - start < 60
    assert_store_intact(outputs, earlier)


def test_multirun_checks_source_paths_once_before_any_run(tmp_path):
    outputs = tmp_path / "outputs"
    earlier = prepopulate(outputs)
    before = store_state(outputs)
    result = run_cli(
        ["precision-sweep", "-m", "precision=fp32,fp16", "target=ios16", "runtime.progress=false",
         "model=keras", f"model.path={tmp_path / 'missing.keras'}"],
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert " ".join(result.stderr.split()).count("does not exist") == 1
    assert "Launching" not in result.stdout + result.stderr
    assert store_state(outputs) == before  # no parent run, no job run
    assert_store_intact(outputs, earlier)


def test_validate_sources_is_cheap_and_checks_kinds(tmp_path, models):
    from precision_sweep.data import validate_sources
    from precision_sweep.errors import UserInputError

    validate_sources(compose())  # the embedded default has no paths
    validate_sources(compose(["model=keras", f"model.path={models['cnn']}"]))
    # Cheap: in a fresh process, validating the real .keras and .h5 models imports neither
    # TensorFlow nor Keras (nor coremltools), so no model is loaded; an .h5 file's header is read
    # with h5py (its model_config attribute), nothing more.
    script = textwrap.dedent(
        """
        import sys
        from sweep_testing import compose
        from precision_sweep.data import validate_sources
        for path in sys.argv[1:]:
            validate_sources(compose(["model=keras", f"model.path={path}"]))
        print(" ".join(sorted(m for m in ("tensorflow", "keras", "tf_keras", "coremltools") if m in sys.modules)))
        """
    )
    fresh = subprocess.run([sys.executable, "-c", script, str(models["cnn"]), str(models["cnn_h5"])],
                           capture_output=True, text=True, check=True, cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert fresh.stdout.split() == [], fresh.stdout
    with pytest.raises(UserInputError, match="is a directory, not an .npz file"):
        validate_sources(compose(["dataset=npz", f"dataset.path={tmp_path}"]))
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(UserInputError, match="is a file, not a folder"):
        validate_sources(compose(["dataset=image_folder", f"dataset.path={tmp_path / 'f.png'}"]))
    with pytest.raises(UserInputError, match="model.path is not set"):
        validate_sources(compose(["model=keras"]))
