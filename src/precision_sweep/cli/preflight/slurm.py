"""Preflight of ``hydra/launcher=slurm``: can SLURM start this sweep's jobs at all?

Run in the launching process before any run exists. Asks the SLURM controller (``sinfo``, which
reads ``SLURM_CONF`` like ``sbatch`` does) whether the requested partition exists (or, with none
requested, whether the cluster has a default one) and whether one of its nodes has the CPUs and
memory each job asks for, and whether the time limit leaves room for submitit's warning signal.
Anything else (a busy queue, a node that is down) is left to SLURM.
"""

from __future__ import annotations

import shutil
import subprocess

from omegaconf import DictConfig

from precision_sweep.errors import UserInputError

SINFO_SECONDS = 30
# SLURM may send the --signal warning up to this many seconds earlier than asked (sbatch(1)).
SIGNAL_RESOLUTION_SECONDS = 60


def check(launcher: DictConfig) -> None:
    """Raise :class:`UserInputError` when SLURM cannot run the sweep's jobs as configured."""
    _check_time_limit(launcher)
    _require_commands()
    partitions, default = _partitions()
    requested = launcher.get("partition")
    names = [name.strip() for name in str(requested).split(",") if name.strip()] if requested else []
    if not names:
        if default is None:
            raise UserInputError(
                f"hydra/launcher=slurm sets no partition and this SLURM cluster has no default one (its partitions: "
                f"{', '.join(partitions)}). Choose one with hydra.launcher.partition=<name>."
            )
        names = [default]
    unknown = [name for name in names if name not in partitions]
    if unknown:
        raise UserInputError(
            f"hydra.launcher.partition={requested}: SLURM has no partition named {', '.join(unknown)} (its "
            f"partitions: {', '.join(partitions) or 'none'}; `sinfo -s` lists them). Set "
            f"hydra.launcher.partition to one of them."
        )
    _check_resources(launcher, names)


def _check_time_limit(launcher: DictConfig) -> None:
    """submitit asks SLURM for USR2 ``signal_delay_s`` before the time limit; a limit shorter than
    that (plus SLURM's minute of slack) signals every job as it starts, which kills it."""
    timeout_min, delay = launcher.get("timeout_min"), launcher.get("signal_delay_s")
    if timeout_min is None or delay is None:
        return
    if int(delay) + SIGNAL_RESOLUTION_SECONDS >= float(timeout_min) * 60:
        raise UserInputError(
            f"hydra.launcher.timeout_min={timeout_min} leaves no time before submitit's warning signal "
            f"(hydra.launcher.signal_delay_s={delay}, sent up to {SIGNAL_RESOLUTION_SECONDS} s earlier by SLURM): every "
            f"job would be signalled as it starts and fail. Raise hydra.launcher.timeout_min above "
            f"{(int(delay) + SIGNAL_RESOLUTION_SECONDS) / 60:g} or lower hydra.launcher.signal_delay_s."
        )


def _require_commands() -> None:
    missing = [command for command in ("sbatch", "sinfo") if shutil.which(command) is None]
    if missing:
        raise UserInputError(
            f"hydra/launcher=slurm submits every job with sbatch, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not on PATH. Run the sweep on a machine with the SLURM client "
            f"commands (a login node, or `apt-get install slurm-client` with SLURM_CONF pointing at your cluster), "
            f"or choose another launcher (hydra/launcher=parallel)."
        )


def _sinfo(*arguments: str) -> list[str]:
    """Lines of ``sinfo -h <arguments>``; a controller that does not answer is a user error."""
    try:
        result = subprocess.run(["sinfo", "-h", *arguments], capture_output=True, text=True, timeout=SINFO_SECONDS,
                                check=False)
    except subprocess.TimeoutExpired:
        result = None
    if result is None or result.returncode != 0:
        detail = "no answer" if result is None else " ".join(result.stderr.split()) or f"exit {result.returncode}"
        raise UserInputError(
            f"hydra/launcher=slurm: the SLURM controller did not answer `sinfo` ({detail}). Check that SLURM is "
            f"running and that SLURM_CONF (or /etc/slurm/slurm.conf) names your cluster."
        )
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def _partitions() -> tuple[list[str], str | None]:
    """The cluster's partition names and its default one (``sinfo`` marks it with ``*``)."""
    names, default = [], None
    for line in _sinfo("-o", "%P"):
        name = line.rstrip("*")
        if line.endswith("*"):
            default = name
        if name not in names:
            names.append(name)
    return names, default


def _check_resources(launcher: DictConfig, partitions: list[str]) -> None:
    """A job asking for more CPUs or memory than any node of its partitions has never starts."""
    cpus = launcher.get("cpus_per_task")
    tasks = launcher.get("tasks_per_node") or 1
    mem_gb = launcher.get("mem_gb")
    nodes = [line.split() for line in _sinfo("-N", "-p", ",".join(partitions), "-o", "%c %m")]
    largest_cpus = max((int(node[0]) for node in nodes if node[0].isdigit()), default=None)
    largest_mb = max((int(node[1].rstrip("+")) for node in nodes if node[1].rstrip("+").isdigit()), default=None)
    where = f"partition {','.join(partitions)}"
    if cpus and largest_cpus is not None and int(cpus) * int(tasks) > largest_cpus:
        raise UserInputError(
            f"hydra.launcher.cpus_per_task={cpus} (x tasks_per_node={tasks}): no node of {where} has that many "
            f"CPUs (the largest has {largest_cpus}), so SLURM would never start the jobs. Lower "
            f"hydra.launcher.cpus_per_task or choose another partition."
        )
    if mem_gb and largest_mb is not None and float(mem_gb) * 1024 > largest_mb:
        raise UserInputError(
            f"hydra.launcher.mem_gb={mem_gb}: no node of {where} has that much memory (the largest has "
            f"{largest_mb / 1024:.1f} GB), so SLURM would never start the jobs. Lower hydra.launcher.mem_gb or "
            f"choose another partition."
        )
