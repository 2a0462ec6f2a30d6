"""Resume: reuse a FINISHED run with the same fingerprint instead of measuring again.

The reused measurement is linked into the new sweep as a child run that carries the original's
params, metrics and tags plus ``precision_sweep.reused_from`` (the original run id, whose
artifacts stay where they are). Nothing stored before is moved or lost.
"""

from __future__ import annotations

from mlflow.entities import Metric, Param, RunTag

FINGERPRINT_TAG = "precision_sweep.fingerprint"
REUSED_TAG = "precision_sweep.reused_from"
_NOT_COPIED = {"mlflow.parentRunId", "mlflow.runName", REUSED_TAG, "precision_sweep.host", "precision_sweep.pid"}


def find_finished(client, experiment_id: str, fingerprint: str, exclude_run_id: str):
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{FINGERPRINT_TAG}` = '{fingerprint}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for run in runs:
        if run.info.run_id != exclude_run_id:
            return run
    return None


def copy_into(client, source, target_run_id: str) -> None:
    """Give ``target_run_id`` the params, metrics and tags of ``source`` and link it."""
    original = source.data.tags.get(REUSED_TAG, source.info.run_id)
    existing = client.get_run(target_run_id).data.params
    params = [Param(k, v) for k, v in source.data.params.items() if k not in existing]
    metrics = [Metric(k, v, source.info.end_time or 0, 0) for k, v in source.data.metrics.items()]
    tags = [RunTag(k, v) for k, v in source.data.tags.items() if k not in _NOT_COPIED]
    tags.append(RunTag(REUSED_TAG, original))
    client.log_batch(target_run_id, metrics=metrics, params=params, tags=tags)
