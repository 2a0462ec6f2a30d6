"""Read a sweep back from MLflow: its child runs as a table for the terminal and the pick."""

from __future__ import annotations

import pandas as pd

from precision_sweep.tracking.job_run import OUTCOME_TAG, ROLE_TAG

COLUMNS = ["precision", "target", "compute_units", "status", "accuracy", "accuracy_delta", "agreement", "model_size_bytes"]


def child_runs(client, experiment_id: str, parent_run_id: str) -> list:
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=50000,
    )


def latest_sweep(client, experiment_id: str):
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def run_status(run) -> str:
    """FINISHED, FAILED, SKIPPED, RUNNING or KILLED: a skipped job is a FINISHED run tagged so."""
    if run.data.tags.get(OUTCOME_TAG) == "skipped":
        return "SKIPPED"
    return run.info.status


def runs_table(runs) -> pd.DataFrame:
    rows = []
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        rows.append(
            {
                "run_id": run.info.run_id,
                "precision": params.get("precision"),
                "target": params.get("target"),
                "effective_target": params.get("effective_target"),
                "compute_units": params.get("compute_units"),
                "runtime": run.data.tags.get("runtime"),
                "status": run_status(run),
                "accuracy": metrics.get("accuracy"),
                "accuracy_delta": metrics.get("accuracy_delta"),
                "agreement": metrics.get("agreement"),
                "model_size_bytes": metrics.get("model_size_bytes"),
                "start_time": run.info.start_time,
                "note": run.data.tags.get("skip_reason")
                or run.data.tags.get("error_message")
                or (f"reused run {run.data.tags['precision_sweep.reused_from']}" if "precision_sweep.reused_from" in run.data.tags else ""),
                **{f"metric:{k}": v for k, v in metrics.items()},
            }
        )
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values("start_time").reset_index(drop=True)  # grid order
    return table


def format_table(table: pd.DataFrame) -> str:
    """Human-readable summary: precision, target, status, accuracy, delta, agreement, size."""
    if table.empty:
        return "(no runs)"
    view = table[COLUMNS + ["note"]].copy()
    view["accuracy"] = view["accuracy"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    view["accuracy_delta"] = view["accuracy_delta"].map(lambda v: "" if pd.isna(v) else f"{100 * v:+.2f}pp")
    view["agreement"] = view["agreement"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    view["model_size_bytes"] = view["model_size_bytes"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
    view["note"] = view["note"].map(lambda v: v if len(v) <= 70 else v[:67] + "...")
    view = view.rename(columns={"accuracy_delta": "delta", "model_size_bytes": "size_bytes"})
    return view.to_string(index=False)
