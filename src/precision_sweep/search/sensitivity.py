"""Per-layer sensitivity: each weight-bearing op compressed alone, at each of its settings.

For every op of the space and every setting cheaper than fp16, the op alone takes the setting
(every other op keeps fp16 weights) and the package is judged on the search split: accuracy
delta with its CI, agreement with TF, size. The table names each op's Keras layer, as the
drift diagnosis does, with the output drift (largest and mean absolute difference of the
outputs from TF's), and is cached as JSON under ``paths.cache/search`` (plain data: reading
it runs no code), keyed by everything that changes it: the fp16 package, the space, the
split, the runtime and the bootstrap's settings. What depends on the budget (``select_low_pp``,
``ok``: :class:`~precision_sweep.search.evaluate.Budget`) is judged again when the table is
read, so a search with another budget or trial count reuses it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from precision_sweep.convert.per_op import parse_choice
from precision_sweep.hashing import hash_config

log = logging.getLogger(__name__)

COLUMNS = ["op", "layer", "op_type", "weights", "choice", "bits_per_weight", "delta_pp", "ci_low_pp", "ci_high_pp",
           "standard_error_pp", "select_low_pp", "agreement", "max_abs_diff", "mean_abs_diff", "size_bytes", "ok"]


def sensitivity_key(base_name: str, space, split_hash: str, execution, budget) -> str:
    return hash_config({
        "base": base_name,
        "layers": [(layer.op, list(layer.choices)) for layer in space.layers],
        "split": split_hash,
        "execution": repr(execution),
        "statistics": [budget.confidence, budget.n_resamples, budget.seed],
        "columns": COLUMNS,
    })


def measure_sensitivity(space, evaluate, split, cache_file: Path | None = None) -> pd.DataFrame:
    """The sensitivity table (columns :data:`COLUMNS`, one row per op and setting, fp16
    excluded), read from ``cache_file`` when it exists, else measured and written there."""
    if cache_file is not None and cache_file.exists():
        log.info("sensitivity: reusing %s", cache_file)
        return judged(pd.DataFrame(json.loads(cache_file.read_text()), columns=COLUMNS), evaluate.budget)
    rows = []
    for number, layer in enumerate(space.layers, 1):
        for label in layer.choices:
            if parse_choice(label).kind == "float":
                continue
            point = evaluate({layer.op: label}, split)
            rows.append({"op": layer.op, "layer": layer.keras_layer, "op_type": layer.op_type, "weights": layer.weights,
                         "choice": label, "bits_per_weight": parse_choice(label).bits_per_weight,
                         "delta_pp": point.delta_pp, "ci_low_pp": point.ci_low_pp, "ci_high_pp": point.ci_high_pp,
                         "standard_error_pp": point.standard_error_pp, "select_low_pp": point.select_low_pp, "agreement": point.agreement, "max_abs_diff": point.max_abs_diff,
                         "mean_abs_diff": point.mean_abs_diff, "size_bytes": point.size_bytes, "ok": point.ok})
        log.info("sensitivity: %d/%d layers (%s)", number, len(space.layers), layer.label)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(".partial")
        partial.write_text(json.dumps(rows))
        partial.replace(cache_file)
    return pd.DataFrame(rows, columns=COLUMNS)


def judged(table: pd.DataFrame, budget) -> pd.DataFrame:
    """``table`` with ``select_low_pp`` and ``ok`` judged by ``budget`` from its measurements."""
    table = table.copy()
    table["select_low_pp"] = table["delta_pp"] - table["standard_error_pp"].map(budget.margin)
    table["ok"] = [budget.holds(row.delta_pp, row.ci_low_pp, row.select_low_pp) for row in table.itertuples()]
    return table
