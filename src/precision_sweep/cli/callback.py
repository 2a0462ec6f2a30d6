"""The sweep's Hydra callback: owns the sweep's parent run, in the launching process.

``on_multirun_start`` resolves the tracking URI, creates the database and the experiment
once, opens the parent run and hands all three to the jobs through environment variables
(inherited by launcher worker processes). ``on_multirun_end`` prints the summary, logs it
to the parent and closes the parent: FINISHED when every job finished or was skipped, FAILED
when any failed (``precision-sweep`` then exits 1: :func:`last_sweep_failures`). Hydra skips ``on_multirun_end`` when a job
raises, a worker dies or the sweep is interrupted; an ``atexit`` hook closes the parent in that
case too, and marks the children whose processes died KILLED.

On start it also closes what earlier sweeps left RUNNING when their processes died (parents
and their children, see :mod:`precision_sweep.tracking.liveness`), and shows overall progress
(:mod:`precision_sweep.tracking.progress`). A user error found on start (a bad model path, an
unusable store) is reported as one paragraph and the command exits 2 before any run exists.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from mlflow.entities import Param
from omegaconf import DictConfig

from precision_sweep.cli import pool
from precision_sweep.cli.preflight import check_launcher
from precision_sweep.cli.report import fail, report_user_error
from precision_sweep.config_checks import check_config
from precision_sweep.errors import UserInputError
from precision_sweep.pick.decision import log_decision, sweep_decision
from precision_sweep.runtime.threads import share_env
from precision_sweep.tracking import liveness, store
from precision_sweep.tracking.job_run import ROLE_TAG
from precision_sweep.tracking.links import sweep_links
from precision_sweep.tracking.progress import SweepProgress, count_jobs, keep_log_lines_off_the_live_line
from precision_sweep.tracking.summary import child_runs, decision_table, format_table, runs_table
from precision_sweep.tracking.view import share_sweep_view

log = logging.getLogger(__name__)

# (failed, total) of the last sweep this process closed: precision-sweep's exit code.
_LAST_SWEEP = [0, 0]


def last_sweep_failures() -> tuple[int, int]:
    """How many jobs of the last sweep failed, out of how many (0, 0 before any sweep)."""
    return _LAST_SWEEP[0], _LAST_SWEEP[1]


class SweepTrackingCallback(Callback):
    def __init__(self) -> None:
        self.client = None
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.progress: SweepProgress | None = None

    def __getstate__(self) -> dict:
        # Launchers pickle the callbacks into every worker; the sweep's state (client, progress
        # thread) belongs to the launching process only.
        return {"client": None, "parent_run_id": None, "experiment_id": None, "progress": None}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A single run: Hydra creates the run folder under paths.outputs right after this.
        try:
            from precision_sweep.data.validate import validate_sources

            check_config(config)
            validate_sources(config)  # as a sweep does: bad paths and options fail before the job starts
        except UserInputError as exc:
            report_user_error("precision-sweep", exc)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _LAST_SWEEP[:] = [0, 0]
        uri = store.absolute_uri(config.tracking.uri)
        try:
            from precision_sweep.data.validate import validate_sources

            check_config(config)  # value ranges, output/cache/store folders
            check_launcher(config)  # the launcher can start jobs (SLURM partition, Ray address)
            validate_sources(config)  # bad model/dataset paths fail once, before any run exists
            self.experiment_id = store.prepare_experiment(
                uri, config.tracking.experiment, config.tracking.artifact_location
            )
        except UserInputError as exc:
            report_user_error("precision-sweep", exc)
        try:
            self._open_sweep(config, uri)
        except Exception as exc:  # noqa: BLE001 - Hydra would only warn, then run every job outside the sweep
            self._abort_start(exc)

    def _open_sweep(self, config: DictConfig, uri: str) -> None:
        """The parent run, the jobs' environment pointing at it, the progress display."""
        self.client = store.client_for(uri)
        self._close_stale_sweeps()
        sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        parent = self.client.create_run(
            self.experiment_id,
            run_name=f"sweep {config.model.name} on {config.dataset.name} {Path(sweep_dir).name}",
            tags={
                ROLE_TAG: "sweep",
                "sweep_dir": sweep_dir,
                "overrides": " ".join(config.hydra.overrides.task),
                **liveness.process_tags(),
            },
        )
        self.parent_run_id = parent.info.run_id
        self.client.log_batch(self.parent_run_id, params=[Param(k, v) for k, v in swept_axes(config).items()])
        os.environ[store.ENV_URI] = uri
        os.environ[store.ENV_EXPERIMENT] = self.experiment_id
        os.environ[store.ENV_PARENT] = self.parent_run_id
        _share_cores_between_workers(config)
        pool.warm_up(config)  # the workers inherit the environment set above
        atexit.register(self._close_abandoned_parent)
        log.info("MLflow: experiment %s, sweep parent run %s (%s)", self.experiment_id, self.parent_run_id, uri)
        if config.get("progress", True):
            self.progress = SweepProgress(self.client, self.experiment_id, self.parent_run_id, count_jobs(config)).start()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra has just configured this job's logging: keep its records off the live line.
        keep_log_lines_off_the_live_line(self.progress)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_run_id is None:
            return
        self._stop_progress()
        liveness.reap(self.client, self.experiment_id, f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'")
        table = runs_table(child_runs(self.client, self.experiment_id, self.parent_run_id))
        text = format_table(table) + sweep_decision(table, config.get("pick"))
        view_key = share_sweep_view(self.client, self.experiment_id, self.parent_run_id)
        links = sweep_links(os.environ.get(store.ENV_URI, ""), self.experiment_id, self.parent_run_id, view_key)
        print(f"\nprecision-sweep summary (parent run {self.parent_run_id}):\n{text}\n\n{links}\n", flush=True)
        failed = int(table["status"].isin(["FAILED", "KILLED"]).sum()) if not table.empty else 0
        with tempfile.TemporaryDirectory() as tmp:
            decisive = decision_table(table)
            csv = Path(tmp) / "summary.csv"
            decisive.to_csv(csv, index=False)
            self.client.log_artifact(self.parent_run_id, str(csv))
            # the artifact view renders a logged table as a table (sortable columns)
            self.client.log_table(self.parent_run_id, data=decisive.fillna(""), artifact_file="summary_table.json")
            self.client.log_text(self.parent_run_id, text + "\n", "summary.txt")
            log_decision(self.client, self.experiment_id, self.parent_run_id, table, config.get("pick"), Path(tmp))
        self.client.set_tag(self.parent_run_id, "n_jobs", str(len(table)))
        self.client.set_tag(self.parent_run_id, "n_failed", str(failed))
        self.client.set_terminated(self.parent_run_id, status="FAILED" if failed else "FINISHED")
        self._forget()
        _LAST_SWEEP[:] = [failed, len(table)]

    def _abort_start(self, exc: Exception) -> NoReturn:
        """Close the parent (if made) FAILED and stop before any job runs, non-zero."""
        log.debug("the sweep could not start", exc_info=exc)
        if self.parent_run_id is not None:
            try:
                self.client.set_terminated(self.parent_run_id, status="FAILED")
            except Exception:  # noqa: BLE001 - the store itself may be what failed
                pass
        self._stop_progress()
        self._forget()
        fail("precision-sweep", f"error: the sweep could not start recording to the tracking store "
             f"({type(exc).__name__}: {exc}); no job was started. Fix: check the store (tracking.uri) "
             "and re-run the same command; add resume=true to skip the jobs an earlier run finished.", code=1)

    def _forget(self) -> None:
        self.parent_run_id = None
        for key in (store.ENV_URI, store.ENV_EXPERIMENT, store.ENV_PARENT):
            os.environ.pop(key, None)

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _close_stale_sweeps(self) -> None:
        """Mark KILLED the sweeps (and their RUNNING children) whose launching process died."""
        for parent_id in liveness.reap(self.client, self.experiment_id, f"tags.`{ROLE_TAG}` = 'sweep'"):
            log.warning("closed stale sweep %s (its launching process is gone)", parent_id)
            for run in self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'",
            ):
                self.client.set_terminated(run.info.run_id, status="KILLED")

    def _close_abandoned_parent(self) -> None:
        # Hydra skipped on_multirun_end: a job raised, a worker died, or the sweep was interrupted.
        if self.parent_run_id is None:
            return
        try:
            self._stop_progress()
            liveness.reap(self.client, self.experiment_id, f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'")
            self.client.set_tag(self.parent_run_id, "precision_sweep.incomplete", "true")
            self.client.set_terminated(self.parent_run_id, status="FAILED")
            if self._any_job_started():
                advice = "Re-run the same command with resume=true to run only the missing jobs."
            else:  # the grid failed before its first job (an override that does not compose)
                advice = "No job had started: fix what the error above names, then run the command again."
            print(
                f"precision-sweep: the sweep stopped before all jobs ended; parent run "
                f"{self.parent_run_id} closed as FAILED. {advice}",
                file=sys.stderr,
            )
        finally:
            self._forget()

    def _any_job_started(self) -> bool:
        """Whether the sweep's parent has a child run (True when the store cannot tell)."""
        try:
            return bool(self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
                max_results=1))
        except Exception:  # noqa: BLE001  (the advice to resume is the safe default)
            return True


def swept_axes(config: DictConfig) -> dict[str, str]:
    """The sweep's axes as the parent's params: ``{"precision": "fp32,fp16,int8", ...}``, from the
    grid config (``hydra.sweeper.params``) and the command line's comma lists."""
    axes = {str(k): str(v) for k, v in (config.hydra.sweeper.get("params") or {}).items()}
    for override in config.hydra.overrides.task:
        key, _, value = str(override).partition("=")
        if "," in value and not key.startswith(("hydra.", "hydra/")):
            axes[key.lstrip("+~")] = value
    return axes


def _share_cores_between_workers(config: DictConfig) -> None:
    """Give each parallel worker its share of the cores, so that TF and BLAS don't oversubscribe."""
    launcher = str(config.hydra.launcher.get("_target_", ""))
    n_jobs = config.hydra.launcher.get("n_jobs")
    if "Joblib" not in launcher or n_jobs is None:
        return
    cores = os.cpu_count() or 1
    workers = cores if int(n_jobs) < 0 else max(1, int(n_jobs))
    os.environ.update(share_env(cores // workers))
