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

    from precision_sweep.cli.pool import stop_workers

    # the joblib launcher's engine: loky workers, kept for reuse after the jobs returned
    workers = set(Parallel(n_jobs=2, backend="loky")(delayed(os.getpid)() for _ in range(8)))
    assert workers and os.getpid() not in workers
    assert all(_alive(pid) for pid in workers)

    stop_workers()
    deadline = time.time() + 30
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
    stop_workers()  # nothing left to stop: a no-op


def test_the_launcher_runs_its_jobs_in_the_workers_warmed_for_it():
    """warm_up starts the pool Hydra's joblib launcher will use (same joblib arguments, so
    joblib reuses it) and each worker has already loaded what a job needs."""
    from joblib import Parallel, delayed
    from joblib.externals.loky import reusable_executor

    from precision_sweep.cli import pool
    from sweep_testing import compose

    assert pool.joblib_settings(compose(["hydra/launcher=parallel", "hydra.launcher.n_jobs=1"], return_hydra_config=True)) is None
    assert pool.joblib_settings(compose([], return_hydra_config=True)) is None  # the basic launcher: in-process
    config = compose(["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"], return_hydra_config=True)
    settings = pool.joblib_settings(config)
    assert settings["backend"] == "loky" and settings["n_jobs"] == 2

    pool.stop_workers()  # start from no pool
    pool.warm_up(config).join(timeout=300)
    warmed = set(reusable_executor._executor._processes)
    assert len(warmed) == 2
    for pid in warmed:  # the compiled parts of scipy.stats and matplotlib are loaded
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "scipy/stats" in maps and "matplotlib" in maps

    ran_in = set(Parallel(**settings)(delayed(os.getpid)() for _ in range(8)))  # what the launcher calls
    assert ran_in <= warmed
    pool.stop_workers()
