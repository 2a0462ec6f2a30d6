"""The launcher's config, registered as ``hydra/launcher=precision_sweep_ray``.

``ray.init`` is passed to :func:`ray.init` (``address: null`` starts a local Ray, an address
joins a running cluster); ``ray.remote`` to each job's task options (``num_cpus`` per job, so
the cluster runs as many jobs at once as it has CPUs over ``num_cpus``); ``forward_env`` lists
the prefixes of the launching process's environment variables that every job receives (the
sweep's parent run, set by the sweep callback, and MLflow's settings).
"""

# No "from __future__ import annotations": Hydra executes plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any, Dict, List

from hydra.core.config_store import ConfigStore

LAUNCHER_NAME = "precision_sweep_ray"


@dataclass
class RayConf:
    init: Dict[str, Any] = field(default_factory=lambda: {"address": None})
    # max_retries 0: a retried job would open a second MLflow run for the same job.
    remote: Dict[str, Any] = field(default_factory=lambda: {"num_cpus": 1, "max_retries": 0})


@dataclass
class RayTaskLauncherConf:
    _target_: str = "hydra_plugins.precision_sweep_ray_launcher.ray_launcher.RayTaskLauncher"
    ray: RayConf = field(default_factory=RayConf)
    forward_env: List[str] = field(default_factory=lambda: ["PRECISION_SWEEP_", "MLFLOW_"])


ConfigStore.instance().store(
    group="hydra/launcher",
    name=LAUNCHER_NAME,
    node=RayTaskLauncherConf,
    provider="precision_sweep_ray_launcher",
)
