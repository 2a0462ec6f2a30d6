"""The launcher class Hydra instantiates from ``hydra.launcher._target_``: it keeps the sweep's
context from :meth:`setup` and hands the jobs to :func:`._core.launch`."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class RayTaskLauncher(Launcher):
    """Runs each job as a Ray task on a local Ray or a running cluster."""

    def __init__(self, ray: Any, forward_env: Sequence[str] = ()) -> None:
        settings = OmegaConf.to_container(ray, resolve=True) if OmegaConf.is_config(ray) else dict(ray)
        self.init_kwargs: dict = dict(settings.get("init") or {})
        self.remote_kwargs: dict = dict(settings.get("remote") or {})
        self.forward_env: tuple[str, ...] = tuple(str(prefix) for prefix in forward_env)
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from . import _core

        return _core.launch(self, job_overrides, initial_job_idx)
