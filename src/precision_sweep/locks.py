"""Cross-process locks for cache entries, so no two workers compute the same entry twice.

Pattern: take the entry's lock, look again, compute only if still missing, write atomically.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from filelock import FileLock


@contextlib.contextmanager
def entry_lock(entry: Path, timeout: float = 3600):
    """Hold the lock of cache entry ``entry`` (a sibling ``.lock`` file)."""
    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock", timeout=timeout):
        yield
