"""Load the Keras model under test: builtin (trained and cached at first use) or from a file.

Models load with ``safe_mode=True`` unless the user opts out in config.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from precision_sweep.errors import UserInputError
from precision_sweep.hashing import hash_arrays, hash_config

log = logging.getLogger(__name__)

_MEMO: dict[str, "LoadedModel"] = {}


@dataclass
class LoadedModel:
    """A Keras model with what conversion and evaluation need to know about it."""

    name: str
    keras_model: Any
    input_name: str
    input_shape: tuple  # without the batch dimension
    outputs_are: str
    content_hash: str
    path: Path | None = None


def _content_hash(model) -> str:
    return hash_arrays(model.get_weights(), extra=model.to_json())


def _atomic_save(model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _wrap(cfg, model, path: Path | None) -> LoadedModel:
    if len(model.inputs) != 1:
        raise UserInputError(
            f"Model {cfg.name!r} has {len(model.inputs)} inputs; precision-sweep evaluates "
            "single-input classifiers. Export a single-input model."
        )
    input_name = model.inputs[0].name.split(":")[0]
    return LoadedModel(
        name=cfg.name,
        keras_model=model,
        input_name=input_name,
        input_shape=tuple(int(d) for d in model.inputs[0].shape[1:]),
        outputs_are=cfg.outputs_are,
        content_hash=_content_hash(model),
        path=path,
    )


def _builtin(cfg, dataset, cache_dir: Path) -> LoadedModel:
    import keras
    import tensorflow as tf

    from precision_sweep.data.builtin_models import BUILDERS

    builder = BUILDERS.get(cfg.builder or "")
    if builder is None:
        raise UserInputError(
            f"Unknown builtin model builder {cfg.builder!r} in model={cfg.name}. "
            f"Choose one of: {', '.join(sorted(BUILDERS))}."
        )
    key = hash_config(
        {
            "model": {k: cfg[k] for k in ("builder", "epochs", "seed")},
            "train": hash_arrays([dataset.x_train, dataset.y_train]),
            "versions": [tf.__version__, keras.__version__],
        }
    )
    if key in _MEMO:
        return _MEMO[key]
    path = cache_dir / "models" / f"{cfg.builder}-{key}.keras"
    if path.exists():
        model = keras.models.load_model(path, safe_mode=True)
    else:
        log.info("training builtin model %s (first use; cached at %s)", cfg.builder, path)
        model = builder(dataset, epochs=cfg.epochs, seed=cfg.seed)
        _atomic_save(model, path)
    loaded = _wrap(cfg, model, path)
    _MEMO[key] = loaded
    return loaded


def load_model(cfg, dataset, cache_dir: str | Path) -> LoadedModel:
    """Load the model a ``model`` config describes."""
    cache_dir = Path(cache_dir)
    if cfg.source == "builtin":
        return _builtin(cfg, dataset, cache_dir)
    raise UserInputError(
        f"Unknown model source {cfg.source!r} in model={cfg.name}. Set model.source to 'builtin'."
    )


def predict_probabilities(loaded: LoadedModel, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run the TF model in inference mode and return its outputs as float32."""
    outputs = loaded.keras_model.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(outputs, dtype=np.float32)
