"""A job's task, judged: the ``task`` config's comparison resolved and run on a variant's outputs.

The task config names its comparison by ``_target_`` (``task.compare``); its other keys are the
comparison's options. :func:`check_labels` runs the task module's ``check`` on the labels and
the FP32 baseline's outputs, before any conversion, so labels that do not fit the outputs are
refused early. :func:`judge` returns the metrics a job logs: each comparison's own
(``<metric>``, ``baseline_<metric>``, ``<metric>_delta`` and its CI), the task-neutral
``metric_delta`` and its CI for the primary (first) metric, and ``metric_gain`` with its CI (the
same delta, positive when better, whichever way the metric improves), which ``precision-pick``
judges against ``pick.max_drop`` in hundredths of the metric's unit (percentage points for
fractions such as mIoU and recall@k).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from precision_sweep.errors import UserInputError
from precision_sweep.targets import resolve_function

# The options every comparison takes from the job, not from the task config.
JOB_OPTIONS = ("confidence", "n_resamples", "seed")


def resolve(task) -> tuple[Callable[..., Any], dict]:
    """``(compare function, its options)`` of a task config; one paragraph when it cannot load."""
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(task.compare, resolve=True) if not isinstance(task.compare, dict) else dict(task.compare)
    target = spec.pop("_target_", None)
    if not isinstance(target, str) or not target:
        raise UserInputError(
            f"task={task.name} has a compare without a _target_: name the comparison function, e.g. "
            "task.compare._target_=precision_sweep.metrics.tasks.regression.compare."
        )
    function = resolve_function(
        target, "task.compare._target_",
        "a comparison function (for a metric of (labels, outputs) of your own, use "
        "_target_: precision_sweep.metrics.tasks.user.compare with metric: <its dotted path>)")
    clash = [key for key in JOB_OPTIONS if key in spec]
    if clash:
        raise UserInputError(
            f"task.compare of task={task.name} sets {', '.join(clash)}, which every job takes from pick.confidence, "
            "pick.n_resamples and seed. Remove them from the task config and set those keys instead."
        )
    return function, spec


def check_task(cfg) -> None:
    """What a task other than classification cannot be combined with yet (each judges accuracy
    or class labels): a UserInputError naming the key and the fix, before any work."""
    if cfg.task.compare is None:
        return
    reasons = []
    if cfg.precision.get("search"):
        reasons.append("precision=search (its trials are judged on accuracy)")
    if cfg.precision.get("auto_repair"):
        reasons.append(f"precision={cfg.precision.name} (its repair rounds are judged on agreement of classes)")
    if cfg.model.get("classifier"):
        reasons.append("model.classifier=true (a Core ML classifier outputs class labels)")
    if reasons:
        raise UserInputError(
            f"task={cfg.task.name} cannot be combined with {' or '.join(reasons)} yet. Choose a plain recipe "
            "(fp32, fp16, int8, palettize, ...) and model.classifier=false for this task, or task=classification."
        )


def _with_model(function, options: dict, input_shape) -> dict:
    """``options``, plus the model's ``input_shape`` (without batch) where ``function`` takes it
    (detection reads the image size its boxes must lie in)."""
    if input_shape is not None and "input_shape" in inspect.signature(function).parameters:
        return {**options, "input_shape": tuple(input_shape)}
    return options


def check_labels(task, labels: np.ndarray, baseline, input_shape=None) -> None:
    """The task module's ``check(labels, outputs)`` on the FP32 baseline's outputs (where the
    module of its comparison has one): a UserInputError before anything is converted.
    ``baseline`` is the judged output, or every output by name for a model with several."""
    function, options = resolve(task)
    check = getattr(importlib.import_module(function.__module__), "check", None)
    if callable(check) and check is not function:
        accepted = inspect.signature(check).parameters
        every = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        options = _with_model(check, options, input_shape)
        check(labels, baseline, **{key: value for key, value in options.items() if every or key in accepted})


def judge(task, labels: np.ndarray, outputs, baseline, *, confidence: float, n_resamples: int, seed: int,
          input_shape=None) -> tuple[dict[str, float], str]:
    """The job's metrics of ``outputs`` against ``labels`` and the baseline (each the judged
    output, or every output by name for a model with several), and the name of the primary
    metric. A comparison may return, besides its metrics with CIs, a dict of plain metrics."""
    function, options = resolve(task)
    returned = tuple(function(labels, outputs, baseline, confidence=confidence, n_resamples=n_resamples, seed=seed,
                              **_with_model(function, options, input_shape)))
    results = [r for r in returned if not isinstance(r, dict)]
    if not results:
        raise UserInputError(f"task.compare of task={task.name} returned no metric; it must return at least one.")
    metrics: dict[str, float] = {}
    for index, result in enumerate(results):
        metrics.update(result.as_metrics(primary=index == 0))
    for extra in (r for r in returned if isinstance(r, dict)):
        metrics.update({key: float(value) for key, value in extra.items()})
    primary = results[0]
    low, high = primary.gain_ci
    metrics.update(metric_gain=primary.gain, metric_gain_ci_low=low, metric_gain_ci_high=high,
                   metric_higher_is_better=float(primary.higher_is_better), metric_n_resamples=float(n_resamples))
    if isinstance(outputs, np.ndarray) and outputs.shape == baseline.shape and np.issubdtype(outputs.dtype, np.number):
        from precision_sweep.metrics import abs_diff

        metrics["max_abs_diff"], metrics["mean_abs_diff"] = abs_diff(outputs, baseline)
    metrics["n_samples"] = float(len(labels))
    return metrics, primary.metric
