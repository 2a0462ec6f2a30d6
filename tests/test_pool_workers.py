"""The launching process stops the parallel launcher's idle workers once every job has
returned, instead of waiting at exit for each to shut its interpreter down."""

from __future__ import annotations

import os
import time
from pathlib import Path


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def test_idle_pool_workers_are_stopped_when_the_sweep_is_over():
    from joblib import Parallel, delayed

    from precision_sweep.app import stop_pool_workers

    # the joblib launcher's engine: loky workers, kept for reuse after the jobs returned
    workers = set(Parallel(n_jobs=2, backend="loky")(delayed(os.getpid)() for _ in range(8)))
    assert workers and os.getpid() not in workers
    assert all(_alive(pid) for pid in workers)

    stop_pool_workers()
    deadline = time.time() + 30
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
    stop_pool_workers()  # nothing left to stop: a no-op
