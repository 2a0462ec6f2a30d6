"""Hydra callback that owns a sweep's parent run, in the launching process.

``on_multirun_start`` resolves the tracking URI, creates the database and the experiment
once, opens the parent run and hands all three to the jobs through environment variables
(inherited by launcher worker processes). ``on_multirun_end`` prints the summary, logs it
to the parent and closes the parent: FINISHED when every job finished or was skipped, FAILED
when any failed, and then the command exits 1. Hydra skips ``on_multirun_end`` when a job
raises or the sweep is interrupted; an ``atexit`` hook closes the parent in that case too.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from precision_sweep.tracking import store
from precision_sweep.tracking.job_run import ROLE_TAG
from precision_sweep.tracking.summary import child_runs, format_table, runs_table

log = logging.getLogger(__name__)


class SweepTrackingCallback(Callback):
    def __init__(self) -> None:
        self.client = None
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from precision_sweep.app import report_user_error
        from precision_sweep.errors import UserInputError

        uri = store.absolute_uri(config.tracking.uri)
        try:
            self.experiment_id = store.prepare_experiment(
                uri, config.tracking.experiment, config.tracking.artifact_location
            )
        except UserInputError as exc:
            report_user_error(exc)
        self.client = store.client_for(uri)
        sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        parent = self.client.create_run(
            self.experiment_id,
            run_name=f"sweep-{Path(sweep_dir).name}",
            tags={ROLE_TAG: "sweep", "sweep_dir": sweep_dir, "overrides": " ".join(config.hydra.overrides.task)},
        )
        self.parent_run_id = parent.info.run_id
        os.environ[store.ENV_URI] = uri
        os.environ[store.ENV_EXPERIMENT] = self.experiment_id
        os.environ[store.ENV_PARENT] = self.parent_run_id
        atexit.register(self._close_abandoned_parent)
        log.info("MLflow: experiment %s, sweep parent run %s (%s)", self.experiment_id, self.parent_run_id, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_run_id is None:
            return
        table = runs_table(child_runs(self.client, self.experiment_id, self.parent_run_id))
        text = format_table(table)
        print(f"\nprecision-sweep summary (parent run {self.parent_run_id}):\n{text}\n", flush=True)
        failed = int((table["status"] == "FAILED").sum()) if not table.empty else 0
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "summary.csv"
            table.to_csv(csv, index=False)
            self.client.log_artifact(self.parent_run_id, str(csv))
            self.client.log_text(self.parent_run_id, text + "\n", "summary.txt")
        self.client.set_tag(self.parent_run_id, "n_jobs", str(len(table)))
        self.client.set_tag(self.parent_run_id, "n_failed", str(failed))
        self.client.set_terminated(self.parent_run_id, status="FAILED" if failed else "FINISHED")
        self._forget()
        if failed:
            print(f"{failed} of {len(table)} job(s) failed; see error.txt in their runs.", file=sys.stderr)
            sys.exit(1)

    def _forget(self) -> None:
        self.parent_run_id = None
        for key in (store.ENV_URI, store.ENV_EXPERIMENT, store.ENV_PARENT):
            os.environ.pop(key, None)

    def _close_abandoned_parent(self) -> None:
        # Hydra skipped on_multirun_end (a job raised, or the sweep was interrupted).
        if self.parent_run_id is None:
            return
        try:
            self.client.set_tag(self.parent_run_id, "precision_sweep.incomplete", "true")
            self.client.set_terminated(self.parent_run_id, status="FAILED")
        finally:
            self._forget()
