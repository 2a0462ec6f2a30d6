"""Safe loading: Lambda layers (stored Python code) are refused unless ``model.safe_mode=false``,
and a file that does not load gets one paragraph saying why and what to do."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from precision_sweep.errors import UserInputError


def keras_config(path: Path) -> dict | None:
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

def refuse_unsafe(cfg, path: Path) -> list[str]:
    lambdas = lambda_layers(keras_config(path))
    if lambdas and cfg.safe_mode:
        raise UserInputError(
            f"model.path={path} contains Lambda layer(s) {', '.join(lambdas)}: loading them runs Python "
            "code stored in the file, which safe mode refuses. If you trust the file, opt in with "
            "model.safe_mode=false (the run records model_safe_mode=False); better, replace the Lambda "
            "with a registered custom layer."
        )
    return lambdas

def load_failed(path: Path, exc: Exception, library: str) -> UserInputError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return UserInputError(
        f"Cannot load model.path={path} with {library} ({type(exc).__name__}: {first[:300]}). The file "
        "may be truncated or corrupt, need custom objects, or come from another Keras: re-save it "
        "with model.save('model.keras'); Keras 2 (tf.keras <= 2.15) files load with model=tf_keras."
    )
