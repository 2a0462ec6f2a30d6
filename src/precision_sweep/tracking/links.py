"""Where a sweep can be looked at in the MLflow UI, for the tracking URI in use.

MLflow 3's UI opens in its GenAI mode (traces, an assistant); ``?workflowType=machine_learning``
opens the classic runs view, where a sweep's parent run expands into its jobs. A tracking
server (``http(s)://``) is its own UI; a database or folder store needs ``mlflow ui`` started
on it, whose command is part of the links. With a view key (:mod:`precision_sweep.tracking.view`)
the runs view opens the sweep's ready view: its jobs, its decisive columns, and its charts.
"""

from __future__ import annotations

UI_HOST, UI_PORT = "127.0.0.1", 5000


def runs_view(experiment_id: str, view_key: str | None = None, charts: bool = False) -> str:
    """The UI route of an experiment's runs view (relative: ``#/...``), opening the shared view
    ``view_key`` if given, in its chart mode if ``charts``."""
    route = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if view_key:
        route += f"&viewStateShareKey={view_key}"
    return route + ("&compareRunsMode=CHART" if charts else "")


def run_page(experiment_id: str, run_id: str) -> str:
    """The UI route of one run (relative: ``#/...``), in the UI's model-training mode (its
    navigation lists runs and models, not traces)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def ui_base(uri: str) -> tuple[str, str | None]:
    """``(base URL of the UI, command that starts it or None when the server is the UI)``."""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/"), None
    return f"http://{UI_HOST}:{UI_PORT}", f"mlflow ui --backend-store-uri {uri} --host {UI_HOST} --port {UI_PORT}"


def sweep_links(uri: str, experiment_id: str, parent_run_id: str, view_key: str | None = None) -> str:
    """The lines printed at the end of a sweep: how to open the UI, the runs view (the sweep's
    ready view with ``view_key``, and then its charts too), the parent."""
    base, command = ui_base(uri)
    lines = [f"  start the UI:  {command}"] if command else []
    lines.append(f"  runs view:     {base}/{runs_view(experiment_id, view_key)}")
    if view_key:
        lines.append(f"  charts:        {base}/{runs_view(experiment_id, view_key, charts=True)}")
    lines.append(f"  this sweep:    {base}/{run_page(experiment_id, parent_run_id)}")
    return "MLflow UI:\n" + "\n".join(lines)
