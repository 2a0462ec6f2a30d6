"""Tiny real models and datasets written to ``tmp_path`` for the bring-your-own tests.

Models are trained for a few steps at most: the tests check the pipeline (load, convert,
execute, compare), not the accuracy of the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RNG_SEED = 0


def image_cnn(shape=(12, 12, 3), classes=3, name="tiny_cnn", logits=False):
    """A small Keras 3 CNN classifier (softmax unless ``logits``)."""
    import keras

    keras.utils.set_random_seed(RNG_SEED)
    inputs = keras.Input(shape, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation=None if logits else "softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name=name)


def two_output_mlp(features=6, classes=4):
    """A Keras 3 model with two outputs: class probabilities and an auxiliary regression."""
    import keras

    keras.utils.set_random_seed(RNG_SEED)
    inputs = keras.Input((features,), name="feat")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    probs = keras.layers.Dense(classes, activation="softmax", name="probs")(hidden)
    aux = keras.layers.Dense(1, name="aux")(hidden)
    return keras.Model(inputs, [probs, aux], name="two_heads")


def lambda_model(features=6, classes=3):
    """A Keras 3 model with a Lambda layer (stored Python code: refused by safe mode)."""
    import keras

    keras.utils.set_random_seed(RNG_SEED)
    inputs = keras.Input((features,), name="feat")
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="with_lambda")


def tf_keras_gru(steps=5, features=3, classes=4):
    """A legacy Keras 2 (tf_keras) GRU classifier."""
    import tf_keras

    tf_keras.utils.set_random_seed(RNG_SEED)
    inputs = tf_keras.Input((steps, features), name="seq")
    x = tf_keras.layers.GRU(6, name="gru")(inputs)
    outputs = tf_keras.layers.Dense(classes, activation="softmax", name="probs")(x)
    return tf_keras.Model(inputs, outputs)


def keras3_gru(steps=5, features=3, classes=4):
    import keras

    keras.utils.set_random_seed(RNG_SEED)
    inputs = keras.Input((steps, features), name="seq")
    x = keras.layers.GRU(6, name="gru")(inputs)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="gru_model")


def grouped_conv(channels=4):
    import keras

    keras.utils.set_random_seed(RNG_SEED)
    inputs = keras.Input((8, 8, channels), name="image")
    x = keras.layers.Conv2D(channels, 3, groups=channels, name="gconv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="grouped")


def write_image_folder(root: Path, classes=("cat", "dog", "eel"), per_class=4, size=(16, 20), mode="RGB", seed=0) -> Path:
    """Write random PNG (and one JPEG) images, one subfolder per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size[0], size[1], channels), dtype=np.uint8)
            image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)
            suffix = ".jpg" if i == 0 and label == 0 else ".png"
            image.save(folder / f"{i:03d}{suffix}")
    return root


def write_npz(path: Path, x: np.ndarray, y: np.ndarray, **extra) -> Path:
    np.savez(path, x=x, y=y, **extra)
    return path


def random_samples(n: int, shape: tuple, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32)
    y = np.arange(n) % classes
    return x, y.astype(np.int64)


_TEMPLATE: dict[str, tuple[Path, str]] = {}


def prepopulate(outputs: Path) -> str:
    """A store holding one FINISHED run at ``outputs/mlflow.db``; returns that run's id.

    Creating an MLflow SQLite database runs its migrations (seconds), so the store is built
    once per process and copied.
    """
    import shutil
    import tempfile

    from mlflow.tracking import MlflowClient

    from precision_sweep.tracking import store

    if "db" not in _TEMPLATE:
        root = Path(tempfile.mkdtemp(prefix="byo-store-"))
        uri = f"sqlite:///{root / 'mlflow.db'}"
        experiment_id = store.prepare_experiment(uri, "precision-sweep", str(root / "mlartifacts"))
        client = MlflowClient(tracking_uri=uri)
        run = client.create_run(experiment_id, run_name="earlier")
        client.log_metric(run.info.run_id, "accuracy", 0.5)
        client.set_terminated(run.info.run_id, "FINISHED")
        _TEMPLATE["db"] = (root / "mlflow.db", run.info.run_id)
    template, run_id = _TEMPLATE["db"]
    outputs.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, outputs / "mlflow.db")
    return run_id


def store_state(outputs: Path) -> dict[str, str]:
    """run id -> status of every run in the test's store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("precision-sweep")
    if experiment is None:
        return {}
    return {r.info.run_id: r.info.status for r in client.search_runs([experiment.experiment_id])}


def assert_store_intact(outputs: Path, earlier_run_id: str) -> dict[str, str]:
    state = store_state(outputs)
    assert state.get(earlier_run_id) == "FINISHED", state
    assert "RUNNING" not in state.values(), state
    return state


def refused(outputs: Path, capsys, program: str, call) -> str:
    """Run ``call()`` (an entry point in-process) on a store holding an earlier run; check exit 2,
    a one-paragraph ``<program>: error:`` without a traceback and the store intact; return the
    message on one line."""
    import pytest

    earlier = prepopulate(outputs)
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    message = err[err.index(f"{program}: error:"):]
    assert "Traceback" not in message
    assert_store_intact(outputs, earlier)
    return " ".join(message.split())
