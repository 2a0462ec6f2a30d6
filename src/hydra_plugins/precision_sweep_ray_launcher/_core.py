"""Submitting a sweep's jobs as Ray tasks (launching process) and running one (Ray worker).

:func:`launch` joins or starts Ray, puts what every job shares (Hydra's context, the sweep
config, the task function, Hydra's singletons) in Ray's object store once, submits one task per
job and returns their :class:`~hydra.core.utils.JobReturn` in job order. Each task gets the
forwarded environment and thread counts sized to the CPUs it reserved (:func:`task_env`).

:func:`run_one_job` is the task: it restores Hydra's global state in the worker, composes the
job's config from its overrides and calls Hydra's :func:`~hydra.core.utils.run_job`, in the
launching process's working directory when this node has it (relative paths and ``${cwd:}``
mean there what they mean in the launching process).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import open_dict

from precision_sweep.runtime.threads import share_env

log = logging.getLogger(__name__)

def launch(launcher: Launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run the jobs as Ray tasks; return their results in the order of ``job_overrides``.
    ``launcher`` is the :class:`.ray_launcher.RayTaskLauncher` after its ``setup``."""
    import ray

    assert launcher.config is not None and launcher.hydra_context is not None and launcher.task_function is not None
    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)

    connect(launcher.init_kwargs)
    options = task_options(launcher.remote_kwargs, task_env(launcher.forward_env, launcher.remote_kwargs.get("num_cpus", 1)))
    log.info("Ray is launching %d jobs (%s), sweep output dir: %s", len(job_overrides), _describe(options), sweep_dir)
    for idx, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))

    shared = ray.put((launcher.hydra_context, config, launcher.task_function, Singleton.get_state(), os.getcwd()))
    task = ray.remote(run_one_job).options(**options)
    pending = [task.remote(initial_job_idx + idx, list(overrides), shared) for idx, overrides in enumerate(job_overrides)]
    return list(ray.get(pending))


def connect(init_kwargs: dict) -> None:
    """Join the cluster at ``init_kwargs['address']``, or start a local Ray when it is None."""
    import ray

    if ray.is_initialized():
        return
    log.info("ray.init(%s)", ", ".join(f"{key}={value!r}" for key, value in init_kwargs.items()))
    ray.init(**init_kwargs)


def task_env(forward_prefixes: Sequence[str], num_cpus: Any) -> dict[str, str]:
    """The environment each task gets: the forwarded variables of the launching process and
    thread counts equal to the task's CPUs (the ones the launching process set win)."""
    env = {key: value for key, value in os.environ.items() if key.startswith(tuple(forward_prefixes))} if forward_prefixes else {}
    env.update(share_env(int(float(num_cpus or 1))))
    return env


def task_options(remote_kwargs: dict, env: dict[str, str]) -> dict:
    """Ray task options: the configured ones, with ``env`` added to the runtime env's variables
    (variables the config sets itself win)."""
    options = dict(remote_kwargs)
    runtime_env = dict(options.get("runtime_env") or {})
    runtime_env["env_vars"] = {**env, **(runtime_env.get("env_vars") or {})}
    options["runtime_env"] = runtime_env
    return options


def _describe(options: dict) -> str:
    shown = {key: value for key, value in options.items() if key != "runtime_env"}
    env_keys = sorted(options["runtime_env"]["env_vars"])
    return ", ".join([f"{key}={value}" for key, value in shown.items()] + [f"env: {' '.join(env_keys)}"])


def run_one_job(idx: int, overrides: list[str], shared: tuple) -> JobReturn:
    """One job, in a Ray worker: Hydra's ``run_job`` on the job's composed config."""
    hydra_context, sweep_config, task_function, singleton_state, launch_dir = shared
    setup_globals()
    Singleton.set_state(singleton_state)
    job_config = hydra_context.config_loader.load_sweep_config(sweep_config, list(overrides))
    with open_dict(job_config):
        job_config.hydra.job.id = f"{job_config.hydra.job.name}_{idx}"
        job_config.hydra.job.num = idx
    HydraConfig.instance().set_config(job_config)
    with _working_directory(launch_dir):
        return run_job(
            hydra_context=hydra_context,
            config=job_config,
            task_function=task_function,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )


@contextmanager
def _working_directory(path: str) -> Iterator[None]:
    """Work in ``path`` when this node has it (Ray reuses workers: restore the old one after)."""
    previous = os.getcwd()
    if os.path.isdir(path):
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
