"""The search itself: a greedy fill from the sensitivity ranking, then Optuna.

* **Greedy fill** (the accuracy-aware revert of NNCF): every op starts at the cheapest setting
  that kept the budget when the op alone took it (the sensitivity table); while the combined
  point misses the budget, the op whose current setting cost the most accuracy alone moves to
  its next more precise setting.
* **Optuna** refines it: one categorical parameter per op. ``tpe`` minimises the package size
  with the budget as a constraint (``constraints_func``: the shortfall in pp); ``nsga2`` keeps
  two objectives, size and accuracy delta, under the same constraint (the front). The greedy
  point is the first trial. The study lives in an Optuna journal file, so an interrupted search
  continues where it stopped (``resume=true``), and the sampler's seed makes it repeatable.

Every evaluation goes to ``record(point, source)`` as it finishes (the MLflow child runs).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    points: list = field(default_factory=list)  # (source, its own trial number, Point), in order

    def frame(self) -> pd.DataFrame:
        rows = [{"trial": position, "source": source, "number": number, "size_bytes": p.size_bytes,
                 "delta_pp": p.delta_pp, "ci_low_pp": p.ci_low_pp, "ci_high_pp": p.ci_high_pp,
                 "select_low_pp": p.select_low_pp, "agreement": p.agreement,
                 "ok": p.ok, "shortfall_pp": p.shortfall_pp}
                for position, (source, number, p) in enumerate(self.points)]
        frame = pd.DataFrame(rows)
        if frame.empty:
            return frame
        frame["on_front"] = _front(frame)
        # The front of the points within budget (the ones the search may choose and export): a
        # point outside it (over the selection's bound) may still be smaller and measure better.
        within = frame["ok"].to_numpy(bool)
        frame["on_front_within_budget"] = False
        if within.any():
            frame.loc[within, "on_front_within_budget"] = _front(frame[within])
        return frame

    def best(self):
        """The smallest point within budget; else the one closest to it (then the smallest)."""
        points = [p for _, _, p in self.points]
        within = [p for p in points if p.ok]
        if within:
            return min(within, key=lambda p: (p.size_bytes, -p.delta_pp))
        return min(points, key=lambda p: (p.shortfall_pp, p.size_bytes)) if points else None


def _front(frame: pd.DataFrame) -> list[bool]:
    """Whether each point is on the size x delta Pareto front of ``frame`` (no other point at
    most as large and at least as accurate, better in one)."""
    size, delta = frame["size_bytes"].to_numpy(float), frame["delta_pp"].to_numpy(float)
    return [not any((size <= size[i]) & (delta >= delta[i]) & ((size < size[i]) | (delta > delta[i])))
            for i in range(len(frame))]


def _alone(sensitivity: pd.DataFrame, budget) -> dict:
    """``{(op, setting): (ok, cost)}`` from the sensitivity table; the cost is the number the
    search judges on its split (:meth:`~precision_sweep.search.evaluate.Budget.measure`), in pp."""
    return {(row.op, row.choice): (bool(row.ok), float(budget.measure(row.delta_pp, row.ci_low_pp, row.select_low_pp)))
            for row in sensitivity.itertuples()}


def greedy_fill(space, sensitivity: pd.DataFrame, evaluate, split, record, deadline: float | None = None):
    """The greedy fill (see the module docstring); returns its last point."""
    alone = _alone(sensitivity, evaluate.budget)
    assignment = {}
    for layer in space.layers:
        fine = [label for label in layer.choices if alone.get((layer.op, label), (True, 0.0))[0]]
        assignment[layer.op] = fine[-1] if fine else layer.choices[0]  # choices: most bits first
    step = 0
    while True:
        point = evaluate(dict(assignment), split)
        record(point, "greedy", step)
        step += 1
        if point.ok or (deadline is not None and time.monotonic() > deadline):
            return point
        movable = [layer for layer in space.layers if layer.choices.index(assignment[layer.op]) > 0]
        if not movable:
            return point
        worst = min(movable, key=lambda layer: (alone.get((layer.op, assignment[layer.op]), (True, 0.0))[1], -layer.weights))
        assignment[worst.op] = worst.choices[worst.choices.index(assignment[worst.op]) - 1]
        log.info("greedy: %s back to %s (missed the budget by %.2f pp)", worst.label, assignment[worst.op], point.shortfall_pp)


def _sampler(name: str, seed: int):
    """The seeded sampler; both read each trial's constraint (``Trial.set_constraint``)."""
    import optuna

    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=6, multivariate=True)


def refine(space, evaluate, split, record, settings, journal: Path, start: dict | None, deadline: float | None,
           resume: bool = False, known=None):
    """Optuna trials (see the module docstring) until ``settings.max_trials`` have finished in
    the study or the deadline passes. ``resume`` continues the study of an earlier, interrupted
    run of the same search: its finished trials count, and go to ``known(point, source,
    number)`` (already logged by that run); otherwise the study starts afresh."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        journal.unlink(missing_ok=True)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    two = str(settings.sampler) == "nsga2"
    study = optuna.create_study(study_name="search", storage=storage, load_if_exists=True,
                                sampler=_sampler(str(settings.sampler), int(settings.seed)),
                                directions=["minimize", "maximize"] if two else ["minimize"])
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for trial in finished:  # a resumed study: its points are known again (their packages are cached)
        point = evaluate({layer.op: trial.params[layer.op] for layer in space.layers}, split)
        if known is not None:
            known(point, str(settings.sampler), trial.number)
    remaining = int(settings.max_trials) - len(finished)
    if remaining <= 0:
        return study
    if start is not None and not study.trials:
        study.enqueue_trial(start)

    def objective(trial):
        assignment = {layer.op: trial.suggest_categorical(layer.op, list(layer.choices)) for layer in space.layers}
        point = evaluate(assignment, split)
        trial.set_constraint("shortfall_pp", point.shortfall_pp)  # <= 0: within budget
        record(point, str(settings.sampler), trial.number)
        return (point.size_bytes, point.delta_pp) if two else point.size_bytes

    timeout = None if deadline is None else max(1.0, deadline - time.monotonic())
    study.optimize(objective, n_trials=remaining, timeout=timeout, catch=())
    return study
