"""How the search judges a point on its split (``search.evaluate.Budget``): the margin that
keeps the choice among many candidates from overstating the chosen one (the winner's curse),
on simulated paired predictions whose true delta is known."""

from __future__ import annotations

import numpy as np
import pytest

from precision_sweep.metrics.statistics import mean_delta_bootstrap
from precision_sweep.search.evaluate import Budget


def _candidate(rng, n: int, true_delta: float, flips: float = 0.03):
    """Right/wrong of the baseline and of a variant on ``n`` samples: the variant flips
    ``flips`` of the baseline's right answers to wrong and enough wrong ones to right for
    ``true_delta``."""
    baseline = rng.uniform(size=n) < 0.95
    to_wrong = baseline & (rng.uniform(size=n) < flips)
    to_right = ~baseline & (rng.uniform(size=n) < (flips * 0.95 + true_delta) / 0.05)
    variant = (baseline & ~to_wrong) | to_right
    return variant.astype(float), baseline.astype(float)


def _passes(budget: Budget, variant, baseline, seed: int) -> bool:
    delta = 100 * float(np.mean(variant - baseline))
    low, _, error = mean_delta_bootstrap(variant, baseline, budget.confidence, budget.n_resamples, seed)
    error *= 100
    return budget.holds(delta, 100 * low, delta - budget.margin(error))


def test_the_simultaneous_bound_keeps_a_search_from_choosing_a_point_over_budget():
    """Twenty candidates that all truly lose 1.5 pp, each judged on 600 samples against a 1 pp
    budget: judged one by one (``selection=rule``, the CI's lower bound), one of the twenty
    usually passes, and a search that takes the smallest passing point would ship it; with the
    simultaneous bound none passes in any of the ten searches."""
    rng = np.random.default_rng(0)
    plain = Budget(1.0, "point", n_resamples=500, candidates=20, selection="rule")
    simultaneous = Budget(1.0, "point", n_resamples=500, candidates=20, selection="simultaneous")
    chosen = {"rule": 0, "simultaneous": 0}
    for search in range(10):
        candidates = [_candidate(rng, 600, -0.015) for _ in range(20)]
        chosen["rule"] += any(_passes(plain, *c, search) for c in candidates)
        chosen["simultaneous"] += any(_passes(simultaneous, *c, search) for c in candidates)
    assert chosen["rule"] >= 7, chosen
    assert chosen["simultaneous"] == 0, chosen


def test_a_point_within_budget_by_a_clear_margin_still_passes():
    """The margin is not a refusal of everything: a candidate that truly loses nothing and
    flips 0.2 % of the answers each way passes the bound over 50 candidates on 2,000 samples,
    held out on as many; one that flips 3 % each way cannot be told from a 1 pp loss there."""
    rng = np.random.default_rng(1)
    budget = Budget(1.0, "confident", n_resamples=500, candidates=50, held_out_ratio=1.0)
    assert _passes(budget, *_candidate(rng, 2000, 0.0, flips=0.002), 0)
    assert not _passes(budget, *_candidate(rng, 2000, 0.0, flips=0.03), 0)


def test_the_margin_counts_the_candidates_and_the_held_out_interval():
    """The bound's standard errors: z(1 - 0.025/m) for the choice among m candidates, plus, when
    the held-out verdict is a CI's lower bound (rule confident), z(0.975) scaled to the held-out
    split's size; ``selection=rule`` judges as the pick does."""
    one = Budget(1.0, "point", candidates=1)
    assert one.margin(1.0) == pytest.approx(1.959964, abs=1e-5)
    assert Budget(1.0, "point", candidates=50).margin(1.0) == pytest.approx(3.290527, abs=1e-5)
    assert Budget(1.0, "confident", candidates=50, held_out_ratio=4.0).margin(0.1) == pytest.approx(
        0.1 * (3.290527 + 2 * 1.959964), abs=1e-5)
    rule = Budget(1.0, "confident", selection="rule")
    assert rule.holds(-0.5, -0.99, -5.0) and not rule.holds(-0.5, -1.01, 0.0)
    assert Budget(1.0, "point").shortfall(0.0, 0.0, -1.25) == pytest.approx(0.25)


def test_the_exported_front_is_the_front_of_the_points_within_budget():
    """A point over the selection's bound may be smaller and measure better than the chosen one
    (its standard error is larger): it hides the chosen point from the size x delta front, but
    the front of the points within budget, which the recipes export, starts at the chosen one;
    with no point within budget that front is empty."""
    from precision_sweep.search.evaluate import Point
    from precision_sweep.search.optimize import Outcome

    def point(size, delta, ok):
        return Point({"op": "pal2"}, size, delta, delta - 0.5, delta + 0.5, 0.99, ok, 0.0 if ok else 0.3)

    outcome = Outcome()
    for number, p in enumerate([point(80_000, -0.10, False), point(85_000, -0.20, True), point(90_000, 0.0, True),
                                point(95_000, -0.30, True)]):
        outcome.points.append(("tpe", number, p))
    frame = outcome.frame()
    assert frame["on_front"].tolist() == [True, False, True, False]
    assert frame["on_front_within_budget"].tolist() == [False, True, True, False]
    assert outcome.best().size_bytes == 85_000

    nothing = Outcome()
    nothing.points.append(("tpe", 0, point(80_000, -3.0, False)))
    assert nothing.frame()["on_front_within_budget"].tolist() == [False]
