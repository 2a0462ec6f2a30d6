"""Overall sweep progress in the launching terminal: done, failed, skipped, and the ETA.

It polls the tracking store for the parent's children, so it works the same for every
launcher (in-process, joblib workers, SLURM jobs): the store is the one place that all jobs
report to.
"""

from __future__ import annotations

import threading

from omegaconf import DictConfig


def count_jobs(config: DictConfig) -> int | None:
    """Number of jobs a multirun will launch, from its sweep overrides (basic sweeper rules)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        arguments = list(config.hydra.overrides.task)
        params = config.hydra.sweeper.get("params") or {}
        arguments += [f"{key}={value}" for key, value in params.items()]
        total = 1
        seen = set()
        for override in OverridesParser.create().parse_overrides(arguments):
            key = override.get_key_element()
            if key in seen:
                continue
            seen.add(key)
            if override.is_sweep_override():
                total *= len(list(override.sweep_string_iterator()))
        return total
    except Exception:  # an unknown sweeper: show counts without a total
        return None


class SweepProgress:
    """A background thread that renders ``done/total`` with failed/skipped counts and an ETA."""

    def __init__(self, client, experiment_id: str, parent_run_id: str, total: int | None, interval: float = 2.0):
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.total = total
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sweep-progress", daemon=True)
        self._bar = None

    def start(self) -> "SweepProgress":
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.total, desc="sweep", unit="job", position=0, leave=True, disable=False,
                         bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} jobs [{elapsed}<{remaining}]")
        self._thread.start()
        return self

    def counts(self) -> dict[str, int]:
        from precision_sweep.tracking.summary import child_runs, run_status

        counts = {"FINISHED": 0, "FAILED": 0, "SKIPPED": 0, "KILLED": 0, "RUNNING": 0}
        for run in child_runs(self.client, self.experiment_id, self.parent_run_id):
            status = run_status(run)
            counts[status] = counts.get(status, 0) + 1
        return counts

    def _render(self) -> None:
        counts = self.counts()
        done = counts["FINISHED"] + counts["FAILED"] + counts["SKIPPED"] + counts["KILLED"]
        self._bar.n = done
        self._bar.set_description_str(
            f"sweep: ok {counts['FINISHED']}, failed {counts['FAILED'] + counts['KILLED']}, "
            f"skipped {counts['SKIPPED']}, running {counts['RUNNING']}",
            refresh=False,
        )
        self._bar.refresh()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._render()
            except Exception:  # the store may be briefly locked; try again next tick
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._bar is not None:
            try:
                self._render()
            except Exception:
                pass
            self._bar.close()
