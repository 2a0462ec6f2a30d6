"""Load the model under test: builtin (trained and cached at first use) or from the user's files.

* ``keras``: a Keras 3 ``.keras``/``.h5`` file, passed to coremltools as the Keras model;
* ``saved_model``: a SavedModel directory; one signature (``model.signature``) is wrapped in a
  concrete function with one input and the chosen output, because coremltools converts exactly
  one concrete function;
* ``tf_keras``: a ``.keras``/``.h5`` file loaded with legacy Keras 2 (package ``tf_keras``), for
  models (recurrent ones) that only convert from Keras 2 graphs; passed as a concrete function.

Files load with ``safe_mode=True``: a file with Lambda layers (stored Python code) is refused
unless the config opts out with ``model.safe_mode=false``, which the run records.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from precision_sweep.cache import file_lock
from precision_sweep.data.validate import check_model_path
from precision_sweep.errors import UserInputError
from precision_sweep.hashing import hash_arrays, hash_config, hash_path

log = logging.getLogger(__name__)

_MEMO: dict[str, "LoadedModel"] = {}


@dataclass
class LoadedModel:
    """A model with what conversion and evaluation need to know about it."""

    name: str
    # What ct.convert takes: a Keras 3 model, or a list with one TF concrete function.
    keras_model: Any
    input_name: str
    input_shape: tuple  # without the batch dimension
    outputs_are: str
    content_hash: str
    path: Path | None = None
    input_dtype: str = "float32"
    n_outputs: int | None = None  # classes of the evaluated output
    output_name: str = ""
    # The loaded model with its layers (Keras 3 / tf_keras model, or the SavedModel object):
    # the conversion doctor reads its layers, and it keeps SavedModel variables alive.
    source_model: Any = None
    # Batch -> outputs; None means ``keras_model.predict``.
    predict_fn: Callable[[np.ndarray], np.ndarray] | None = None
    run_params: dict = field(default_factory=dict)


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


# ----------------------------------------------------------------------------------------------
# Shared checks


def _resolve_shape(cfg, model_shape, where: str) -> tuple:
    """The per-sample input shape: the model's, with open dimensions filled from model.input_shape."""
    model_shape = tuple(None if d is None else int(d) for d in model_shape)
    if cfg.input_shape is None:
        if any(d is None for d in model_shape):
            raise UserInputError(
                f"The input of {where} has open dimensions {model_shape} (None = any size); the "
                "converted program needs fixed ones. Set model.input_shape=[...] without the batch "
                f"dimension, e.g. model.input_shape=[{','.join(str(d or 8) for d in model_shape)}]."
            )
        return model_shape
    wanted = tuple(int(d) for d in cfg.input_shape)
    if len(wanted) != len(model_shape) or any(m is not None and m != w for m, w in zip(model_shape, wanted)):
        raise UserInputError(
            f"model.input_shape={list(wanted)} does not fit the input of {where}, which has shape "
            f"{model_shape} without the batch dimension (None = any size). Set model.input_shape to "
            "match, or to null to use the model's own."
        )
    return wanted


def _resolve_dtype(cfg, model_dtype: str, where: str) -> str:
    if cfg.input_dtype is not None and str(cfg.input_dtype) != model_dtype:
        raise UserInputError(
            f"model.input_dtype={cfg.input_dtype} but the input of {where} is {model_dtype}. Set "
            f"model.input_dtype={model_dtype} (or null): the data is cast to the model's input dtype."
        )
    return model_dtype


def _select_output(cfg, names: list[str], where: str) -> int:
    """Index of the evaluated output among ``names``."""
    if cfg.output is None:
        if len(names) != 1:
            raise UserInputError(
                f"{where} has {len(names)} outputs ({', '.join(names)}); say which one to evaluate "
                f"with model.output=<name or index>, e.g. model.output={names[0]}."
            )
        return 0
    choice = str(cfg.output)
    if choice in names:
        return names.index(choice)
    if choice.lstrip("-").isdigit() and -len(names) <= int(choice) < len(names):
        return int(choice) % len(names)
    raise UserInputError(
        f"model.output={choice} is not an output of {where}; its outputs are: {', '.join(names)} "
        f"(or an index 0..{len(names) - 1})."
    )


def _n_outputs(shape, output_name: str, where: str) -> int:
    shape = tuple(shape)
    if len(shape) != 2 or shape[-1] is None:
        raise UserInputError(
            f"Output {output_name!r} of {where} has shape {shape}; precision-sweep evaluates "
            "classifiers whose output is (batch, classes). Select another output with model.output, "
            "or export a model whose output is the class scores."
        )
    return int(shape[-1])


def _keras_config(path: Path) -> dict | None:
    """The architecture JSON stored in a .keras or .h5 file (None if unreadable)."""
    try:
        if path.suffix.lower() == ".keras":
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get("model_config")
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw is not None else None
    except Exception:  # noqa: BLE001 - the loader reports unreadable files
        return None


def lambda_layers(config: Any) -> list[str]:
    """Names of the Lambda layers anywhere in a Keras architecture config."""
    found: list[str] = []
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            found.append(str((config.get("config") or {}).get("name", "?")))
        for value in config.values():
            found += lambda_layers(value)
    elif isinstance(config, list):
        for value in config:
            found += lambda_layers(value)
    return found


def _guard_unsafe(cfg, path: Path) -> list[str]:
    lambdas = lambda_layers(_keras_config(path))
    if lambdas and cfg.safe_mode:
        raise UserInputError(
            f"model.path={path} contains Lambda layer(s) {', '.join(lambdas)}: loading them runs Python "
            "code stored in the file, which safe mode refuses. If you trust the file, opt in with "
            "model.safe_mode=false (the run records model_safe_mode=False); better, replace the Lambda "
            "with a registered custom layer."
        )
    return lambdas


def _load_failed(path: Path, exc: Exception, library: str) -> UserInputError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return UserInputError(
        f"Cannot load model.path={path} with {library} ({type(exc).__name__}: {first[:300]}). The file "
        "may be truncated or corrupt, need custom objects, or come from another Keras: re-save it "
        "with model.save('model.keras'); Keras 2 (tf.keras <= 2.15) files load with model=tf_keras."
    )


def _params(cfg, loaded: LoadedModel, **extra) -> dict:
    return {
        "model_source": cfg.source,
        "model_safe_mode": bool(cfg.safe_mode),
        "model_input": f"{loaded.input_name} {list(loaded.input_shape)} {loaded.input_dtype}",
        "model_output": loaded.output_name,
        "model_outputs_are": loaded.outputs_are,
        **extra,
    }


def _batched(fn: Callable[[np.ndarray], np.ndarray], batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    def predict(x: np.ndarray) -> np.ndarray:
        parts = [np.asarray(fn(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts, axis=0)

    return predict


# ----------------------------------------------------------------------------------------------
# Sources


def _wrap(cfg, model, path: Path | None) -> LoadedModel:
    """A Keras 3 model: one input, the selected output."""
    import keras

    where = f"model={cfg.name}"
    if len(model.inputs) != 1:
        raise UserInputError(
            f"Model {cfg.name!r} has {len(model.inputs)} inputs; precision-sweep evaluates "
            "single-input classifiers. Export a single-input model."
        )
    input_name = model.inputs[0].name.split(":")[0]
    if cfg.input_name is not None and cfg.input_name != input_name:
        raise UserInputError(
            f"model.input_name={cfg.input_name} but the input of {where} is named {input_name!r}. "
            f"Set model.input_name={input_name} (or null)."
        )
    names = list(getattr(model, "output_names", None) or [t.name.split(":")[0] for t in model.outputs])
    index = _select_output(cfg, names, where)
    if len(model.outputs) > 1:
        model = keras.Model(model.inputs, model.outputs[index], name=f"{model.name}_{names[index]}")
    loaded = LoadedModel(
        name=cfg.name,
        keras_model=model,
        input_name=input_name,
        input_shape=_resolve_shape(cfg, model.inputs[0].shape[1:], where),
        outputs_are=cfg.outputs_are,
        content_hash=_content_hash(model),
        path=path,
        input_dtype=_resolve_dtype(cfg, str(model.inputs[0].dtype), where),
        n_outputs=_n_outputs(model.outputs[0].shape, names[index], where),
        output_name=names[index],
        source_model=model,
    )
    loaded.run_params = _params(cfg, loaded)
    return loaded


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
    path = cache_dir / "models" / f"{cfg.builder}-{key}.keras"
    if str(path) in _MEMO:  # per cache file: another cache dir gets its own copy
        return _MEMO[str(path)]
    if not path.exists():
        # One worker trains; the others wait for the lock and then load its file.
        with file_lock(path.with_suffix(".lock")):
            if not path.exists():
                log.info("training builtin model %s (first use; cached at %s)", cfg.builder, path)
                _atomic_save(builder(dataset, epochs=cfg.epochs, seed=cfg.seed), path)
    model = keras.models.load_model(path, safe_mode=True)
    loaded = _wrap(cfg, model, path)
    _MEMO[str(path)] = loaded
    return loaded


def _keras(cfg, path: Path) -> LoadedModel:
    import keras

    lambdas = _guard_unsafe(cfg, path)
    try:
        model = keras.models.load_model(path, safe_mode=bool(cfg.safe_mode), compile=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is the file's
        raise _load_failed(path, exc, f"Keras {keras.__version__}") from exc
    if not isinstance(model, keras.Model):
        raise UserInputError(f"model.path={path} loaded as {type(model).__name__}, not a Keras model.")
    loaded = _wrap(cfg, model, path)
    loaded.content_hash = hash_path(path, ["keras", loaded.output_name, list(loaded.input_shape)])
    if lambdas:
        loaded.run_params["model_lambda_layers"] = ",".join(lambdas)
    return loaded


def _concrete(call, shape: tuple, dtype: str, name: str):
    import tensorflow as tf

    function = tf.function(call, input_signature=[tf.TensorSpec((None, *shape), tf.as_dtype(dtype), name=name)])
    return function.get_concrete_function()


def _saved_model(cfg, path: Path) -> LoadedModel:
    import tensorflow as tf

    try:
        saved = tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise _load_failed(path, exc, f"tf.saved_model.load (TensorFlow {tf.__version__})") from exc
    signatures = dict(saved.signatures)
    where = f"signature {cfg.signature!r} of model.path={path}"
    if cfg.signature not in signatures:
        raise UserInputError(
            f"model.path={path} has no signature {cfg.signature!r}; it has: "
            f"{', '.join(signatures) or 'none (save with model.export(dir) or a tf.function signature)'}. "
            f"Set model.signature={next(iter(signatures), 'serving_default')}."
        )
    signature = signatures[cfg.signature]
    inputs = dict(signature.structured_input_signature[1])
    if len(inputs) != 1:
        raise UserInputError(
            f"The {where} takes {len(inputs)} inputs ({', '.join(inputs)}); precision-sweep evaluates "
            "single-input classifiers. Export a signature with one input."
        )
    key, spec = next(iter(inputs.items()))
    outputs = signature.structured_outputs
    names = list(outputs) if isinstance(outputs, dict) else [str(i) for i in range(len(outputs))]
    index = _select_output(cfg, names, where)
    out_key = names[index] if isinstance(outputs, dict) else index
    shape = _resolve_shape(cfg, spec.shape[1:], where)
    dtype = _resolve_dtype(cfg, spec.dtype.name, where)
    input_name = cfg.input_name or key
    function = _concrete(lambda x: signature(**{key: x})[out_key], shape, dtype, input_name)
    out_shape = function.structured_outputs.shape
    loaded = LoadedModel(
        name=cfg.name,
        keras_model=[function],
        input_name=input_name,
        input_shape=shape,
        outputs_are=cfg.outputs_are,
        content_hash=hash_path(path, ["saved_model", cfg.signature, names[index], list(shape)]),
        path=path,
        input_dtype=dtype,
        n_outputs=_n_outputs(out_shape, names[index], where),
        output_name=names[index],
        source_model=saved,
        predict_fn=_batched(lambda x: function(tf.constant(x)).numpy()),
    )
    loaded.run_params = _params(cfg, loaded, model_signature=cfg.signature)
    return loaded


def _tf_keras(cfg, path: Path) -> LoadedModel:
    try:
        import tf_keras
    except ImportError as exc:
        raise UserInputError(
            "model=tf_keras needs the legacy Keras 2 package tf_keras, which is not installed. Install "
            "it with pip install 'precision-sweep[tf_keras]' (tf-keras matching your TensorFlow)."
        ) from exc
    lambdas = _guard_unsafe(cfg, path)
    try:
        model = tf_keras.models.load_model(path, safe_mode=bool(cfg.safe_mode), compile=False)
    except Exception as exc:  # noqa: BLE001
        raise _load_failed(path, exc, f"tf_keras {tf_keras.__version__}") from exc
    where = f"model={cfg.name}"
    if len(model.inputs) != 1:
        raise UserInputError(
            f"Model {cfg.name!r} has {len(model.inputs)} inputs; precision-sweep evaluates "
            "single-input classifiers. Export a single-input model."
        )
    names = list(model.output_names)
    index = _select_output(cfg, names, where)
    if len(model.outputs) > 1:
        model = tf_keras.Model(model.inputs, model.outputs[index])
    shape = _resolve_shape(cfg, model.inputs[0].shape[1:], where)
    dtype = _resolve_dtype(cfg, model.inputs[0].dtype.name, where)
    input_name = cfg.input_name or model.input_names[0]
    function = _concrete(lambda x: model(x, training=False), shape, dtype, input_name)
    loaded = LoadedModel(
        name=cfg.name,
        keras_model=[function],
        input_name=input_name,
        input_shape=shape,
        outputs_are=cfg.outputs_are,
        content_hash=hash_path(path, ["tf_keras", names[index], list(shape)]),
        path=path,
        input_dtype=dtype,
        n_outputs=_n_outputs(model.outputs[0].shape, names[index], where),
        output_name=names[index],
        source_model=model,
        predict_fn=lambda x: model.predict(x, batch_size=256, verbose=0),
    )
    loaded.run_params = _params(cfg, loaded, **({"model_lambda_layers": ",".join(lambdas)} if lambdas else {}))
    return loaded


SOURCES = {"keras": _keras, "saved_model": _saved_model, "tf_keras": _tf_keras}


def load_model(cfg, dataset, cache_dir: str | Path) -> LoadedModel:
    """Load the model a ``model`` config describes (``dataset`` trains builtin models)."""
    path = check_model_path(cfg)
    if cfg.source == "builtin":
        if dataset is None:
            raise ValueError("builtin models need the dataset to train on")
        return _builtin(cfg, dataset, Path(cache_dir))
    return SOURCES[str(cfg.source)](cfg, path)


def predict_probabilities(loaded: LoadedModel, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run the TF model in inference mode and return its outputs as float32."""
    if loaded.predict_fn is not None:
        return np.asarray(loaded.predict_fn(x), dtype=np.float32)
    outputs = loaded.keras_model.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(outputs, dtype=np.float32)
