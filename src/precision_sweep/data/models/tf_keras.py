"""``model.source=tf_keras``: a ``.keras``/``.h5`` file loaded with legacy Keras 2 (package
``tf_keras``), for models (recurrent ones) that only convert from Keras 2 graphs; passed to
coremltools as a concrete function."""

from __future__ import annotations

from pathlib import Path

from precision_sweep.data.layers import keras_layer_names
from precision_sweep.data.models.interface import (
    n_outputs_of,
    require_one_input,
    resolve_dtype,
    resolve_shape,
    select_output,
)
from precision_sweep.data.models.card import load_with_card
from precision_sweep.data.models.loaded import PREDICT_SLICE, LoadedModel, batched, run_params_of
from precision_sweep.data.models.safety import load_failed, refuse_unsafe
from precision_sweep.data.models.saved_model import concrete_function
from precision_sweep.errors import UserInputError
from precision_sweep.hashing import hash_path


NOT_INSTALLED = (
    "model=tf_keras needs the legacy Keras 2 package tf_keras, which is not installed. Install "
    "it with pip install 'precision-sweep[tf_keras]' (tf-keras matching your TensorFlow)."
)


def load_tf_keras(cfg, path: Path, cache_dir: Path | None = None) -> LoadedModel:
    """The model; from its card when one is cached (Keras 2 then loads when first needed)."""
    from importlib.util import find_spec

    try:
        installed = find_spec("tf_keras") is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        raise UserInputError(NOT_INSTALLED)
    refuse_unsafe(cfg, path)  # safe mode is checked by every job, loaded or not
    return load_with_card(cfg, path, cache_dir, lambda: _load(cfg, path))


def _load(cfg, path: Path) -> LoadedModel:
    try:
        import tf_keras
    except ImportError as exc:
        raise UserInputError(NOT_INSTALLED) from exc
    lambdas = refuse_unsafe(cfg, path)
    try:
        model = tf_keras.models.load_model(path, safe_mode=bool(cfg.safe_mode), compile=False)
    except Exception as exc:  # noqa: BLE001
        raise load_failed(path, exc, f"tf_keras {tf_keras.__version__}") from exc
    where = f"model={cfg.name}"
    require_one_input(cfg, len(model.inputs), "a tf_keras (Keras 2) model")
    names = list(model.output_names)
    index = select_output(cfg, names, where)
    if len(model.outputs) > 1:
        model = tf_keras.Model(model.inputs, model.outputs[index])
    shape = resolve_shape(cfg, model.inputs[0].shape[1:], where)
    dtype = resolve_dtype(cfg, model.inputs[0].dtype.name, where)
    input_name = cfg.input_name or model.input_names[0]
    function = concrete_function(lambda x: model(x, training=False), shape, dtype, input_name)
    loaded = LoadedModel(
        name=cfg.name,
        keras_model=[function],
        input_name=input_name,
        input_shape=shape,
        outputs_are=cfg.outputs_are,
        content_hash=hash_path(path, ["tf_keras", names[index], list(shape)]),
        path=path,
        input_dtype=dtype,
        n_outputs=n_outputs_of(model.outputs[0].shape, names[index], where),
        output_name=names[index],
        source_model=model,
        keras_layers=keras_layer_names(model),
        predict_fn=batched(lambda x: model.predict(x, batch_size=256, verbose=0), PREDICT_SLICE),
    )
    loaded.run_params = run_params_of(cfg, loaded, **({"model_lambda_layers": ",".join(lambdas)} if lambdas else {}))
    return loaded
