"""The model's interface checked against the config: its inputs (one, or several named ones of
a Keras 3 model), each of a fixed shape and dtype, and the output chosen by ``model.output``.
Shared by every source."""

from __future__ import annotations

from pathlib import Path

from precision_sweep.data.layers import keras_layer_names
from precision_sweep.data.models.loaded import LoadedModel, _content_hash, run_params_of
from precision_sweep.errors import UserInputError


def resolve_shape(cfg, model_shape, where: str) -> tuple:
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

def resolve_dtype(cfg, model_dtype: str, where: str) -> str:
    if cfg.input_dtype is not None and str(cfg.input_dtype) != model_dtype:
        raise UserInputError(
            f"model.input_dtype={cfg.input_dtype} but the input of {where} is {model_dtype}. Set "
            f"model.input_dtype={model_dtype} (or null): the data is cast to the model's input dtype."
        )
    return model_dtype

def select_output(cfg, names: list[str], where: str) -> int:
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

def n_outputs_of(shape, output_name: str, where: str) -> int | None:
    """The number of classes of a (batch, classes) output; None for an output of another shape,
    which only a task whose labels are not classes can read (checked in ``check_compatible``)."""
    shape = tuple(shape)
    if len(shape) != 2 or shape[-1] is None:
        return None
    return int(shape[-1])

def require_one_input(cfg, count: int, source: str) -> None:
    """Refuse several inputs where a model source reads one (a Keras 3 model may have several)."""
    if count != 1:
        raise UserInputError(
            f"Model {cfg.name!r} has {count} inputs; models with several inputs are read from Keras 3 "
            f"files (model=keras), not {source}. Save the model as .keras with Keras 3, "
            "or export a single-input model."
        )


def several_inputs(cfg, model, where: str) -> tuple:
    """Every input of a Keras model with several inputs, as ``(name, shape, dtype)``: each
    shape fixed (the converted program needs it) and each dtype one Core ML inputs can take."""
    if cfg.input_name is not None or cfg.input_shape is not None or cfg.input_dtype is not None:
        raise UserInputError(
            f"{where} has {len(model.inputs)} inputs; model.input_name, model.input_shape and "
            "model.input_dtype describe a single input. Set them to null: each input's name, shape "
            "and dtype are read from the model."
        )
    specs = []
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        shape = tuple(None if d is None else int(d) for d in tensor.shape[1:])
        if any(d is None for d in shape):
            raise UserInputError(
                f"The input {name!r} of {where} has open dimensions {shape} (None = any size); the "
                "converted program needs fixed ones, and model.input_shape describes a single input. "
                f"Build the input with a fixed shape, e.g. keras.Input(shape=({', '.join(str(d or 64) for d in shape)},), name={name!r})."
            )
        dtype = str(tensor.dtype)
        if dtype not in ("float32", "float16", "int32", "int64"):
            raise UserInputError(
                f"The input {name!r} of {where} is {dtype}; Core ML inputs are float32, float16 or "
                "int32 tensors. Build the input as float32 or int32."
            )
        specs.append((name, shape, dtype))
    names = [name for name, _, _ in specs]
    if len(set(names)) != len(names):
        raise UserInputError(f"The inputs of {where} share names ({', '.join(names)}); give each keras.Input its own name.")
    return tuple(specs)


def wrap_keras_model(cfg, model, path: Path | None) -> LoadedModel:
    """A Keras 3 model: its inputs (one, or several by name), its outputs (the selected one
    judged, every one compared)."""
    import keras

    where = f"model={cfg.name}"
    batch = fixed_batch(model, where)
    inputs = several_inputs(cfg, model, where) if len(model.inputs) > 1 else ()
    input_name = model.inputs[0].name.split(":")[0]
    if not inputs and cfg.input_name is not None and cfg.input_name != input_name:
        raise UserInputError(
            f"model.input_name={cfg.input_name} but the input of {where} is named {input_name!r}. "
            f"Set model.input_name={input_name} (or null)."
        )
    names = list(getattr(model, "output_names", None) or (
        # a Sequential's output tensor is named per process (keras_tensor_<n>): its last layer's name is stable
        [model.layers[-1].name] if len(model.outputs) == 1 and model.layers else [t.name.split(":")[0] for t in model.outputs]))
    index = select_output(cfg, names, where)
    selected_shape = model.outputs[index].shape
    # Several outputs are all converted and compared (the selected one is judged), unless the
    # app's classifier interface reads one of them: that output alone is converted then.
    several_outputs = len(model.outputs) > 1 and not cfg.get("classifier") and hasattr(model, "output_names")
    # a single output is hashed as the file holds it: the wrapper's layer names vary by process
    content_hash = _content_hash(model) if len(model.outputs) == 1 or several_outputs else None
    if not several_outputs and (len(model.outputs) > 1 or not hasattr(model, "output_names")):
        # a Keras 3 Sequential has no output_names, which coremltools' TF2 frontend reads: the
        # same layers as a functional model convert
        model = keras.Model(model.inputs, model.outputs[index], name=f"{model.name}_{names[index]}")
    loaded = LoadedModel(
        name=cfg.name,
        keras_model=model,
        input_name=input_name,
        input_shape=inputs[0][1] if inputs else resolve_shape(cfg, model.inputs[0].shape[1:], where),
        outputs_are=cfg.outputs_are,
        content_hash=content_hash or _content_hash(model),
        path=path,
        input_dtype=inputs[0][2] if inputs else resolve_dtype(cfg, str(model.inputs[0].dtype), where),
        n_outputs=n_outputs_of(selected_shape, names[index], where),
        output_name=names[index],
        source_model=model,
        keras_layers=keras_layer_names(model),
        inputs=inputs,
        output_names=tuple(names) if several_outputs else (),
        batch=batch,
    )
    loaded.run_params = run_params_of(cfg, loaded)
    return loaded


def fixed_batch(model, where: str) -> int | None:
    """The batch dimension the Keras model fixes: None when open (every input's is), 1 when
    fixed at one sample (a detector whose NMS takes one image); another size is refused."""
    sizes = {tensor.shape[0] for tensor in model.inputs}
    if sizes == {None}:
        return None
    if sizes == {1}:
        return 1
    raise UserInputError(
        f"The inputs of {where} fix their batch dimension at {sorted(sizes, key=str)}: precision-sweep evaluates "
        "a model whose batch is open (keras.Input(shape) without batch_size) or fixed at 1 (one sample at a "
        "time). Save the model with an open batch, or with batch_size=1 if it only takes one sample."
    )
