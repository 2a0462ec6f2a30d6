"""Atomic writes for the content-addressed caches under ``paths.cache``.

A file is written under a temporary name in its final directory and renamed into place, so a
reader (another job, another process) sees either nothing or the whole file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_npy(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    return np.load(path, allow_pickle=False)
