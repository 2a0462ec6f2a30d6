"""``model.source=builtin``: a small model trained on the dataset at first use and cached on
disk (one worker trains, the others wait for its file)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from precision_sweep.cache import file_lock
from precision_sweep.data.models.card import load_with_card
from precision_sweep.data.models.interface import wrap_keras_model
from precision_sweep.data.models.loaded import LoadedModel
from precision_sweep.data.versions import library_version
from precision_sweep.errors import UserInputError
from precision_sweep.hashing import hash_arrays, hash_config

log = logging.getLogger(__name__)

_MEMO: dict[str, LoadedModel] = {}


def atomic_save(model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

def load_builtin(cfg, dataset, cache_dir: Path) -> LoadedModel:
    """The trained model (trained now at first use); from its card when one is cached, so
    Keras loads it only when first needed."""
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
            "versions": [library_version("tensorflow"), library_version("keras")],
        }
    )
    path = cache_dir / "models" / f"{cfg.builder}-{key}.keras"
    if str(path) in _MEMO:  # per cache file: another cache dir gets its own copy
        return _MEMO[str(path)]
    if not path.exists():
        # One worker trains; the others wait for the lock and then load its file.
        with file_lock(path.with_suffix(".lock")):
            if not path.exists():
                log.info("training builtin model %s (first use; cached at %s)", cfg.builder, path)
                atomic_save(builder(dataset, epochs=cfg.epochs, seed=cfg.seed), path)
    loaded = load_with_card(cfg, path, cache_dir, lambda: _load(cfg, path))
    _MEMO[str(path)] = loaded
    return loaded


def _load(cfg, path: Path) -> LoadedModel:
    import keras

    return wrap_keras_model(cfg, keras.models.load_model(path, safe_mode=True), path)
