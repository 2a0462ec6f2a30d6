"""What a loaded model is (:class:`LoadedModel`), its content hash, its run parameters and how
the FP32 TensorFlow model predicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from precision_sweep.hashing import hash_arrays


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

def run_params_of(cfg, loaded: LoadedModel, **extra) -> dict:
    return {
        "model_source": cfg.source,
        "model_safe_mode": bool(cfg.safe_mode),
        "model_input": f"{loaded.input_name} {list(loaded.input_shape)} {loaded.input_dtype}",
        "model_output": loaded.output_name,
        "model_outputs_are": loaded.outputs_are,
        **extra,
    }

def batched(fn: Callable[[np.ndarray], np.ndarray], batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    def predict(x: np.ndarray) -> np.ndarray:
        parts = [np.asarray(fn(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts, axis=0)

    return predict

def predict_probabilities(loaded: LoadedModel, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run the TF model in inference mode and return its outputs as float32."""
    if loaded.predict_fn is not None:
        return np.asarray(loaded.predict_fn(x), dtype=np.float32)
    outputs = loaded.keras_model.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(outputs, dtype=np.float32)
