"""Content hashes that key caches and runs (models by weights+architecture, data by arrays)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

import numpy as np


def hash_arrays(arrays: Iterable[np.ndarray], extra: Any = None) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(array.tobytes())
    if extra is not None:
        digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def hash_config(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
