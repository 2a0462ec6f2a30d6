"""Checks that a sweep's launcher can start its jobs, run in the launching process before any
run exists (``SweepTrackingCallback.on_multirun_start``).

Each launcher has its own module here with one ``check(launcher_config)`` function that raises
:class:`precision_sweep.errors.UserInputError` naming what is wrong and the fix (a SLURM
partition that does not exist, a Ray address nobody answers on). :data:`CHECKS` maps a piece of
the launcher's ``_target_`` to that function; launchers with nothing to check are absent.
"""

from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig

from precision_sweep.cli.preflight import ray, slurm

CHECKS: dict[str, Callable[[DictConfig], None]] = {
    "SlurmLauncher": slurm.check,
    "RayTaskLauncher": ray.check,
}


def check_launcher(config: DictConfig) -> None:
    """Run the check of the sweep's launcher, if it has one."""
    launcher = config.hydra.launcher
    target = str(launcher.get("_target_", ""))
    for fragment, check in CHECKS.items():
        if fragment in target:
            check(launcher)
