"""The pick rule: among a sweep's evaluated runs, the cheapest whose accuracy drop is in budget.

``max_drop`` is in percentage points of accuracy below the FP32 TensorFlow baseline: a run
qualifies when ``100 * accuracy_delta >= -max_drop``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# Float slack so that a delta of exactly -max_drop qualifies despite rounding.
_EPS = 1e-9


@dataclass
class Decision:
    qualifying: pd.DataFrame
    pick: dict | None
    reason: str


def pick(table: pd.DataFrame, max_drop: float, cost: str = "model_size_bytes") -> Decision:
    """Apply the budget to a sweep's runs table (see :func:`tracking.summary.runs_table`)."""
    evaluated = table[table["status"] == "FINISHED"] if not table.empty else table
    if evaluated.empty:
        return Decision(evaluated, None, "the sweep has no evaluated (FINISHED) runs")
    cost_column = cost if cost in evaluated.columns else f"metric:{cost}"
    if cost_column not in evaluated.columns:
        known = sorted(c.removeprefix("metric:") for c in evaluated.columns if c.startswith("metric:"))
        raise KeyError(f"cost metric {cost!r} is not logged by these runs; logged metrics: {', '.join(known)}")
    ranked = evaluated.assign(cost=evaluated[cost_column].astype(float), delta_pp=100 * evaluated["accuracy_delta"].astype(float))
    within = ranked[ranked["delta_pp"] >= -float(max_drop) - _EPS]
    within = within.sort_values(["cost", "delta_pp"], ascending=[True, False])
    if within.empty:
        best = ranked.sort_values("delta_pp", ascending=False).iloc[0]
        return Decision(
            within,
            None,
            f"no run keeps accuracy within {max_drop:g} pp of the FP32 baseline; the best delta "
            f"seen is {best['delta_pp']:+.2f} pp ({best['precision']} at {best['target']}, "
            f"run {best['run_id']}). Raise --max-drop or try a higher precision.",
        )
    chosen = within.iloc[0].to_dict()
    return Decision(within, chosen, f"cheapest by {cost} among {len(within)} run(s) within {max_drop:g} pp")
