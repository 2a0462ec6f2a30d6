"""What a decision leaves behind: the Pareto table and plot on the sweep's parent run, and
the picked model in the MLflow Model Registry."""

from __future__ import annotations

import tempfile
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


def register(client, name: str, decision: Decision, description: str):
    """Register the picked run's ``.mlpackage`` as a new version of model ``name``.

    The version's source is the package's artifact URI in the picked run and its run id the
    picked run; ``description`` (the decision) goes on the version and, for a new model, on
    the registered model.

    Raises
    ------
    LookupError
        When the picked run has no ``.mlpackage`` artifact.
    """
    run_id = decision.pick["run_id"]
    run = client.get_run(run_id)
    packages = sorted(a.path for a in client.list_artifacts(run_id) if a.path.endswith(".mlpackage"))
    if not packages:
        raise LookupError(f"run {run_id} has no .mlpackage artifact to register")
    source = f"{run.info.artifact_uri.rstrip('/')}/{packages[0]}"
    try:
        client.get_registered_model(name)
    except Exception:  # RESOURCE_DOES_NOT_EXIST
        client.create_registered_model(name, description=description)
    return client.create_model_version(name, source=source, run_id=run_id, description=description)
