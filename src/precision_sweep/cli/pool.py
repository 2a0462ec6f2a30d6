"""The parallel launcher's worker pool, seen from the launching process: warmed while Hydra
composes the jobs, stopped once they have returned.

Hydra's joblib launcher starts its loky workers when it dispatches the first job, after the
sweeper has composed and validated every job's config; each worker then imports what a job
needs (MLflow and its SQL store, pandas, scipy.stats, matplotlib, the emulator: seconds)
before its first job starts. :func:`warm_up` starts the same pool earlier, once the sweep's
parent run exists and the environment the workers inherit is set, with one task per worker
importing those modules, so the imports overlap Hydra's own work. joblib reuses a pool whose
arguments are unchanged, so the launcher's jobs then run in the warmed workers.

joblib also keeps its workers for reuse, and at exit the launching process waited for each
idle worker to finish its own interpreter shutdown (seconds per worker), after which loky's
resource tracker could print a ``KeyError`` about a shared-memory folder:
:func:`stop_workers` ends them once every job has returned.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# What every job imports before its first line of work; a job imports the rest lazily.
JOB_MODULES = (
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "pandas",
    "scipy.stats",
    "matplotlib.pyplot",
    "precision_sweep.job",
    "precision_sweep.metrics.statistics",
    "precision_sweep.metrics.plots",
    "precision_sweep.emulator.ops",
)


def import_job_modules() -> int:
    """A worker's warm-up task: import :data:`JOB_MODULES`; returns the worker's pid."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in JOB_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional piece missing: the job will say so itself
            pass
    return os.getpid()


def joblib_settings(config: DictConfig) -> dict | None:
    """The ``joblib.Parallel`` arguments Hydra's joblib launcher will use for this sweep, or
    None for another launcher or a single in-process worker (nothing to warm)."""
    launcher = config.hydra.launcher
    if "JoblibLauncher" not in str(launcher.get("_target_", "")):
        return None
    settings = {k: v for k, v in OmegaConf.to_container(launcher, resolve=True).items() if k != "_target_"}
    settings["backend"] = "loky"  # as the launcher forces it
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    process_joblib_cfg(settings)
    from joblib import effective_n_jobs

    return settings if effective_n_jobs(settings.get("n_jobs", -1)) > 1 else None


def warm_up(config: DictConfig) -> threading.Thread | None:
    """Start the launcher's workers now, each importing what a job needs (in a background
    thread; the launcher's own dispatch later waits for them like for any busy worker)."""
    settings = joblib_settings(config)
    if settings is None:
        return None
    from joblib import Parallel, delayed, effective_n_jobs

    workers = effective_n_jobs(settings["n_jobs"])

    def run() -> None:
        try:
            Parallel(**settings)(delayed(import_job_modules)() for _ in range(workers))
        except Exception as exc:  # noqa: BLE001 - a warm-up only saves time; the jobs still run
            log.debug("warming the workers failed: %s", exc)

    thread = threading.Thread(target=run, name="precision-sweep-warm-workers", daemon=True)
    thread.start()
    return thread


def stop_workers() -> None:
    """End the pool's idle workers (their jobs and runs are closed); a no-op without a pool."""
    module = sys.modules.get("joblib.externals.loky.reusable_executor")  # imported only if used
    executor = getattr(module, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)
