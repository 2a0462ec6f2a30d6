"""``precision=search`` in a job: split, sensitivity, greedy fill, Optuna, export, held-out.

The test split is divided (stratified, seeded) into the search part, on which every candidate
is judged and the point chosen (with a margin for the choice among many, and for the held-out
CI: :class:`~precision_sweep.search.evaluate.Budget`), and the held-out part, which the search
never sees. The job then evaluates the chosen package on the held-out part as it evaluates any
variant, so its logged accuracy delta, CI and the budget verdict are the held-out figures:
choosing the best of many trials on one sample overstates it, a fresh sample does not.

Logged on the job's run: ``sensitivity.csv``/``sensitivity.png``, ``search_points.csv`` and
``search_front.png``, the front's recipes (``recipes/precision/search_<run>_<k>.yaml``),
``search.json``, metrics ``search_*`` and the evaluation counts; each greedy step and Optuna
trial is a FINISHED child run of the job's run (tag ``precision_sweep.role=search_trial``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from omegaconf import OmegaConf

from precision_sweep.convert.per_op import parse_choice
from precision_sweep.search.evaluate import Budget, Evaluator, Split, assignment_key, per_op_recipe
from precision_sweep.search.optimize import Outcome, greedy_fill, refine
from precision_sweep.search.sensitivity import measure_sensitivity, sensitivity_key
from precision_sweep.search.space import build_space, check_search_config

log = logging.getLogger(__name__)

ROLE = "search_trial"


def budget_of(cfg) -> Budget:
    return Budget(float(cfg.pick.max_drop), str(cfg.pick.rule), float(cfg.pick.confidence), int(cfg.pick.n_resamples),
                  int(cfg.seed))


def model_for_checks(cfg):
    """The job's model, when ``precision.search.layers`` names layers that must be checked
    against it before any run exists (read from its card where cached: no TensorFlow), else
    None. A model loaded here writes its card, so the job's own load reads that."""
    if not cfg.precision.search.layers:
        return None
    from precision_sweep.data import load_inputs

    return load_inputs(cfg.model, cfg.dataset, Path(cfg.paths.cache))[1]


def check_search(cfg, model=None) -> None:
    """The search's own checks before any work (:func:`~precision_sweep.search.space.check_search_config`);
    with ``model``, also the layer names of ``precision.search.layers``."""
    from precision_sweep.convert.targets import spec_version
    from precision_sweep.data.layers import LayerMapper

    mapper = LayerMapper.of_model(model) if model is not None else None
    check_search_config(cfg.precision.search, spec_version(cfg.target.coremltools_target), cfg.target.name, mapper)


def split_indices(y: np.ndarray, fraction: float, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(search, held-out) indices of the test split, seeded: the samples of one group (copies
    of one image, ``Dataset.test_groups``) on one side, stratified by class where every class
    allows it."""
    from sklearn.model_selection import train_test_split

    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    ids, first = np.unique(groups, return_index=True)
    labels = y[first]
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    search_ids, _ = train_test_split(ids, train_size=fraction, random_state=seed, stratify=stratify)
    in_search = np.isin(groups, search_ids)
    return np.flatnonzero(in_search), np.flatnonzero(~in_search)


def held_out_view(dataset, index: np.ndarray):
    """``dataset`` with its test split cut to ``index`` (pixels too)."""
    from precision_sweep.data.streamed import rows

    pixels = None if dataset.pixels_test is None else rows(dataset.pixels_test, index)
    groups = None if dataset.test_groups is None else dataset.test_groups[index]
    view = dataclasses.replace(dataset, x_test=rows(dataset.x_test, index), y_test=dataset.y_test[index], pixels_test=pixels,
                               run_params=dict(dataset.run_params), test_groups=groups)
    view.feed = dataset.feed
    return view


class TrialLog:
    """Each evaluation of the search as a FINISHED child run of the job's run, logged once it
    has finished (an interrupted evaluation leaves no run behind, nothing RUNNING)."""

    def __init__(self, client, experiment_id: str, parent_run_id: str, outcome: Outcome):
        self.client, self.experiment_id, self.parent = client, experiment_id, parent_run_id
        self.outcome = outcome

    def __call__(self, point, source: str, number: int) -> None:
        from precision_sweep.tracking.job_run import ROLE_TAG

        self.outcome.points.append((source, number, point))
        settings = {}
        for label in point.assignment.values():
            settings[label] = settings.get(label, 0) + 1
        run = self.client.create_run(self.experiment_id, run_name=f"search-{source}-{number}",
                                     tags={"mlflow.parentRunId": self.parent, ROLE_TAG: ROLE})
        try:
            now = int(time.time() * 1000)
            metrics = {"search_delta_pp": point.delta_pp, "search_ci_low_pp": point.ci_low_pp,
                       "search_ci_high_pp": point.ci_high_pp, "search_select_low_pp": point.select_low_pp,
                       "search_agreement": point.agreement,
                       "search_max_abs_diff": point.max_abs_diff, "search_mean_abs_diff": point.mean_abs_diff,
                       "model_size_bytes": point.size_bytes, "search_shortfall_pp": point.shortfall_pp,
                       "search_within_budget": float(point.ok), "search_seconds": point.seconds}
            self.client.log_batch(
                run.info.run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                params=[Param("source", source), Param("trial", str(number)), Param("assignment", assignment_key(point.assignment))],
                tags=[RunTag("settings", ", ".join(f"{k} x{v}" for k, v in sorted(settings.items())))],
            )
            self.client.log_text(run.info.run_id, json.dumps(point.assignment, indent=1, sort_keys=True), "assignment.json")
        except BaseException:  # stopped while logging: the trial run ends KILLED, never RUNNING
            self.client.set_terminated(run.info.run_id, "KILLED")
            raise
        self.client.set_terminated(run.info.run_id, "FINISHED")


def export_recipes(outcome: Outcome, space, settings, run_id: str, folder: Path) -> list[Path]:
    """The front of the points within budget as recipe YAMLs ``folder/precision/search_<run>_<k>.yaml``
    (smallest first): ``precision-sweep --config-dir <folder> precision=search_<run>_<k>``
    rebuilds each package in an ordinary sweep."""
    frame = outcome.frame()
    if frame.empty:
        return []
    chosen = frame[frame["on_front_within_budget"]].sort_values("size_bytes").drop_duplicates("size_bytes")
    paths = []
    (folder / "precision").mkdir(parents=True, exist_ok=True)
    for k, row in enumerate(chosen.itertuples(), 1):
        point = outcome.points[row.trial][2]
        name = f"search_{run_id[:8]}_{k}"
        recipe = {"name": name, "compute_precision": "float16",
                  "per_op_weights": {"ops": {op: label for op, label in sorted(point.assignment.items()) if label != "fp16"},
                                     "weight_threshold": int(settings.weight_threshold)}}
        path = folder / "precision" / f"{name}.yaml"
        header = (f"# Exported by precision=search (run {run_id}): {point.size_bytes:,} bytes, "
                  f"delta {point.delta_pp:+.2f} pp on the search split.\n"
                  f"# precision-sweep --config-dir {folder.resolve()} precision={name} ...\n")
        path.write_text(header + OmegaConf.to_yaml(OmegaConf.create(recipe)))
        paths.append(path)
    return paths


def judge_held_out(cfg, run, metrics: dict, summary: dict) -> dict:
    """The budget judged on the held-out part (the job's own metrics there); logged and said."""
    from precision_sweep.pick.select import within_budget

    budget = budget_of(cfg)
    delta, low = 100 * metrics["accuracy_delta"], 100 * metrics.get("accuracy_delta_ci_low", metrics["accuracy_delta"])
    met = bool(within_budget(delta, low, budget.max_drop, budget.rule))
    best = summary["best"]
    text = (f"search: {summary['evaluations']} evaluations ({summary['sensitivity_evaluations']} for the sensitivity) "
            f"where an exhaustive grid needs {summary['exhaustive_evaluations']:,}; chosen point "
            f"{metrics['model_size_bytes']:,.0f} bytes, delta {best['delta_pp']:+.2f} pp on the search split "
            f"({summary['search_samples']} samples{_selected_by(summary, best)}), {delta:+.2f} pp [CI {low:+.2f}] on the held-out split "
            f"({summary['held_out_samples']} samples): budget {budget.max_drop:g} pp (rule {budget.rule}) "
            + ("met on the held-out split." if met else "NOT met on the held-out split."))
    if not best["ok"]:
        margin = " with the selection's margin" if summary.get("selection") == "simultaneous" else ""
        text += (f" No point met the budget on the search split{margin}; the best misses it by {best['shortfall_pp']:.2f} pp"
                 + (f"; held back by {'; '.join(summary['holding_back'])}" if summary["holding_back"] else "") + ".")
    (log.info if met else log.warning)(text)
    run.set_tags({"search_budget_met": str(met).lower(), "search_summary": text[:4900]})
    return {"search_budget_met": float(met)}


def _selected_by(summary: dict, best: dict) -> str:
    if summary.get("selection") != "simultaneous":
        return ""
    return f"; selected on its lower bound {best['select_low_pp']:+.2f} pp, simultaneous over {summary['candidates']} candidates"


def holding_back(point, sensitivity, space, limit: int = 3) -> list[str]:
    """The ops of ``point`` at a compressed setting that cost the most accuracy alone."""
    alone = {(row.op, row.choice): float(row.delta_pp) for row in sensitivity.itertuples()}
    costs = [(alone.get((layer.op, point.assignment[layer.op]), 0.0), layer) for layer in space.layers
             if parse_choice(point.assignment[layer.op]).kind != "float"]
    worst = sorted(costs, key=lambda item: item[0])[:limit]
    return [f"{layer.label} at {point.assignment[layer.op]} ({delta:+.2f} pp alone)" for delta, layer in worst if delta < 0]


def search_in_job(cfg, run, model, dataset, baseline, job_dir: Path):
    """Run the search for the job (see the module docstring). Returns ``(converted, held-out
    dataset view, held-out baseline, summary dict)``; the job evaluates ``converted`` there."""
    from precision_sweep.convert import convert_variant
    from precision_sweep.convert.app_interface import interface_for
    from precision_sweep.convert.converter import base_package
    from precision_sweep.convert.per_op import weight_ops
    from precision_sweep.convert.recipes import ComputeSpec
    from precision_sweep.data.layers import LayerMapper
    from precision_sweep.hashing import hash_arrays
    from precision_sweep.runtime import execution_of

    settings = cfg.precision.search
    check_search(cfg, model)
    started = time.monotonic()
    deadline = None if settings.timeout_minutes is None else started + 60 * float(settings.timeout_minutes)
    budget = budget_of(cfg)
    search_index, held_index = split_indices(dataset.y_test, float(settings.search_fraction), int(settings.seed),
                                             dataset.test_groups)
    x = dataset.program_inputs("test")
    split = Split(x[search_index], dataset.y_test[search_index], baseline[search_index],
                  None if dataset.test_groups is None else dataset.test_groups[search_index])
    cache_dir = Path(cfg.paths.cache)
    interface = interface_for(cfg, model, dataset)
    base = base_package(model, cfg.target.coremltools_target, ComputeSpec("float16"), cfg.model.max_batch, cache_dir,
                        recipe="fp16", interface=interface)
    mapper = LayerMapper.of_model(model)
    space = build_space(weight_ops(base, int(settings.weight_threshold)),
                        mapper.layer_of if mapper is not None else (lambda name: ""), settings)
    # The points the search may choose among (the greedy fill's and the Optuna trials: the
    # Bonferroni count of the selection bound) and the held-out split's size (Budget.margin).
    budget = dataclasses.replace(budget, candidates=space.greedy_steps_at_most + int(settings.max_trials),
                                 selection=str(settings.selection), held_out_ratio=len(search_index) / len(held_index))
    execution = execution_of(cfg)
    evaluate = Evaluator(model, cfg.target.coremltools_target, execution, budget, int(settings.weight_threshold), cache_dir,
                         cfg.model.max_batch, interface, str(cfg.runtime.name), int(cfg.runtime.batch_size))
    run.log_params({"search_sampler": str(settings.sampler), "search_layers": len(space.layers),
                    "search_samples": len(search_index), "held_out_samples": len(held_index)})
    run.set_tags({"precision_sweep.stage": "search"})
    split_hash = hash_arrays([split.x, split.y])
    key = sensitivity_key(base.name, space, split_hash, execution, budget)
    sensitivity = measure_sensitivity(space, evaluate, split, cache_dir / "search" / f"sensitivity-{key}.json")
    sensitivity_evaluations = evaluate.evaluations
    _log_sensitivity(run, sensitivity, budget, job_dir, cfg)
    outcome = Outcome()
    record = TrialLog(run.client, run.run.info.experiment_id, run.run_id, outcome)
    greedy = greedy_fill(space, sensitivity, evaluate, split, record, deadline)
    if int(settings.max_trials) > 0 and (deadline is None or time.monotonic() < deadline):
        # Not the candidates (max_trials): a resumed study may be given more trials; its finished
        # trials are judged again with the current margin (refine's known points).
        study_key = json.dumps([key, str(settings.sampler), int(settings.seed), budget.max_drop, budget.rule,
                                budget.selection, budget.held_out_ratio])
        journal = cache_dir / "search" / f"study-{assignment_key({'k': study_key})}.jsonl"
        refine(space, evaluate, split, record, settings, journal, greedy.assignment, deadline, resume=bool(cfg.resume),
               known=lambda point, source, number: outcome.points.append((source, number, point)))
    best = outcome.best()
    exhaustive = space.exhaustive_count
    summary = {
        "layers": len(space.layers), "choices": {layer.label: list(layer.choices) for layer in space.layers},
        "evaluations": evaluate.evaluations, "sensitivity_evaluations": sensitivity_evaluations,
        "exhaustive_evaluations": exhaustive, "budget": {"max_drop_pp": budget.max_drop, "rule": budget.rule},
        "candidates": budget.candidates, "selection": budget.selection,
        "search_samples": int(len(search_index)), "held_out_samples": int(len(held_index)),
        "best": best.record(), "seconds": time.monotonic() - started,
        "holding_back": [] if best.ok else holding_back(best, sensitivity, space),
    }
    recipes = export_recipes(outcome, space, settings, run.run_id,
                             Path(settings.export_dir) if settings.export_dir else job_dir / "recipes")
    summary["recipes"] = [str(p) for p in recipes]
    _log_outcome(run, outcome, summary, budget, job_dir, recipes)
    recipe = per_op_recipe(best.assignment, int(settings.weight_threshold))
    package = job_dir / f"{cfg.model.name}-search-{cfg.target.name}.mlpackage"
    converted = convert_variant(model, recipe, cfg.target, package, max_batch=cfg.model.max_batch, cache_dir=cache_dir,
                                interface=interface)
    return converted, held_out_view(dataset, held_index), baseline[held_index], summary


def _log_sensitivity(run, table, budget, job_dir: Path, cfg) -> None:
    path = job_dir / "sensitivity.csv"
    table.to_csv(path, index=False)
    run.log_artifact(path)
    try:
        from precision_sweep.metrics.search_plots import sensitivity_png

        run.log_artifact(sensitivity_png(job_dir / "sensitivity.png", table, budget.max_drop,
                                         title=f"{cfg.model.name}: accuracy delta with one layer compressed"))
    except Exception as exc:  # noqa: BLE001 - a plot never costs the search
        log.warning("sensitivity plot not drawn: %s", exc)


def _log_outcome(run, outcome: Outcome, summary: dict, budget, job_dir: Path, recipes: list[Path]) -> None:
    frame = outcome.frame()
    path = job_dir / "search_points.csv"
    frame.to_csv(path, index=False)
    run.log_artifact(path)
    run.log_text(json.dumps(summary, indent=2, default=str), "search.json")
    for recipe in recipes:
        run.log_artifact(recipe, "recipes/precision")
    best = outcome.best()
    run.log_metrics({"search_evaluations": summary["evaluations"], "search_exhaustive_evaluations": summary["exhaustive_evaluations"],
                     "search_delta_pp": best.delta_pp, "search_ci_low_pp": best.ci_low_pp,
                     "search_select_low_pp": best.select_low_pp, "search_candidates": summary["candidates"],
                     "search_within_budget": float(best.ok), "search_seconds": summary["seconds"]})
    try:
        from precision_sweep.metrics.search_plots import search_front_png

        chosen = next((position for position, (_, _, point) in enumerate(outcome.points) if point is best), None)
        run.log_artifact(search_front_png(job_dir / "search_front.png", frame, budget.max_drop, chosen=chosen))
    except Exception as exc:  # noqa: BLE001
        log.warning("search front plot not drawn: %s", exc)
