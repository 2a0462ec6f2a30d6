"""What a decision leaves behind: the Pareto table and plot on the sweep's parent run, and
the picked model in the MLflow Model Registry."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from precision_sweep.pick.select import Decision

PARETO_COLUMNS = ["run_id", "precision", "target", "compute_units", "cost", "delta_pp", "ci_low_pp", "ci_high_pp", "on_front", "within_budget"]


def pareto_view(decision: Decision) -> pd.DataFrame:
    """Every evaluated run, cheapest first, with its delta, CI, front membership and verdict."""
    if decision.pareto.empty:
        return decision.pareto
    view = decision.pareto[[c for c in PARETO_COLUMNS if c in decision.pareto]].copy()
    view["pick"] = view["run_id"] == (decision.pick or {}).get("run_id")
    return view.reset_index(drop=True)


def log_pareto(client, parent_run_id: str, decision: Decision, max_drop: float, cost: str) -> list[str]:
    """Log ``pareto.png`` and ``pareto.csv`` to the sweep's parent run; return their names."""
    from precision_sweep.metrics.plots import pareto_png

    view = pareto_view(decision)
    if view.empty:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        png = pareto_png(Path(tmp) / "pareto.png", view, cost, max_drop,
                         (decision.pick or {}).get("run_id"), decision.rule)
        csv = Path(tmp) / "pareto.csv"
        view.to_csv(csv, index=False)
        client.log_artifact(parent_run_id, str(png))
        client.log_artifact(parent_run_id, str(csv))
    return ["pareto.png", "pareto.csv"]


DEFAULT_ALIAS = "candidate"


def register(client, name: str, decision: Decision, description: str, alias: str | None = DEFAULT_ALIAS):
    """Register the picked run's package as a new version of model ``name`` and point
    ``alias`` at it.

    The version's source is the run's LoggedModel (``models:/<model_id>``, the package's own
    artifacts; for a reused run, the original's), its run id the picked run; the LoggedModel is
    tagged with the version, as ``mlflow.register_model`` does, so its page links to it. A run
    logged before packages were LoggedModels is registered from its ``.mlpackage`` artifact.
    ``description`` (the decision) goes on the version and, for a new model, on the registered
    model.

    Raises
    ------
    LookupError
        When the picked run has neither a LoggedModel nor a ``.mlpackage`` artifact.
    """
    from precision_sweep.tracking.job_run import logged_model_of

    run_id = decision.pick["run_id"]
    run = client.get_run(run_id)
    model = logged_model_of(client, run)
    if model is not None:
        source, model_id = f"models:/{model.model_id}", model.model_id
    else:
        packages = sorted(a.path for a in client.list_artifacts(run_id) if a.path.endswith(".mlpackage"))
        if not packages:
            raise LookupError(f"run {run_id} has no logged model or .mlpackage artifact to register")
        source, model_id = f"{run.info.artifact_uri.rstrip('/')}/{packages[0]}", None
    try:
        client.get_registered_model(name)
    except Exception:  # RESOURCE_DOES_NOT_EXIST
        client.create_registered_model(name, description=description)
    with _global_tracking_uri(client.tracking_uri):
        version = client.create_model_version(name, source=source, run_id=run_id, description=description,
                                              model_id=model_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    if model_id:
        _link_version(client, model_id, version)
    return version


@contextmanager
def _global_tracking_uri(uri: str):
    """MLflow's SQL registry resolves a ``models:/<model_id>`` source through the process's
    tracking URI, not the client's (its own TODO in ``create_model_version``): point it at the
    client's store while registering (then back to ``$MLFLOW_TRACKING_URI``, as the CLI had it)."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def _link_version(client, model_id: str, version) -> None:
    """Record the version on the LoggedModel (the tag the UI reads to list its versions)."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    existing = client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
    versions = [*(json.loads(existing) if existing else []), {"name": version.name, "version": version.version}]
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(versions)})
