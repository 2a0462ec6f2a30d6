"""A sweep's ready view in the MLflow UI: its jobs, the columns that decide, and two charts.

Owns the experiment tag ``mlflow.sharedViewState.<key>``, one per sweep, which the runs view
opens when its URL carries ``viewStateShareKey=<key>`` (:func:`precision_sweep.tracking.links.runs_view`).
The view lists the sweep's child runs (a filter on their parent, so they show without
expanding it) sorted by size, with the columns a pick is made from (``size_kb``, ``delta_pp``,
``ci_low_pp``; ``precision``, ``target``, ``compute_units``; ``pick``, ``within_budget``) and, in its chart
mode, a ``size_kb`` x ``delta_pp`` scatter and parallel coordinates over
``precision``/``target``/``compute_units``/``delta_pp``.

Tested with MLflow 3.17.2 and 3.18.0 (tests/ui, a real browser). The format is the UI's, not a
documented API; it was read from 3.17.2's bundle (``mlflow/server/js/build/static/js``): the tag
holds a saved-view envelope ``{"name", "createdAt", "updatedAt", "state"}`` whose ``state`` is
the view as JSON text (the UI also accepts the bare JSON of earlier versions). The UI takes the
search keys (``searchFilter``, ``orderByKey``, ...) and the table/chart keys (``selectedColumns``,
``compareRunCharts``, ...) from it and fills the rest with its defaults; column keys are
``metrics.`name```, ``params.`name``` and ``tags.`name```. The envelope also lists the view by
name in the experiment's saved views. A UI that does not know the key opens the plain runs view.
"""

from __future__ import annotations

import json
import logging
import time

from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

TAG_PREFIX = "mlflow.sharedViewState."

# What a pick is made from, in the order the table shows them; eight columns beside the run's
# name, date and duration fit a 1920-pixel screen with the UI's assistant panel open.
METRICS = ("size_kb", "delta_pp", "ci_low_pp")
PARAMS = ("precision", "target", "compute_units")
TAGS = ("pick", "within_budget")
_FIXED_COLUMNS = {"attributes.`Run Name`": 170, "runDateAndNestInfo": 120, "duration": 80}
_WIDTH, _WIDE = 90, ("compute_units",)  # needs 110 to show its name

# Fixed ids, so that the same sweep always writes the same view (the UI only needs them unique).
# The sweep's charts have a section of their own, ahead of the one the UI fills with a bar chart
# per metric (there, they would be placed among those).
_SECTIONS = {"precision-sweep-charts": "precision-sweep", "precision-sweep-model-metrics": "Model metrics",
             "precision-sweep-system-metrics": "System metrics"}
_SECTION = "precision-sweep-charts"


def share_key(parent_run_id: str) -> str:
    """The view's key: one per sweep, derived from its parent run."""
    return f"precision-sweep-{parent_run_id}"


def _column(kind: str, name: str) -> str:
    return f"{kind}.`{name}`"


def view_state(parent_run_id: str) -> dict:
    """The runs view of one sweep, in the UI's own shape (search keys and UI-state keys)."""
    charts = [
        {
            "uuid": "precision-sweep-scatter", "type": "SCATTER", "metricSectionId": _SECTION,
            "deleted": False, "isGenerated": False, "runsCountToCompare": 100,
            "xaxis": {"key": "size_kb", "type": "METRIC"}, "yaxis": {"key": "delta_pp", "type": "METRIC"},
        },
        {
            "uuid": "precision-sweep-parallel", "type": "PARALLEL", "metricSectionId": _SECTION,
            "deleted": False, "isGenerated": False, "runsCountToCompare": 100, "showAllRuns": True,
            "selectedParams": ["precision", "target", "compute_units"], "selectedMetrics": ["delta_pp"],
        },
    ]
    sections = [
        {"uuid": uuid, "name": name, "display": True, "isReordered": False, "deleted": False, "isGenerated": uuid != _SECTION}
        for uuid, name in _SECTIONS.items()
    ]
    columns = [
        *(_column("metrics", m) for m in METRICS),
        *(_column("params", p) for p in PARAMS),
        *(_column("tags", t) for t in TAGS),
    ]
    return {
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        "orderByKey": _column("metrics", "size_kb"),
        "orderByAsc": True,
        "selectedColumns": columns,
        # The UI applies widths to the columns it is given an order for (ag-grid column ids).
        "columnOrder": [*_FIXED_COLUMNS, *columns],
        "columnWidths": {**_FIXED_COLUMNS, **{c: 110 if c.split("`")[1] in _WIDE else _WIDTH for c in columns}},
        "runsHiddenMode": "SHOW_ALL",  # the UI's default charts only the first 10 runs
        "compareRunCharts": charts,
        "compareRunSections": sections,
    }


def _envelope_state(value: str) -> dict | None:
    try:
        return json.loads(json.loads(value)["state"])
    except (ValueError, KeyError, TypeError):
        return None


def share_sweep_view(client, experiment_id: str, parent_run_id: str) -> str | None:
    """Write (or leave as it is) the sweep's view on its experiment; return its key.

    Idempotent: an unchanged view is not written again, and a rewrite keeps its creation time.
    Returns None, with a warning, when the store refuses the tag (e.g. a tracking server where
    this user may not edit the experiment): the links then open the plain runs view.

    Parameters
    ----------
    client : mlflow.MlflowClient
        A client on the sweep's store.
    experiment_id, parent_run_id : str
        The sweep's experiment and parent run.
    """
    key = share_key(parent_run_id)
    state = view_state(parent_run_id)
    try:
        old = client.get_experiment(experiment_id).tags.get(TAG_PREFIX + key)
        if old is not None and _envelope_state(old) == state:
            return key
        now = int(time.time() * 1000)
        created = json.loads(old)["createdAt"] if old is not None and _envelope_state(old) is not None else now
        envelope = {"name": client.get_run(parent_run_id).info.run_name, "createdAt": created, "updatedAt": now, "state": json.dumps(state)}
        client.set_experiment_tag(experiment_id, TAG_PREFIX + key, json.dumps(envelope))
    except MlflowException as exc:
        log.warning("MLflow: the sweep's ready view was not saved on experiment %s (%s); the runs-view link opens the default columns", experiment_id, exc)
        return None
    return key
