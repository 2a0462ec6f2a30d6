"""What a loaded model is (:class:`LoadedModel`), its content hash, its run parameters and how
the FP32 TensorFlow model predicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from precision_sweep.hashing import hash_arrays
from precision_sweep.samples import NamedSamples


# Filled by loading the TensorFlow/Keras model: a model described by its card (see
# :mod:`precision_sweep.data.models.card`) loads them at first access.
_HEAVY = ("keras_model", "source_model", "predict_fn")


@dataclass
class LoadedModel:
    """A model with what conversion and evaluation need to know about it.

    A model read from its cached card knows everything but the TensorFlow objects
    (``keras_model``, ``source_model``, ``predict_fn``): the first access to one of them loads
    the model (``loader``) as a cold job would, with the same checks and messages.
    """

    name: str
    # What ct.convert takes: a Keras 3 model, or a list with one TF concrete function.
    keras_model: Any = field(repr=False, compare=False)
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
    source_model: Any = field(default=None, repr=False, compare=False)
    # Batch -> outputs; None means ``keras_model.predict``.
    predict_fn: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)
    run_params: dict = field(default_factory=dict)
    # What :class:`~precision_sweep.data.layers.LayerMapper` needs: (layer names, the Keras
    # model's name, input layer names); None for a SavedModel (no layers) or when unknown.
    keras_layers: tuple | None = None
    # Loads the model (a :class:`LoadedModel` with the TensorFlow objects) on first use.
    loader: Callable[[], LoadedModel] | None = field(default=None, repr=False, compare=False)
    # A model with several inputs: every input as (name, shape without batch, dtype), the
    # first being input_name/input_shape/input_dtype; empty for a model with one input.
    inputs: tuple = ()
    # A model with several outputs: every output's name, in the model's order (output_name is
    # the judged one); empty when one output is converted.
    output_names: tuple = ()
    # The batch dimension the model fixes (1: a detector whose NMS takes one image); None when
    # it is open. The TF model and the converted program then predict one sample at a time.
    batch: int | None = None

    def __post_init__(self):
        if self.loader is not None:
            for name in _HEAVY:  # absent, so that reading one goes through __getattr__
                self.__dict__.pop(name, None)

    @property
    def input_specs(self) -> tuple:
        """Every input as ``(name, shape without batch, dtype)``, in the model's order."""
        return self.inputs or ((self.input_name, tuple(self.input_shape), self.input_dtype),)

    @property
    def is_loaded(self) -> bool:
        """Whether the TensorFlow objects are in memory (reading them loads them otherwise)."""
        return "keras_model" in self.__dict__

    def __getattr__(self, name: str):
        # Only called for absent attributes: the TensorFlow objects of a model not loaded yet.
        if name in _HEAVY and self.__dict__.get("loader") is not None:
            self._load()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _load(self) -> None:
        full = self.__dict__["loader"]()
        for attr in ("content_hash", "input_name", "input_shape", "input_dtype", "n_outputs", "output_name", "inputs",
                     "output_names", "batch"):
            if getattr(full, attr) != getattr(self, attr):
                raise RuntimeError(
                    f"model {self.name}: the loaded model's {attr} {getattr(full, attr)!r} differs from its "
                    f"cached card's {getattr(self, attr)!r}"
                )
        for attr in _HEAVY:
            self.__dict__[attr] = full.__dict__.get(attr)
        self.loader = None

def _content_hash(model) -> str:
    return hash_arrays(model.get_weights(), extra=model.to_json())

def run_params_of(cfg, loaded: LoadedModel, **extra) -> dict:
    return {
        "model_source": cfg.source,
        "model_safe_mode": bool(cfg.safe_mode),
        "model_input": ", ".join(f"{name} {list(shape)} {dtype}" for name, shape, dtype in loaded.input_specs),
        "model_output": loaded.output_name,
        "model_outputs_are": loaded.outputs_are,
        **extra,
    }

def batched(fn: Callable[[np.ndarray], Any], batch_size: int = 256) -> Callable[[np.ndarray], Any]:
    """``fn`` applied to slices of ``batch_size`` samples, its results joined as ``fn`` returns
    them (one array, a list or a dict of arrays)."""
    def predict(x):
        parts = [fn(x[i : i + batch_size]) for i in range(0, max(len(x), 1), batch_size)]
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0], dict):
            return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        if isinstance(parts[0], (list, tuple)):
            return [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))]
        return np.concatenate([np.asarray(part) for part in parts], axis=0)

    return predict


# Samples handed to Keras' predict at once: its data adapter copies what it is given, so a large
# test set is predicted in slices (whole batches: the same batches, the same outputs).
PREDICT_SLICE = 4096


def _keras_predict(model, x, batch_size: int):
    """``model.predict(x)`` in slices of about :data:`PREDICT_SLICE` samples (whole batches)."""
    step = batch_size * max(1, PREDICT_SLICE // batch_size)
    return batched(lambda piece: model.predict(piece.feeds() if isinstance(piece, NamedSamples) else piece,
                                               batch_size=batch_size, verbose=0), step)(x)


def predict_probabilities(loaded: LoadedModel, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run the TF model in inference mode and return its outputs as float32 (``x``: one array,
    or :class:`~precision_sweep.samples.NamedSamples` for a model with several inputs)."""
    batch_size = loaded.batch or batch_size
    if loaded.output_names:
        return predict_outputs(loaded, x, batch_size)[loaded.output_name]
    if loaded.predict_fn is not None:
        return np.asarray(loaded.predict_fn(x), dtype=np.float32)
    return np.asarray(_keras_predict(loaded.keras_model, x, batch_size), dtype=np.float32)


def predict_outputs(loaded: LoadedModel, x, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Every output of the TF model by name, as float32 (one output: the judged one)."""
    if not loaded.output_names:
        return {loaded.output_name: predict_probabilities(loaded, x, batch_size)}
    batch_size = loaded.batch or batch_size
    outputs = _keras_predict(loaded.keras_model, x, batch_size)
    if isinstance(outputs, dict):
        return {name: np.asarray(outputs[name], dtype=np.float32) for name in loaded.output_names}
    return {name: np.asarray(value, dtype=np.float32) for name, value in zip(loaded.output_names, outputs)}
