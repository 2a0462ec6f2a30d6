"""The pick rule: among a sweep's evaluated runs, the cheapest whose accuracy drop is in budget.

``max_drop`` is in percentage points of accuracy below the FP32 TensorFlow baseline (for a task
other than classification, in hundredths of its primary metric's unit, judged on its
``metric_gain``: see :func:`_judged_columns`). The ``rule`` says which number must be within budget:

* ``point``: the measured delta, ``100 * accuracy_delta >= -max_drop``;
* ``confident``: the lower bound of the paired-bootstrap CI of the delta,
  ``100 * accuracy_delta_ci_low >= -max_drop``: the run is within budget with the CI's
  confidence, not just on this test split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Float slack so that a delta of exactly -max_drop qualifies despite rounding.
_EPS = 1e-9
RULES = ("point", "confident")
CI_LOW = "metric:accuracy_delta_ci_low"
CI_HIGH = "metric:accuracy_delta_ci_high"
GAIN = "metric:metric_gain"


@dataclass
class Decision:
    qualifying: pd.DataFrame
    pick: dict | None
    reason: str
    rule: str = "point"
    # Runs that fail the rule, with a ``why`` column.
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Every evaluated run: cost, delta, CI, on_front, within_budget (see pareto_table).
    pareto: pd.DataFrame = field(default_factory=pd.DataFrame)


# What the budget judges for runs of a task other than classification (see _judged_columns).
TASK_DELTA = "task metric's gain (its delta, positive when better, in hundredths of the metric's unit as pp)"


def rule_text(rule: str, max_drop: float, judged: str = "accuracy delta") -> str:
    """One sentence: what must hold for a run to qualify under ``rule``."""
    if rule == "confident":
        return (f"rule confident: a run qualifies when the lower bound of the CI of its {judged} "
                f"is at least -{max_drop:g} pp (within budget with the CI's confidence)")
    return f"rule point: a run qualifies when its measured {judged} is at least -{max_drop:g} pp"


def within_budget(delta_pp, ci_low_pp, max_drop: float, rule: str):
    """Whether a delta (and its CI's lower bound), in pp, is within ``max_drop`` under ``rule``
    (numbers or aligned arrays/Series)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    measure = ci_low_pp if rule == "confident" else delta_pp
    return measure >= -float(max_drop) - _EPS


def _judged_columns(table: pd.DataFrame) -> tuple[str, str, str]:
    """The delta the budget judges and its CI's columns: the accuracy delta of classification
    runs, else a task's ``metric_gain`` (its primary metric's delta, positive when better, in
    the metric's units: ``max_drop`` is then in hundredths of that unit, percentage points for
    fractions such as mIoU or recall@k)."""
    if "accuracy_delta" in table and table["accuracy_delta"].notna().any():
        return "accuracy_delta", CI_LOW, CI_HIGH
    if GAIN in table and table[GAIN].notna().any():
        return GAIN, GAIN + "_ci_low", GAIN + "_ci_high"
    return "accuracy_delta", CI_LOW, CI_HIGH


def _ranked(table: pd.DataFrame, cost: str) -> pd.DataFrame:
    cost_column = cost if cost in table.columns else f"metric:{cost}"
    if cost_column not in table.columns:
        known = sorted(c.removeprefix("metric:") for c in table.columns if c.startswith("metric:"))
        raise KeyError(f"cost metric {cost!r} is not logged by these runs; logged metrics: {', '.join(known)}")
    delta, low, high = _judged_columns(table)
    frame = table.assign(
        cost=pd.to_numeric(table[cost_column], errors="coerce"),
        delta_pp=100 * pd.to_numeric(table[delta], errors="coerce"),
        ci_low_pp=100 * pd.to_numeric(table[low], errors="coerce") if low in table else np.nan,
        ci_high_pp=100 * pd.to_numeric(table[high], errors="coerce") if high in table else np.nan,
    )
    return frame[frame["cost"].notna()]


def pareto_front(frame: pd.DataFrame) -> pd.Series:
    """True for runs no other run beats: cheaper-or-equal and at-least-as-accurate, one strictly."""
    cost, delta = frame["cost"].to_numpy(float), frame["delta_pp"].to_numpy(float)
    front = []
    for i in range(len(frame)):
        dominated = np.any((cost <= cost[i]) & (delta >= delta[i]) & ((cost < cost[i]) | (delta > delta[i])))
        front.append(not dominated)
    return pd.Series(front, index=frame.index)


def pick(table: pd.DataFrame, max_drop: float, cost: str = "model_size_bytes", rule: str = "point") -> Decision:
    """Apply the budget under ``rule`` to a sweep's runs table (see :func:`tracking.summary.runs_table`)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    evaluated = table[table["status"] == "FINISHED"] if not table.empty else table
    delta = _judged_columns(evaluated)[0] if not evaluated.empty else "accuracy_delta"
    if not evaluated.empty and delta in evaluated:
        evaluated = evaluated[evaluated[delta].notna()]
    if evaluated.empty:
        return Decision(evaluated, None, "the sweep has no evaluated (FINISHED) runs", rule)
    ranked = _ranked(evaluated, cost)
    ranked = ranked.assign(on_front=pareto_front(ranked))
    ok = within_budget(ranked["delta_pp"], ranked["ci_low_pp"], max_drop, rule)
    ranked = ranked.assign(within_budget=ok)
    within = ranked[ok].sort_values(["cost", "delta_pp"], ascending=[True, False])
    excluded = ranked[~ok].sort_values("cost").copy()
    excluded["why"] = [_why(row, max_drop, rule) for _, row in excluded.iterrows()]
    pareto = ranked.sort_values("cost")
    if within.empty:
        if rule == "confident":
            best = ranked.sort_values("ci_low_pp", ascending=False, na_position="last").iloc[0]
            seen = (f"the best lower CI bound seen is {best['ci_low_pp']:+.2f} pp (delta "
                    f"{best['delta_pp']:+.2f} pp, {best['precision']} at {best['target']}, run {best['run_id']})")
        else:
            best = ranked.sort_values("delta_pp", ascending=False).iloc[0]
            seen = (f"the best delta seen is {best['delta_pp']:+.2f} pp ({best['precision']} at "
                    f"{best['target']}, run {best['run_id']})")
        return Decision(
            within, None,
            f"no run keeps accuracy within {max_drop:g} pp of the FP32 baseline under {rule_text(rule, max_drop)}; "
            f"{seen}. Raise --max-drop, try a higher precision"
            + (", or use --rule point." if rule == "confident" else "."),
            rule, excluded, pareto,
        )
    chosen = within.iloc[0].to_dict()
    judged = "accuracy delta" if delta == "accuracy_delta" else TASK_DELTA
    reason = f"{rule_text(rule, max_drop, judged)}; cheapest by {cost} among {len(within)} qualifying run(s)"
    cheaper = excluded[excluded["cost"] < chosen["cost"]]
    if not cheaper.empty:
        reason += "; cheaper runs excluded: " + "; ".join(cheaper["why"])
    return Decision(within, chosen, reason, rule, excluded, pareto)


def _why(row, max_drop: float, rule: str) -> str:
    where = f"{row['precision']}/{row['target']} (run {str(row['run_id'])[:8]})"
    if rule == "confident":
        if pd.isna(row["ci_low_pp"]):
            return f"{where} has no CI logged (a run from before paired statistics)"
        if row["delta_pp"] >= -max_drop - _EPS:
            return (f"{where}: its delta {row['delta_pp']:+.2f} pp is within budget but the CI's lower "
                    f"bound {row['ci_low_pp']:+.2f} pp is not")
        return f"{where}: delta {row['delta_pp']:+.2f} pp, CI lower bound {row['ci_low_pp']:+.2f} pp"
    return f"{where}: delta {row['delta_pp']:+.2f} pp is below -{max_drop:g} pp"
