"""``model.source=keras``: a Keras 3 ``.keras``/``.h5`` file, passed to coremltools as the
Keras model."""

from __future__ import annotations

from pathlib import Path

from precision_sweep.data.models.card import load_with_card
from precision_sweep.data.models.interface import wrap_keras_model
from precision_sweep.data.models.loaded import LoadedModel
from precision_sweep.data.models.safety import load_failed, refuse_unsafe
from precision_sweep.errors import UserInputError
from precision_sweep.hashing import hash_path, modules_fingerprint
from precision_sweep.targets import import_modules


def load_keras_file(cfg, path: Path, cache_dir: Path | None = None) -> LoadedModel:
    """The model; from its card when one is cached (Keras then loads when first needed)."""
    refuse_unsafe(cfg, path)  # safe mode is checked by every job, loaded or not
    return load_with_card(cfg, path, cache_dir, lambda: _load(cfg, path))


def _load(cfg, path: Path) -> LoadedModel:
    import keras

    lambdas = refuse_unsafe(cfg, path)
    import_modules(cfg.get("imports") or [], "model.imports", "before the model loads, to register its custom layers")
    try:
        model = keras.models.load_model(path, safe_mode=bool(cfg.safe_mode), compile=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is the file's
        raise load_failed(path, exc, f"Keras {keras.__version__}") from exc
    if not isinstance(model, keras.Model):
        raise UserInputError(f"model.path={path} loaded as {type(model).__name__}, not a Keras model.")
    loaded = wrap_keras_model(cfg, model, path)
    extra = ["keras", loaded.output_name, list(loaded.input_shape)]
    if cfg.get("imports"):
        extra.append(modules_fingerprint(cfg.imports))
    loaded.content_hash = hash_path(path, extra)
    if lambdas:
        loaded.run_params["model_lambda_layers"] = ",".join(lambdas)
    return loaded
