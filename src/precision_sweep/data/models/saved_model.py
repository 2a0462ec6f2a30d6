"""``model.source=saved_model``: one signature (``model.signature``) of a SavedModel directory,
wrapped in a concrete function with one input and the chosen output, because coremltools
converts exactly one concrete function."""

from __future__ import annotations

from pathlib import Path

from precision_sweep.data.models.card import load_with_card
from precision_sweep.data.models.interface import n_outputs_of, resolve_dtype, resolve_shape, select_output
from precision_sweep.data.models.loaded import LoadedModel, batched, run_params_of
from precision_sweep.data.models.safety import load_failed
from precision_sweep.errors import UserInputError
from precision_sweep.hashing import hash_path


def concrete_function(call, shape: tuple, dtype: str, name: str):
    import tensorflow as tf

    function = tf.function(call, input_signature=[tf.TensorSpec((None, *shape), tf.as_dtype(dtype), name=name)])
    return function.get_concrete_function()

def load_saved_model(cfg, path: Path, cache_dir: Path | None = None) -> LoadedModel:
    """The signature's model; from its card when one is cached (TensorFlow then loads it when
    first needed)."""
    return load_with_card(cfg, path, cache_dir, lambda: _load(cfg, path))


def _load(cfg, path: Path) -> LoadedModel:
    import tensorflow as tf

    try:
        saved = tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise load_failed(path, exc, f"tf.saved_model.load (TensorFlow {tf.__version__})") from exc
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
            f"The {where} takes {len(inputs)} inputs ({', '.join(inputs)}); models with several inputs are "
            "read from Keras 3 files (model=keras). Save the model as .keras with Keras 3, or "
            "export a signature with one input."
        )
    key, spec = next(iter(inputs.items()))
    outputs = signature.structured_outputs
    names = list(outputs) if isinstance(outputs, dict) else [str(i) for i in range(len(outputs))]
    index = select_output(cfg, names, where)
    out_key = names[index] if isinstance(outputs, dict) else index
    shape = resolve_shape(cfg, spec.shape[1:], where)
    dtype = resolve_dtype(cfg, spec.dtype.name, where)
    input_name = cfg.input_name or key
    function = concrete_function(lambda x: signature(**{key: x})[out_key], shape, dtype, input_name)
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
        n_outputs=n_outputs_of(out_shape, names[index], where),
        output_name=names[index],
        source_model=saved,
        predict_fn=batched(lambda x: function(tf.constant(x)).numpy()),
    )
    loaded.run_params = run_params_of(cfg, loaded, model_signature=cfg.signature)
    return loaded
