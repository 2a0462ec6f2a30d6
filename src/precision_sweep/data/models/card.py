"""Model cards: what every job needs to know about a model, without TensorFlow.

The first job that loads a model writes its card, a small JSON file under
``<paths.cache>/models/cards/``; later jobs read it and load the TensorFlow/Keras model only when
something needs it (a conversion or a baseline not cached yet, a diagnosis, a repair), through
:attr:`LoadedModel.loader`. A card holds no code and no pickle.

Key: the model file's (or SavedModel directory's) content hash, the ``model`` config choices
that change what is loaded (source, input name/shape/dtype, output, signature), the TensorFlow
and Keras versions (and tf_keras for that source) and :data:`CARD_REVISION`. A card exists only
for a model that loaded once with these choices, so every check and error message of a model
that does not load comes from the real load. ``safe_mode`` is not in the key: the Lambda-layer
check runs before the card is read, and the real load uses the job's ``safe_mode``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from precision_sweep.data.models.loaded import LoadedModel, run_params_of
from precision_sweep.data.versions import library_version
from precision_sweep.hashing import hash_config, hash_path, modules_fingerprint

log = logging.getLogger(__name__)

# Bump when what a card holds, or how a source fills it, changes.
CARD_REVISION = 3  # 2: inputs and output_names (several inputs or outputs); 3: a fixed batch

# The model config's fields that change what a source loads from the same file.
CHOICES = ("source", "builder", "input_name", "input_shape", "input_dtype", "output", "signature")


def _plain(value):
    if isinstance(value, Enum):
        return str(value.value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return [_plain(v) for v in value]


def card_key(cfg, path: Path) -> str:
    """The card's key: the model file's bytes, the config choices and the library versions."""
    libraries = ["tensorflow", "keras"] + (["tf_keras"] if str(cfg.source) == "tf_keras" else [])
    key = {
        "card": CARD_REVISION,
        "file": hash_path(Path(path), []),
        "choices": {name: _plain(getattr(cfg, name, None)) for name in CHOICES},
        "versions": {name: library_version(name) for name in libraries},
    }
    if cfg.get("imports"):  # the custom layers' code is part of the model
        key["imports"] = modules_fingerprint(cfg.imports)
    return hash_config(key)


def card_path(cfg, path: Path, cache_dir: Path) -> Path:
    return Path(cache_dir) / "models" / "cards" / f"{cfg.name}-{card_key(cfg, path)}.json"


def write_card(card: Path, loaded: LoadedModel, cfg) -> None:
    """Store what :func:`from_card` needs of ``loaded`` (atomically: readers see all or nothing)."""
    base = run_params_of(cfg, loaded)
    data = {
        "card_revision": CARD_REVISION,
        "source": str(cfg.source),
        "content_hash": loaded.content_hash,
        "input_name": loaded.input_name,
        "input_shape": list(loaded.input_shape),
        "input_dtype": loaded.input_dtype,
        "inputs": [[name, list(shape), dtype] for name, shape, dtype in loaded.inputs],
        "n_outputs": loaded.n_outputs,
        "output_names": list(loaded.output_names),
        "output_name": loaded.output_name,
        "batch": loaded.batch,
        "keras_layers": None if loaded.keras_layers is None else {
            "layers": list(loaded.keras_layers[0]), "model": loaded.keras_layers[1], "inputs": list(loaded.keras_layers[2]),
        },
        # The source's own run params (e.g. model_signature), beyond those of every model.
        "run_params": {k: v for k, v in loaded.run_params.items() if k not in base},
    }
    write_json_atomic(card, data)


def write_json_atomic(path: Path, data) -> None:
    """Write ``data`` as JSON to ``path`` under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.part")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_card(card: Path) -> dict | None:
    """The card's data, or None when there is none (or it is unreadable: the model loads)."""
    try:
        data = json.loads(card.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable model card %s (%s)", card, exc)
        return None
    if not isinstance(data, dict) or data.get("card_revision") != CARD_REVISION:
        return None
    return data


def from_card(cfg, data: dict, path: Path | None, loader: Callable[[], LoadedModel]) -> LoadedModel:
    """A :class:`LoadedModel` of ``cfg`` described by its card; ``loader`` loads it when needed."""
    layers = data["keras_layers"]
    loaded = LoadedModel(
        name=cfg.name,
        keras_model=None,
        input_name=data["input_name"],
        input_shape=tuple(data["input_shape"]),
        outputs_are=cfg.outputs_are,
        content_hash=data["content_hash"],
        path=path,
        input_dtype=data["input_dtype"],
        n_outputs=data["n_outputs"],
        output_name=data["output_name"],
        keras_layers=None if layers is None else (tuple(layers["layers"]), layers["model"], tuple(layers["inputs"])),
        loader=loader,
        inputs=tuple((name, tuple(shape), dtype) for name, shape, dtype in data.get("inputs", [])),
        output_names=tuple(data.get("output_names", [])),
        batch=data.get("batch"),
    )
    loaded.run_params = run_params_of(cfg, loaded, **data["run_params"])
    return loaded


def load_with_card(cfg, path: Path, cache_dir: Path | None, load: Callable[[], LoadedModel]) -> LoadedModel:
    """The model from its card when one is cached (``load`` deferred to first use), else
    ``load()`` now, writing the card for the next job.

    ``cache_dir`` None: no card, the model loads now.
    """
    if cache_dir is None:
        return load()
    card = card_path(cfg, path, cache_dir)
    data = read_card(card)
    if data is not None:
        try:
            return from_card(cfg, data, path, load)
        except (KeyError, TypeError, ValueError) as exc:  # a card of another layout: load, rewrite it
            log.warning("ignoring the model card %s (%s: %s)", card, type(exc).__name__, exc)
    loaded = load()
    write_card(card, loaded, cfg)
    return loaded
