"""Load the model under test: builtin (trained and cached at first use) or from the user's files.

One module per ``model.source`` (``builtin``, ``keras_file``, ``saved_model``, ``tf_keras``);
``interface`` checks what every source must offer (one input, one classifier output),
``safety`` refuses stored Python code unless the user opts out, ``loaded`` is the result.

What every job needs of a model (input, output, content hash, layer names) is cached in a
small JSON card (``card``); a job whose conversions and baseline are cached never loads
TensorFlow: :class:`LoadedModel` loads the model at the first access to its TensorFlow objects.

Files load with ``safe_mode=True``: a file with Lambda layers (stored Python code) is refused
unless the config opts out with ``model.safe_mode=false``, which the run records.
"""

from __future__ import annotations

from pathlib import Path

from precision_sweep.data.models.builtin import load_builtin
from precision_sweep.data.models.keras_file import load_keras_file
from precision_sweep.data.models.loaded import LoadedModel, _content_hash, predict_outputs, predict_probabilities
from precision_sweep.data.models.safety import lambda_layers
from precision_sweep.data.models.saved_model import load_saved_model
from precision_sweep.data.models.tf_keras import load_tf_keras
from precision_sweep.data.validate import check_model_path

__all__ = ["LoadedModel", "SOURCES", "_content_hash", "lambda_layers", "load_model", "predict_outputs", "predict_probabilities"]

SOURCES = {"keras": load_keras_file, "saved_model": load_saved_model, "tf_keras": load_tf_keras}


def load_model(cfg, dataset, cache_dir: str | Path) -> LoadedModel:
    """Load the model a ``model`` config describes (``dataset`` trains builtin models)."""
    path = check_model_path(cfg)
    if cfg.source == "builtin":
        if dataset is None:
            raise ValueError("builtin models need the dataset to train on")
        return load_builtin(cfg, dataset, Path(cache_dir))
    return SOURCES[str(cfg.source)](cfg, path, Path(cache_dir) if cache_dir is not None else None)
