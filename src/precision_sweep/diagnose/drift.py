"""Per-op drift of a low-precision program against the FP32 program of the same model.

Both programs run on the same batch with the emulator capturing every intermediate variable.
Variables are matched by name after removing the suffixes coremltools appends when it
rewrites a program (``_cast_fp16``/``_cast_fp32`` for ops moved to another precision,
``_to_fp16``/``_to_fp32`` for inserted casts, ``_quantized`` for compressed weights) and the
number TensorFlow gives each traced loop/branch function (``while_body_533``: the FP32 and the
low-precision programs come from two conversions, two traces, two numbers). For each
matched op the table holds the relative L2 error, the cosine similarity, the SQNR in dB and
whether NaN/Inf appeared, plus the op's *gain*: its error minus the largest error of its
inputs, which ranks the ops that introduce error rather than the ones that only carry it.

Ops inside ``while_loop``/``cond`` bodies have one row per loop iteration: the emulator's
capture names their values ``var@<iteration path>`` (``var@3``, ``var@3.1`` in nested loops,
see :func:`precision_sweep.emulator.executor.qualified_name`); the path is kept through the
name matching and shown in the ``iteration`` column, and the dataflow the gain follows goes
from one iteration to the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from precision_sweep.data.layers import LayerMapper
from precision_sweep.samples import feeds_of

_SUFFIX = re.compile(r"(_cast_fp16|_cast_fp32|_to_fp16|_to_fp32|_quantized)+$")
# The unique number of a traced TensorFlow loop or branch function inside a variable name.
_TF_FUNCTION_NUMBER = re.compile(r"(while_body|while_cond|cond_true|cond_false)_\d+")
# Ops that move or reorder values without computing: they carry error but never cause it.
_MOVERS = {"transpose", "reshape", "cast", "squeeze", "expand_dims", "identity", "slice_by_index", "max_pool", "relu"}


def split_qualified(name: str) -> tuple[str, str]:
    """``(variable name, iteration path)`` of a captured name (``""`` at the top level)."""
    var, _, iteration = name.partition("@")
    return var, iteration


def normalize(name: str) -> str:
    """A variable or op name without coremltools' precision-rewrite suffixes (a captured
    name's iteration path, ``@3``, is kept)."""
    base, marker, path = name.partition("@")
    previous = None
    while previous != base:
        previous, base = base, _SUFFIX.sub("", base)
    return base + marker + path


def match_key(name: str) -> str:
    """What a variable is matched by across programs: :func:`normalize` without TensorFlow's
    per-trace function numbers."""
    return _TF_FUNCTION_NUMBER.sub(r"\1", normalize(name))


@dataclass
class Capture:
    """Every intermediate of one program on one batch, with its producers and dataflow."""

    outputs: dict[str, np.ndarray]
    values: dict[str, tuple[str, np.ndarray]]  # var -> (op type, value), program order
    producers: dict[str, tuple[str, str]]  # var -> (op type, op name)
    inputs_of: dict[str, list[str]]  # var -> variables its op read


def capture(program: Any, x: np.ndarray, execution: Any = None) -> Capture:
    """Run ``program`` (a package path, MLModel, pymil Program or Emulator) on ``x`` under
    ``execution`` (an :class:`~precision_sweep.emulator.Execution`; default: all, m1)."""
    from precision_sweep.emulator import Emulator, Execution

    emulator = program if isinstance(program, Emulator) else (execution or Execution()).emulator(program)
    if emulator.fixed_batch:
        # A program that takes one sample (a detector whose NMS takes one image): its
        # intermediates are compared on the first sample, whose kept boxes may differ in number
        x = x[: emulator.fixed_batch]
    inputs_of: dict[str, list[str]] = {}
    with np.errstate(all="ignore"):
        outputs, values = emulator.predict(feeds_of(x, emulator.input_names[0]), capture=True, dataflow=inputs_of)
    return Capture(outputs, values, dict(emulator.plan.producers), inputs_of)


def _compare(value: np.ndarray, reference: np.ndarray) -> dict[str, float | bool]:
    v = np.asarray(value, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    nonfinite = bool(not np.isfinite(v).all())
    ref_nonfinite = bool(not np.isfinite(r).all())
    if v.shape != r.shape:
        return dict(rel_error=np.nan, cosine=np.nan, sqnr_db=np.nan, max_abs_error=np.nan,
                    nonfinite=nonfinite, ref_nonfinite=ref_nonfinite)
    if nonfinite and not ref_nonfinite:
        return dict(rel_error=np.inf, cosine=np.nan, sqnr_db=-np.inf, max_abs_error=np.inf,
                    nonfinite=True, ref_nonfinite=False)
    ok = np.isfinite(v) & np.isfinite(r)
    v, r = v[ok], r[ok]
    noise = float(np.sum((v - r) ** 2))
    signal = float(np.sum(r ** 2))
    norms = float(np.linalg.norm(v) * np.linalg.norm(r))
    return dict(
        rel_error=float(np.sqrt(noise) / max(np.sqrt(signal), 1e-30)) if v.size else 0.0,
        cosine=float(np.dot(v, r) / norms) if norms > 0 else (1.0 if noise == 0 else 0.0),
        sqnr_db=float(10 * np.log10(signal / noise)) if noise > 0 else np.inf,
        max_abs_error=float(np.max(np.abs(v - r))) if v.size else 0.0,
        nonfinite=nonfinite,
        ref_nonfinite=ref_nonfinite,
    )


def drift_table(variant: Capture, reference: Capture, mapper: LayerMapper | None = None, threshold: float = 0.05) -> pd.DataFrame:
    """One row per variant op whose output has an FP32 counterpart, in program order.

    Columns: ``position``, ``var``, ``ref_var``, ``op_type``, ``op_name``, ``key`` (the op
    name without rewrite suffixes: what ``FP16ComputePrecision``'s op selector sees, sanitized),
    ``iteration`` (the loop iteration path of an op inside control flow, ``""`` at the top
    level), ``layer``, ``rel_error``, ``cosine``, ``sqnr_db``, ``max_abs_error``, ``nonfinite``,
    ``ref_nonfinite``, ``gain``, ``is_first_jump`` (first op whose relative error exceeds
    ``threshold``) and ``is_first_nonfinite`` (first op whose output holds NaN/Inf that the
    FP32 program does not).
    """
    by_key = {}
    for name in reference.values:
        by_key.setdefault(match_key(name), name)
    error_of: dict[str, float] = {}
    rows = []
    for name, (op_type, value) in variant.values.items():
        ref_name = by_key.get(match_key(name))
        if ref_name is None:
            continue
        var, iteration = split_qualified(name)
        _, op_name = variant.producers.get(var, (op_type, var))
        stats = _compare(value, reference.values[ref_name][1])
        error_of[name] = stats["rel_error"]
        rows.append(dict(var=name, ref_var=ref_name, op_type=op_type, op_name=op_name,
                         key=normalize(op_name), iteration=iteration,
                         layer=mapper.layer_of(var, op_name) if mapper else "", **stats))

    def upstream(var: str, seen: frozenset = frozenset()) -> float:
        # Largest error among the matched variables feeding ``var`` (through unmatched ones).
        worst = 0.0
        for source in variant.inputs_of.get(var, []):
            if source in seen:
                continue
            if source in error_of:
                worst = max(worst, error_of[source] if np.isfinite(error_of[source]) else np.inf)
            else:
                worst = max(worst, upstream(source, seen | {source}))
        return worst

    table = pd.DataFrame(rows)
    if table.empty:
        return table
    gains = []
    for row in rows:
        before, now = upstream(row["var"]), row["rel_error"]
        if np.isnan(now):
            gains.append(np.nan)
        elif np.isinf(now):
            gains.append(0.0 if np.isinf(before) else np.inf)
        else:
            gains.append(now - (before if np.isfinite(before) else now))
    table["gain"] = gains
    table.insert(0, "position", range(len(table)))
    new_nonfinite = table["nonfinite"] & ~table["ref_nonfinite"]
    table["is_first_nonfinite"] = False
    if new_nonfinite.any():
        table.loc[new_nonfinite.idxmax(), "is_first_nonfinite"] = True
    jumps = (table["rel_error"] > threshold) | new_nonfinite
    table["is_first_jump"] = False
    if jumps.any():
        table.loc[jumps.idxmax(), "is_first_jump"] = True
    return table


def rank_ops(table: pd.DataFrame) -> pd.DataFrame:
    """Ops that introduce error, most to least: new NaN/Inf first, then by gain.

    Ops that only move values (transpose, reshape, relu, pooling, casts) are ranked last: they
    carry their input's error but add none of their own.
    """
    if table.empty:
        return table
    ranked = table.assign(
        _nan=(table["nonfinite"] & ~table["ref_nonfinite"]).astype(int),
        _compute=(~table["op_type"].isin(_MOVERS)).astype(int),
        _gain=table["gain"].fillna(-np.inf),
    )
    ranked = ranked.sort_values(["_compute", "_nan", "_gain", "position"], ascending=[False, False, False, True])
    return ranked.drop(columns=["_nan", "_compute", "_gain"])


def rank_layers(table: pd.DataFrame) -> list[str]:
    """Keras layers that add error, ordered by the largest gain of their ops (see :func:`rank_ops`)."""
    layers = []
    if table.empty:
        return layers
    for layer in rank_ops(table[table["gain"] > 0])["layer"]:
        if layer and layer not in layers:
            layers.append(layer)
    return layers


@dataclass
class DriftReport:
    table: pd.DataFrame
    first_op: str  # first op past the threshold (or with new NaN/Inf); "" if none
    first_layer: str
    first_nonfinite_op: str
    first_nonfinite_layer: str
    ranked_layers: list[str]
    # The numeric cliffs of the run's device (precision-diagnose fills it; see cliffs.py).
    cliffs: pd.DataFrame | None = None

    def summary(self) -> str:
        if not self.first_op:
            return "no op exceeds the threshold and no NaN/Inf appears"
        text = f"error first jumps at op {self.first_op} (layer {self.first_layer or 'unmapped'})"
        if self.first_nonfinite_op:
            text += f"; NaN/Inf first appears at op {self.first_nonfinite_op} (layer {self.first_nonfinite_layer or 'unmapped'})"
        if self.ranked_layers:
            text += f"; layers by error introduced: {', '.join(self.ranked_layers[:5])}"
        return text


def report(table: pd.DataFrame) -> DriftReport:
    def first(column: str) -> tuple[str, str]:
        if table.empty or not table[column].any():
            return "", ""
        row = table[table[column]].iloc[0]
        return row["op_name"], row["layer"]

    op, layer = first("is_first_jump")
    nan_op, nan_layer = first("is_first_nonfinite")
    return DriftReport(table, op, layer, nan_op, nan_layer, rank_layers(table))


def diagnose(variant: Any, reference: Any, x: np.ndarray, execution: Any = None,
             mapper: LayerMapper | None = None, threshold: float = 0.05,
             reference_capture: Capture | None = None) -> DriftReport:
    """Drift of ``variant`` against ``reference`` (FP32 program of the same model) on ``x``,
    both run under ``execution`` (an :class:`~precision_sweep.emulator.Execution`)."""
    ref = reference_capture or capture(reference, x, execution)
    return report(drift_table(capture(variant, x, execution), ref, mapper, threshold))
