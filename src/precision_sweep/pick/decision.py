"""The end-of-sweep decision: the pick under the default budget, printed and logged to the
sweep's parent run (``summary.md``, ``pareto.png``/``pareto.csv``, ``overview.png``), where the
UI shows it: the parent's description holds the summary and the pick with a link to the picked
run, the parent logs headline metrics, and every evaluated child is tagged ``pick``,
``on_front`` and ``within_budget``.

The sweep callback (:mod:`precision_sweep.cli.callback`) calls it once every job has ended;
``precision-pick`` makes the same decision with the budget and rule given on its command line.
"""

from __future__ import annotations

import logging
import textwrap
import time
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, RunTag

from precision_sweep.pick.select import Decision, pick
from precision_sweep.tracking.links import run_page
from precision_sweep.tracking.summary import format_frame, markdown_table

NOTE_TAG = "mlflow.note.content"  # what the UI shows as a run's description

log = logging.getLogger(__name__)


def _pick_settings(pick_cfg) -> tuple[float, str, str]:
    if pick_cfg is None:
        return 1.0, "confident", "model_size_bytes"
    return float(pick_cfg.max_drop), str(pick_cfg.rule), str(pick_cfg.cost)


def _decide(table: pd.DataFrame, pick_cfg):
    max_drop, rule, cost = _pick_settings(pick_cfg)
    return pick(table, max_drop, cost, rule), max_drop, cost


def sweep_decision(table: pd.DataFrame, pick_cfg) -> str:
    """The summary's closing lines: the pick under the default budget and rule, and why."""
    try:
        decision, max_drop, cost = _decide(table, pick_cfg)
    except Exception as exc:  # noqa: BLE001 - the summary itself must always print
        return f"\n\npick: not decided ({type(exc).__name__}: {exc})"
    head = f"pick under the default budget ({max_drop:g} pp, rule {decision.rule}, cost {cost}; pick.max_drop=, pick.rule= to change): "
    if decision.pick is None:
        body = f"none. {decision.reason}"
    else:
        p = decision.pick
        ci = "" if pd.isna(p.get("ci_low_pp")) else f", CI [{p['ci_low_pp']:+.2f}, {p['ci_high_pp']:+.2f}] pp"
        body = (f"{p['precision']} at {p['target']} (run {p['run_id']}): delta {p['delta_pp']:+.2f} pp{ci}, "
                f"{cost}={p['cost']:,.0f}. Why: {decision.reason}.")
    return "\n\n" + "\n".join(textwrap.wrap(head + body, width=110, subsequent_indent="  "))


def log_decision(client, experiment_id: str, parent_run_id: str, table: pd.DataFrame, pick_cfg, tmp) -> None:
    """Log ``summary.md`` (the summary table and the pick), the parent's description, headline
    metrics, ``pareto.png``/``pareto.csv`` and ``overview.png`` (delta and size over precision x
    target), and tag the children."""
    try:
        frame = pd.DataFrame() if table.empty else format_frame(table)
        text = sweep_decision(table, pick_cfg).strip()
        markdown = f"# precision-sweep summary\n\nParent run `{parent_run_id}`.\n\n"
        markdown += (markdown_table(frame) if not frame.empty else "(no runs)") + "\n\n" + text.replace("\n  ", " ") + "\n"
        client.log_text(parent_run_id, markdown, "summary.md")
        decision, max_drop, cost = _decide(table, pick_cfg)
        client.log_batch(parent_run_id, metrics=_headline_metrics(table, decision),
                         tags=[RunTag(NOTE_TAG, _description(experiment_id, decision, markdown))])
        _tag_children(client, decision)
        if not decision.pareto.empty:
            from precision_sweep.pick.report import log_pareto

            log_pareto(client, parent_run_id, decision, max_drop, cost)
        if not table.empty:
            from precision_sweep.metrics.plots import overview_png

            client.log_artifact(parent_run_id, str(overview_png(Path(tmp) / "overview.png", table, max_drop)))
    except Exception as exc:  # noqa: BLE001 - never lose the sweep's closing over a plot
        log.warning("could not log the sweep decision: %s: %s", type(exc).__name__, exc)


def _description(experiment_id: str, decision: Decision, markdown: str) -> str:
    """The parent's description: the pick, linked to its run, above the summary."""
    if decision.pick is None:
        head = f"**Pick: none.** {decision.reason}"
    else:
        p = decision.pick
        link = f"[{p['precision']} at {p['target']}]({run_page(experiment_id, p['run_id'])})"
        head = f"**Pick: {link}**, delta {p['delta_pp']:+.2f} pp, cost {p['cost']:,.0f}."
    return head + "\n\n" + markdown


def _headline_metrics(table: pd.DataFrame, decision: Decision) -> list[Metric]:
    """Counts of evaluated, skipped and failed jobs, the best delta, and the pick's delta and size."""
    status = table["status"] if not table.empty else pd.Series(dtype=str)
    values = {
        "n_evaluated": float(len(decision.pareto)),
        "n_skipped": float((status == "SKIPPED").sum()),
        "n_failed": float(status.isin(["FAILED", "KILLED"]).sum()),
    }
    if not decision.pareto.empty:
        values["best_delta_pp"] = float(decision.pareto["delta_pp"].max())
    if decision.pick is not None:
        values["pick_delta_pp"] = float(decision.pick["delta_pp"])
        if "model_size_bytes" in decision.pick and pd.notna(decision.pick["model_size_bytes"]):
            values["pick_size_kb"] = float(decision.pick["model_size_bytes"]) / 1024
    now = int(time.time() * 1000)
    return [Metric(key, value, now, 0) for key, value in values.items()]


def _tag_children(client, decision: Decision) -> None:
    """``pick``, ``on_front`` and ``within_budget`` ("true"/"false") on every evaluated child."""
    picked = decision.pick["run_id"] if decision.pick is not None else None
    for row in decision.pareto.itertuples():
        flags = {"pick": row.run_id == picked, "on_front": bool(row.on_front), "within_budget": bool(row.within_budget)}
        client.log_batch(row.run_id, tags=[RunTag(key, str(value).lower()) for key, value in flags.items()])
