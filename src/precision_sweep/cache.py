"""Atomic writes and locks for the content-addressed caches under ``paths.cache``.

A file (or a directory such as an ``.mlpackage``) is written under a temporary name in its
final directory and renamed into place, so a reader (another job, another process) sees either
nothing or the whole entry. ``file_lock`` lets concurrent workers compute an entry once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Named arrays in one ``.npz`` (``np.savez``), written as :func:`save_npy_atomic` writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def load_npy(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    return np.load(path, allow_pickle=False)


@contextmanager
def file_lock(path: Path, timeout: float = 3600) -> Iterator[None]:
    """Hold an exclusive lock file ``path`` for the block (``filelock``, cross-process).

    Guards the compute-then-publish of one cache entry, so that two workers of a parallel
    launcher do not compute it twice: the second waits, then finds the entry.
    """
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout):
        yield


def publish_dir_atomic(source: Path, path: Path) -> None:
    """Copy the directory ``source`` to ``path`` so readers see all of it or nothing.

    The copy is made under a temporary name beside ``path`` and renamed into place; if another
    process published ``path`` first, ours is discarded (entries are content-addressed, so both
    are equal).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part"))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
