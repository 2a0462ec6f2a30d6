"""One job's MLflow child run, written with an explicit client and experiment id.

A run always ends: FINISHED (evaluated, or skipped with its reason) or FAILED (with the error
class and message in tags and an ``error.txt`` artifact). A skipped or failed run says why in
its description and shows the outcome in its name, as the UI lists them.

An evaluated job's ``.mlpackage`` is also an MLflow LoggedModel (the experiment's Models tab
compares variants across sweeps; a version can be registered from it), with the job's params,
and the job's metrics linked to it and to the test set, which is the run's dataset input.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    Metric,
    Param,
    RunTag,
)
from mlflow.exceptions import MlflowException

from precision_sweep.limits import stop_in_chain
from precision_sweep.runtime.threads import thread_share
from precision_sweep.samples import NamedSamples
from precision_sweep.tracking.liveness import process_tags

# Tag that says how a job ended: evaluated, skipped or failed.
OUTCOME_TAG = "precision_sweep.outcome"
ROLE_TAG = "precision_sweep.role"
log = logging.getLogger(__name__)

# What the UI shows as a run's description: why a job was skipped or failed.
NOTE_TAG = "mlflow.note.content"
# The worker's thread share the job ran with (runtime.threads.thread_share).
THREADS_TAG = "precision_sweep.threads"
# Run params copied onto the job's LoggedModel: what the Models tab filters and compares by.
# The store's messages for an insert that lost to a concurrent one: SQLite, PostgreSQL, MySQL.
_UNIQUE_VIOLATIONS = ("UNIQUE constraint failed", "duplicate key value violates unique constraint", "Duplicate entry")
_INSERT_RACE_ATTEMPTS = 3


def _lost_insert_race(exc: Exception) -> bool:
    return any(text in str(exc) for text in _UNIQUE_VIOLATIONS)


MODEL_PARAMS = (
    "precision", "target", "compute_units", "device", "model", "dataset", "effective_target",
    "spec_version", "model_format", "runtime", "numerics_version", "model_hash", "dataset_hash",
)
# Where a run came from, the same on every job of a sweep: logged as tags, so that the runs
# table's params are what varies (precision, target, compute units, device, effective target,
# spec version) and what a user filters by (model, dataset).
PROVENANCE = {"runtime_requested", "runtime", "numerics_version", "model_hash", "dataset_hash"}
PROVENANCE_PREFIXES = ("model_", "dataset_")  # a source's own details: model_outputs_are, dataset_classes...
# Params despite a provenance prefix: the converted model's format varies with the target.
NOT_PROVENANCE = {"model_format"}


def is_provenance(key: str) -> bool:
    """Whether the run field ``key`` is provenance (a tag), not a param."""
    return key not in NOT_PROVENANCE and (key in PROVENANCE or key.startswith(PROVENANCE_PREFIXES))


def run_field(run, key: str) -> str | None:
    """A job run's field, param or provenance tag."""
    return (run.data.tags if is_provenance(key) else run.data.params).get(key)


# LoggedModel tag <- run tag: the sweep (its parent run), the job's fingerprint, the runtime.
MODEL_TAGS = {
    "precision_sweep.sweep": "mlflow.parentRunId",
    "precision_sweep.fingerprint": "precision_sweep.fingerprint",
    "runtime": "runtime",
}
# The LoggedModel's model_type: every variant is a Core ML package.
MODEL_TYPE = "coreml.mlpackage"


class JobRun:
    def __init__(self, client, experiment_id: str, parent_run_id: str | None, run_name: str):
        tags = {ROLE_TAG: "job", THREADS_TAG: thread_share(), **process_tags()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        self.client = client
        self.run = client.create_run(experiment_id, tags=tags, run_name=run_name)
        self.run_id = self.run.info.run_id
        self.ended = False
        self.model_id: str | None = None  # the job's LoggedModel, once created
        self._model_final = False
        self._dataset: tuple[str, str] | None = None  # (name, digest) of the evaluation data

    def log_params(self, params: dict[str, Any]) -> None:
        """Log what varies across a sweep or is filtered by as params (the runs table's
        columns); provenance (:func:`is_provenance`) goes to tags under the same names."""
        self.client.log_batch(
            self.run_id,
            params=[Param(k, str(v)) for k, v in params.items() if not is_provenance(k)],
            tags=[RunTag(k, str(v)) for k, v in params.items() if is_provenance(k)],
        )

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Log to the run; once the job has a LoggedModel and a dataset input, the metrics are
        also the model's, measured on that dataset (the Models tab's columns)."""
        now = int(time.time() * 1000)
        name, digest = self._dataset or (None, None)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), now, 0, model_id=self.model_id, dataset_name=name, dataset_digest=digest)
                     for k, v in metrics.items()],
        )

    def log_dataset(self, name: str, digest: str, x, y) -> None:
        """Log the evaluation data as the run's dataset input (name, content digest, and a
        profile with the number of samples); later metrics are linked to it.

        Parameters
        ----------
        name, digest
            The dataset's name and content hash (``Dataset.content_hash``: the test arrays).
        x, y
            The test arrays; only their shapes and dtypes are recorded (schema and profile).
        """
        from mlflow.data.numpy_dataset import from_numpy

        features = x.feeds() if isinstance(x, NamedSamples) else x
        if not isinstance(features, (np.ndarray, dict)):  # streamed: its shape, without reading it
            features = np.broadcast_to(np.asarray(x[:1]), x.shape)
        numpy = from_numpy(features, targets=y, name=name, digest=digest)._to_mlflow_entity()
        entity = Dataset(
            name=name, digest=digest, source_type=numpy.source_type, source=numpy.source, schema=numpy.schema,
            profile=json.dumps({"num_rows": len(y), **json.loads(numpy.profile or "{}")}),
        )
        context = InputTag("mlflow.data.context", "evaluation")
        for attempt in range(_INSERT_RACE_ATTEMPTS):
            try:
                self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, tags=[context])])
                break
            except MlflowException as exc:
                # A parallel job inserted the same dataset between MLflow's lookup and its insert;
                # the transaction rolled back, and the next attempt finds that row and links it.
                if attempt == _INSERT_RACE_ATTEMPTS - 1 or not _lost_insert_race(exc):
                    raise
        self._dataset = (name, digest)

    def create_model(self, name: str) -> str:
        """Create the job's LoggedModel (PENDING until :meth:`log_model_package`), with the
        run's params in :data:`MODEL_PARAMS` and tags in :data:`MODEL_TAGS`, as an output of
        the run; metrics logged from now on are linked to it. Returns its id."""
        run = self.client.get_run(self.run_id)
        params = {k: run_field(run, k) for k in MODEL_PARAMS if run_field(run, k) is not None}
        tags = {k: run.data.tags[tag] for k, tag in MODEL_TAGS.items() if tag in run.data.tags}
        model = self.client.create_logged_model(
            run.info.experiment_id, name=_model_name(name), source_run_id=self.run_id,
            params=params, tags=tags, model_type=MODEL_TYPE,
        )
        self.model_id = model.model_id
        self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step=0)])
        return model.model_id

    def log_model_package(self, package: Path) -> None:
        """Upload the package's contents as the LoggedModel's artifacts and mark it READY
        (FAILED, and the error raised, when the upload fails)."""
        try:
            if Path(package).is_file():  # a neuralnetwork .mlmodel
                self.client.log_model_artifact(self.model_id, str(package))
            else:
                self.client.log_model_artifacts(self.model_id, str(package))
        except BaseException:
            self._finalize_model("FAILED")
            raise
        self._finalize_model("READY")

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
        # The measured variant and its test set, linked (not copied) into this sweep.
        if source.outputs and source.outputs.model_outputs:
            self.client.log_outputs(self.run_id, list(source.outputs.model_outputs))
        if source.inputs and source.inputs.dataset_inputs:
            self.client.log_inputs(self.run_id, datasets=list(source.inputs.dataset_inputs))
        self._end("FINISHED")

    def fail(self, exc: BaseException, stop: BaseException | None = None) -> None:
        """FAILED with the error recorded; KILLED when the user or the system stopped the job:
        ``stop`` (the stop the job's block received) or a stop in ``exc``'s chain (a stop a
        library turned into another error is still a stop)."""
        stop = stop if stop is not None else stop_in_chain(exc)
        cause = stop if stop is not None else exc
        message = str(cause) or type(cause).__name__
        outcome = "killed" if stop is not None else "failed"
        self.set_tags(
            {
                OUTCOME_TAG: "failed",
                "error_class": type(cause).__name__,
                "error_message": message[:4900],
                NOTE_TAG: f"**{outcome.capitalize()}:** {type(cause).__name__}: {message[:4000]} (the traceback is in error.txt)",
            }
        )
        self._finalize_model("FAILED")
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.log_text(f"{type(cause).__name__}: {message}\n\n{detail}", "error.txt")
        self._rename(outcome)
        self._end("KILLED" if stop is not None else "FAILED")

    def _rename(self, outcome: str) -> None:
        """Show the outcome in the run's name, which the runs table lists (best effort: the run
        must still end when the store refuses this)."""
        try:
            self.client.update_run(self.run_id, name=f"{self.run.info.run_name} ({outcome})")
        except Exception as exc:  # noqa: BLE001
            log.warning("could not rename run %s: %s", self.run_id, exc)

    def _finalize_model(self, status: str) -> None:
        """READY or FAILED, once (best effort for FAILED: the run must still end)."""
        if self.model_id is None or self._model_final:
            return
        try:
            self.client.finalize_logged_model(self.model_id, status)
            self._model_final = True
        except Exception as exc:
            if status == "READY":
                raise
            log.warning("could not mark logged model %s %s: %s", self.model_id, status, exc)

    def _end(self, status: str) -> None:
        if not self.ended:
            self.client.set_terminated(self.run_id, status=status)
            self.ended = True


def _model_name(name: str) -> str:
    """A LoggedModel name: MLflow refuses ``/ : . % " '`` in one."""
    return re.sub(r"[/:.%\"']", "_", name)


def logged_model_of(client, run):
    """The READY LoggedModel that job ``run`` produced (or, when reused, links); None for a run
    logged before packages were LoggedModels, whose package is only a run artifact."""
    from mlflow.entities import LoggedModelStatus

    outputs = run.outputs.model_outputs if run.outputs else []
    for output in sorted(outputs, key=lambda o: o.step, reverse=True):
        model = client.get_logged_model(output.model_id)
        if model.status == LoggedModelStatus.READY:
            return model
    return None
