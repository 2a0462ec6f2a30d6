"""One evaluation of the search: a per-op assignment built (cached) and judged on one split.

An assignment becomes a ``per_op_weights`` recipe and goes through the converter's cached
compression stage, so every package is built once across trials, searches and the sweep that
later rebuilds an exported recipe. It runs under the job's runtime (the emulator here) on the
split, and is compared with the FP32 TensorFlow model on the same samples: accuracy delta in
pp with its paired-bootstrap CI, top-1 agreement, package size. The budget is the pick's rule
(:func:`precision_sweep.pick.select.within_budget`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from precision_sweep.hashing import hash_config


def assignment_key(assignment: dict[str, str]) -> str:
    """A short, order-independent name of an assignment (its cache and recipe key)."""
    return hash_config(sorted(assignment.items()))[:12]


def per_op_recipe(assignment: dict[str, str], weight_threshold: int, name: str | None = None):
    """The ``precision`` config node of an assignment: fp16 compute, one weight setting per op."""
    from precision_sweep.convert.schema import PerOpWeightsConfig, PrecisionConfig

    ops = {op: label for op, label in sorted(assignment.items()) if label != "fp16"}
    recipe = PrecisionConfig(name=name or f"search-{assignment_key(assignment)}",
                             per_op_weights=PerOpWeightsConfig(ops=ops, weight_threshold=int(weight_threshold)))
    return OmegaConf.structured(recipe)


@dataclass
class Budget:
    """The pick's budget, and how the search judges a point against it on the search split.

    ``selection="simultaneous"`` (the default) holds each point to a lower bound, its delta
    less a margin of standard errors (:meth:`margin`), that must be within ``max_drop``:

    * ``z(1 - alpha/candidates)``: a Bonferroni bound over the points the search may choose
      among (alpha is the pick's one-sided level, ``(1 - confidence) / 2``). Choosing the
      smallest of many points that pass on one sample favours the ones whose errors happened
      to miss it (the winner's curse); if every candidate's bound holds at once with
      probability 1 - alpha, so does the chosen one's.
    * with ``rule="confident"``, also ``z(1 - alpha) * sqrt(held_out_ratio)``: the held-out
      verdict is the lower bound of the held-out CI, which sits that many of the search split's
      standard errors (scaled to the held-out split's size) below the held-out delta. A point
      that only just passes the search split's bound would fail there.

    ``selection="rule"`` judges each point as the pick judges one run (``rule``), with no margin.
    """

    max_drop: float  # pp
    rule: str  # point | confident
    confidence: float = 0.95
    n_resamples: int = 2000
    seed: int = 0
    candidates: int = 1
    selection: str = "simultaneous"
    held_out_ratio: float = 1.0  # search samples / held-out samples

    def margin(self, standard_error_pp: float) -> float:
        """How far below the delta the selection bound sits, in pp."""
        from scipy import stats

        alpha = (1.0 - self.confidence) / 2
        z = float(stats.norm.ppf(1.0 - alpha / max(1, int(self.candidates))))
        if self.rule == "confident":
            z += float(stats.norm.ppf(1.0 - alpha)) * self.held_out_ratio ** 0.5
        return z * standard_error_pp

    def measure(self, delta_pp: float, ci_low_pp: float, select_low_pp: float) -> float:
        """The number judged on the search split, in pp."""
        if self.selection == "simultaneous":
            return select_low_pp
        return ci_low_pp if self.rule == "confident" else delta_pp

    def holds(self, delta_pp: float, ci_low_pp: float, select_low_pp: float) -> bool:
        from precision_sweep.pick.select import within_budget

        return bool(within_budget(self.measure(delta_pp, ci_low_pp, select_low_pp), 0.0, self.max_drop, "point"))

    def shortfall(self, delta_pp: float, ci_low_pp: float, select_low_pp: float) -> float:
        """How many pp the judged number is below the budget (0 when within)."""
        return max(0.0, -self.max_drop - self.measure(delta_pp, ci_low_pp, select_low_pp))


@dataclass
class Point:
    assignment: dict[str, str]
    size_bytes: int
    delta_pp: float
    ci_low_pp: float
    ci_high_pp: float
    agreement: float
    ok: bool
    shortfall_pp: float
    seconds: float = 0.0
    path: Path | None = None
    # Output drift against FP32 TF on the split: the largest and the mean absolute difference
    # of the outputs (probabilities).
    max_abs_diff: float = 0.0
    mean_abs_diff: float = 0.0
    # The delta's bootstrap standard error and the lower bound the search selects with
    # (delta less Budget.margin of it), pp.
    standard_error_pp: float = 0.0
    select_low_pp: float = 0.0

    def record(self) -> dict:
        return {"assignment": dict(self.assignment), "size_bytes": self.size_bytes, "delta_pp": self.delta_pp,
                "ci_low_pp": self.ci_low_pp, "ci_high_pp": self.ci_high_pp, "agreement": self.agreement,
                "ok": self.ok, "shortfall_pp": self.shortfall_pp, "max_abs_diff": self.max_abs_diff,
                "mean_abs_diff": self.mean_abs_diff, "standard_error_pp": self.standard_error_pp,
                "select_low_pp": self.select_low_pp}


@dataclass
class Split:
    """Samples as the program takes them, their labels, and the FP32 TF probabilities."""

    x: np.ndarray
    y: np.ndarray
    reference: np.ndarray
    groups: np.ndarray | None = None  # Dataset.test_groups of these samples: the CI resamples whole groups


@dataclass
class Evaluator:
    """Builds and judges assignments (see the module docstring); counts the evaluations."""

    model: object
    target_name: str
    execution: object
    budget: Budget
    weight_threshold: int
    cache_dir: Path | None
    max_batch: int = 1024
    interface: object = None
    runtime_name: str = "auto"
    batch_size: int = 256
    evaluations: int = 0
    _memo: dict = field(default_factory=dict)

    def package(self, assignment: dict[str, str]) -> Path:
        from precision_sweep.convert.app_interface import PLAIN
        from precision_sweep.convert.converter import compressed_package

        return compressed_package(self.model, per_op_recipe(assignment, self.weight_threshold), self.target_name,
                                  self.max_batch, self.cache_dir, interface=self.interface or PLAIN)

    def outputs(self, path: Path, x: np.ndarray) -> np.ndarray:
        from precision_sweep.runtime import batch_size_for, run_batches, select_runtime

        runtime = select_runtime(self.runtime_name, path, self.execution, probe=x)
        return run_batches(runtime, x, batch_size_for(runtime, self.batch_size), progress=False, desc="search")

    def judge(self, outputs: np.ndarray, split: Split) -> dict:
        """Delta (pp) with its CI, agreement: the variant's top-1 against TF's on ``split``."""
        from precision_sweep.metrics.statistics import mean_delta_bootstrap

        predicted, reference = outputs.argmax(-1), split.reference.argmax(-1)
        budget = self.budget
        variant_right, reference_right = (predicted == split.y).astype(float), (reference == split.y).astype(float)
        low, high, error = mean_delta_bootstrap(variant_right, reference_right, budget.confidence, budget.n_resamples,
                                                budget.seed, split.groups)
        delta = 100 * (float(np.mean(variant_right)) - float(np.mean(reference_right)))
        diff = np.abs(outputs.astype(np.float64) - split.reference)
        return {"delta_pp": delta, "ci_low_pp": 100 * low,
                "ci_high_pp": 100 * high, "standard_error_pp": 100 * error,
                "agreement": float(np.mean(predicted == reference)),
                "max_abs_diff": float(diff.max()) if np.isfinite(diff).all() else float("inf"),
                "mean_abs_diff": float(diff.mean()) if np.isfinite(diff).all() else float("inf")}

    def __call__(self, assignment: dict[str, str], split: Split) -> Point:
        key = (assignment_key(assignment), id(split))
        if key in self._memo:
            return self._memo[key]
        from precision_sweep.convert.converter import package_size

        start = time.perf_counter()
        path = self.package(assignment)
        with np.errstate(all="ignore"):
            judged = self.judge(self.outputs(path, split.x), split)
        self.evaluations += 1
        select_low = judged["delta_pp"] - self.budget.margin(judged["standard_error_pp"])
        measured = (judged["delta_pp"], judged["ci_low_pp"], select_low)
        point = Point(dict(assignment), package_size(path), judged["delta_pp"], judged["ci_low_pp"], judged["ci_high_pp"],
                      judged["agreement"], self.budget.holds(*measured), self.budget.shortfall(*measured),
                      time.perf_counter() - start, path, judged["max_abs_diff"], judged["mean_abs_diff"],
                      judged["standard_error_pp"], select_low)
        self._memo[key] = point
        return point
