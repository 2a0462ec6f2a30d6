"""Read a sweep back from MLflow: its child runs as a table, formatted for the terminal and
for markdown (the decision on it is :mod:`precision_sweep.pick.decision`)."""

from __future__ import annotations

import pandas as pd

from precision_sweep.tracking.job_run import OUTCOME_TAG, ROLE_TAG

COLUMNS = ["precision", "target", "compute_units", "device", "status", "accuracy", "accuracy_delta", "agreement",
           "model_size_bytes"]
NO_CLIFFS = "no numeric cliffs"


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
                "device": params.get("device"),
                "runtime": run.data.tags.get("runtime"),
                "status": run_status(run),
                "accuracy": metrics.get("accuracy"),
                "accuracy_delta": metrics.get("accuracy_delta"),
                "task_metric": run.data.tags.get("task_metric"),
                "agreement": metrics.get("agreement"),
                "model_size_bytes": metrics.get("model_size_bytes"),
                "ane_op_fraction": metrics.get("ane_op_fraction"),
                "cliff_count": metrics.get("cliff_count"),
                "start_time": run.info.start_time,
                "note": run.data.tags.get("skip_reason")
                or run.data.tags.get("error_message")
                or (f"reused run {run.data.tags['precision_sweep.reused_from']}" if "precision_sweep.reused_from" in run.data.tags else "")
                or ("" if run.data.tags.get("cliffs", NO_CLIFFS) == NO_CLIFFS else run.data.tags["cliffs"]),
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
    view = format_frame(table)
    view["note"] = view["note"].map(lambda v: v if len(v) <= 70 else v[:67] + "...")
    return view.to_string(index=False)


def _device_columns(view: pd.DataFrame, table: pd.DataFrame) -> None:
    """``ane``: the share of ops on the Neural Engine (estimated); ``cliffs``: how many ops cross
    a numeric cliff of the device (details in each run's cliffs.csv and the note)."""
    at = view.columns.get_loc("model_size_bytes") + 1
    ane = table.get("ane_op_fraction", pd.Series(index=table.index, dtype=float))
    cliffs = table.get("cliff_count", pd.Series(index=table.index, dtype=float))
    view.insert(at, "ane", ["" if pd.isna(v) else f"{100 * v:.0f}%" for v in ane])
    view.insert(at + 1, "cliffs", ["" if pd.isna(v) else f"{int(v)}" for v in cliffs])


def ci_column(table: pd.DataFrame) -> pd.Series:
    """``[low, high]pp`` of each run's paired-bootstrap CI of the accuracy delta, or of a task's
    primary metric delta in its own units ("" if none)."""
    low = table.get("metric:accuracy_delta_ci_low", pd.Series(index=table.index, dtype=float))
    high = table.get("metric:accuracy_delta_ci_high", pd.Series(index=table.index, dtype=float))
    task_low = table.get("metric:metric_delta_ci_low", pd.Series(index=table.index, dtype=float))
    task_high = table.get("metric:metric_delta_ci_high", pd.Series(index=table.index, dtype=float))
    cells = []
    for a, b, c, d in zip(low, high, task_low, task_high):
        if not (pd.isna(a) or pd.isna(b)):
            cells.append(f"[{100 * a:+.2f}, {100 * b:+.2f}]pp")
        elif not (pd.isna(c) or pd.isna(d)):
            cells.append(f"[{c:+.4g}, {d:+.4g}]")
        else:
            cells.append("")
    return pd.Series(cells, index=table.index)


def _task_cells(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The accuracy and delta cells of runs of a task other than classification: its primary
    metric (``mae 0.1234``) and its delta in the metric's own units."""
    values, shown = [], []
    for _, row in table.iterrows():
        name, delta = row.get("task_metric"), row.get("metric:metric_delta")
        value = row.get(f"metric:{name}") if isinstance(name, str) else None
        values.append("" if value is None or pd.isna(value) else f"{name} {value:.4g}")
        shown.append("" if delta is None or pd.isna(delta) else f"{delta:+.4g}")
    return values, shown


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (without the optional ``tabulate`` dependency)."""
    def cell(value) -> str:
        return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def format_frame(table: pd.DataFrame) -> pd.DataFrame:
    """format_table's columns and formatting, as a frame (for summary.md)."""
    view = table[COLUMNS].copy()
    task_values, task_deltas = _task_cells(table)
    view["accuracy"] = [task if pd.isna(v) else f"{v:.4f}" for v, task in zip(view["accuracy"], task_values)]
    view["accuracy_delta"] = [task if pd.isna(v) else f"{100 * v:+.2f}pp"
                              for v, task in zip(view["accuracy_delta"], task_deltas)]
    view.insert(view.columns.get_loc("accuracy_delta") + 1, "delta_ci", ci_column(table))
    view["agreement"] = view["agreement"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    view["model_size_bytes"] = view["model_size_bytes"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
    _device_columns(view, table)
    view["note"] = table["note"]
    return view.rename(columns={"accuracy_delta": "delta", "model_size_bytes": "size_bytes"})


# What decides, first: the summary the parent logs as a table (and as summary.csv).
DECISION_COLUMNS = ["precision", "target", "compute_units", "device", "status", "delta_pp", "ci_low_pp",
                    "size_kb", "accuracy", "agreement", "ane_op_fraction", "cliff_count", "note", "run_id"]


def decision_table(table: pd.DataFrame) -> pd.DataFrame:
    """The sweep's jobs with the deciding columns first, in display units (pp, KB), run ids last."""
    if table.empty:
        return pd.DataFrame(columns=DECISION_COLUMNS)
    view = table.copy()
    for name in ("delta_pp", "ci_low_pp", "size_kb"):
        view[name] = view.get(f"metric:{name}")
    view = view.reindex(columns=DECISION_COLUMNS)
    for name in ("delta_pp", "ci_low_pp", "size_kb", "accuracy", "agreement", "ane_op_fraction"):
        view[name] = pd.to_numeric(view[name], errors="coerce").round(4)
    return view
