"""One job's MLflow child run, written with an explicit client and experiment id.

A run always ends: FINISHED (evaluated, or skipped with its reason) or FAILED (with the error
class and message in tags and an ``error.txt`` artifact). A skipped or failed run says why in
its description and shows the outcome in its name, as the UI lists them.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from precision_sweep.limits import JobTerminated
from precision_sweep.runtime.threads import thread_share
from precision_sweep.tracking.liveness import process_tags

# Tag that says how a job ended: evaluated, skipped or failed.
OUTCOME_TAG = "precision_sweep.outcome"
ROLE_TAG = "precision_sweep.role"
log = logging.getLogger(__name__)

# What the UI shows as a run's description: why a job was skipped or failed.
NOTE_TAG = "mlflow.note.content"
# The worker's thread share the job ran with (runtime.threads.thread_share).
THREADS_TAG = "precision_sweep.threads"


class JobRun:
    def __init__(self, client, experiment_id: str, parent_run_id: str | None, run_name: str):
        tags = {ROLE_TAG: "job", THREADS_TAG: thread_share(), **process_tags()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        self.client = client
        self.run = client.create_run(experiment_id, tags=tags, run_name=run_name)
        self.run_id = self.run.info.run_id
        self.ended = False

    def log_params(self, params: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float]) -> None:
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
        )

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=artifact_path or path.name)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def finish(self) -> None:
        self.set_tags({OUTCOME_TAG: "evaluated"})
        self._end("FINISHED")

    def skip(self, reason: str) -> None:
        self.set_tags({OUTCOME_TAG: "skipped", "skip_reason": reason, NOTE_TAG: f"**Skipped.** {reason}"})
        self.log_text(reason + "\n", "skip_reason.txt")
        self._rename("skipped")
        self._end("FINISHED")

    def reuse(self, source) -> None:
        """Finish as a link to ``source``, a FINISHED run with the same fingerprint."""
        from precision_sweep.tracking.resume import copy_into

        copy_into(self.client, source, self.run_id)
        self._end("FINISHED")

    def fail(self, exc: BaseException) -> None:
        """FAILED with the error recorded; KILLED when the user or the system stopped the job."""
        message = str(exc) or type(exc).__name__
        stopped = isinstance(exc, (KeyboardInterrupt, SystemExit, JobTerminated))
        outcome = "killed" if stopped else "failed"
        self.set_tags(
            {
                OUTCOME_TAG: "failed",
                "error_class": type(exc).__name__,
                "error_message": message[:4900],
                NOTE_TAG: f"**{outcome.capitalize()}:** {type(exc).__name__}: {message[:4000]} (the traceback is in error.txt)",
            }
        )
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.log_text(f"{type(exc).__name__}: {message}\n\n{detail}", "error.txt")
        self._rename(outcome)
        self._end("KILLED" if stopped else "FAILED")

    def _rename(self, outcome: str) -> None:
        """Show the outcome in the run's name, which the runs table lists (best effort: the run
        must still end when the store refuses this)."""
        try:
            self.client.update_run(self.run_id, name=f"{self.run.info.run_name} ({outcome})")
        except Exception as exc:  # noqa: BLE001
            log.warning("could not rename run %s: %s", self.run_id, exc)

    def _end(self, status: str) -> None:
        if not self.ended:
            self.client.set_terminated(self.run_id, status=status)
            self.ended = True
