"""The end-of-sweep decision: the pick under the default budget, printed and logged to the
sweep's parent run (``summary.md``, ``pareto.png``/``pareto.csv``).

The sweep callback (:mod:`precision_sweep.cli.callback`) calls it once every job has ended;
``precision-pick`` makes the same decision with the budget and rule given on its command line.
"""

from __future__ import annotations

import pandas as pd

import logging
import textwrap

from precision_sweep.pick.select import pick
from precision_sweep.tracking.summary import format_frame, markdown_table

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


def log_decision(client, parent_run_id: str, table: pd.DataFrame, pick_cfg, tmp) -> None:
    """Log ``summary.md`` (the summary table and the pick) and ``pareto.png``/``pareto.csv``."""
    try:
        frame = pd.DataFrame() if table.empty else format_frame(table)
        text = sweep_decision(table, pick_cfg).strip()
        markdown = f"# precision-sweep summary\n\nParent run `{parent_run_id}`.\n\n"
        markdown += (markdown_table(frame) if not frame.empty else "(no runs)") + "\n\n" + text.replace("\n  ", " ") + "\n"
        client.log_text(parent_run_id, markdown, "summary.md")
        decision, max_drop, cost = _decide(table, pick_cfg)
        if not decision.pareto.empty:
            from precision_sweep.pick.report import log_pareto

            log_pareto(client, parent_run_id, decision, max_drop, cost)
    except Exception as exc:  # noqa: BLE001 - never lose the sweep's closing over a plot
        log.warning("could not log the sweep decision: %s: %s", type(exc).__name__, exc)
