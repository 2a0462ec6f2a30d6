"""Content hashes that key caches and runs (models by weights+architecture, data by arrays)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def hash_arrays(arrays: Iterable[np.ndarray], extra: Any = None) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(array.reshape(-1).view(np.uint8))  # the bytes of tobytes(), without copying them
    if extra is not None:
        digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def hash_config(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hash_path(path: Path, extra: Any) -> str:
    """Hash of a model file or directory's bytes plus the config choices that change the model."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def modules_fingerprint(names) -> list[list[str]]:
    """``[name, hash of its source file]`` for each module of ``names`` that can be found (without
    importing it): a change to a custom layer's code is a change to the model, for its caches."""
    import importlib.util

    found = []
    for name in names:
        try:
            spec = importlib.util.find_spec(str(name))
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None)
        if origin and Path(origin).is_file():
            found.append([str(name), hash_path(Path(origin), [])])
    return found
