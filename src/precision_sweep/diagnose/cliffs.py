"""Numeric cliff scanner: the ops whose values would cross a cliff of the chosen device.

The FP32 program of the model runs on the calibration split with every intermediate captured
(in batches; only per-op statistics are kept). Each rule below compares one statistic with one
cliff of the numerics models, reading its limit from the module that defines it
(:mod:`precision_sweep.emulator.numerics`, :mod:`~precision_sweep.emulator.datapath`), and
applies only where the op would run on a unit that has that cliff (the variant's placement):

==================  =========================================================  ==========
cliff               flagged when (FP32 values on the calibration split)         units
==================  =========================================================  ==========
``mac_ceiling``     a MAC op's output peak >= 32768 (2**15)                      ANE
``fp16_max``        any op's output peak > 65504                                every fp16
``exp_table``       an exp input >= 11.094                                       ANE
``softplus_table``  a softplus input >= 10.408 (coremltools #2687)               ANE
``sigmoid_domain``  a sigmoid input outside the plain table's [-9.938, 8.320]    ANE
``logsumexp``       a reduce_log_sum_exp input > ln(65504 / C) (#2690)           ANE
``width_slice``     a nonzero last-axis slice of values above 4094               ANE m1, m2
``log_zero``        a log input of 0 (the ANE's table gives -45440)              ANE
``subnormals``      half or more of a MAC op's nonzero inputs are fp16 subnormal ANE m1, m2
==================  =========================================================  ==========

Each flag names the Keras layer and the margin, e.g. ``peak 41,200 at conv `block_3` output,
ceiling 32,768``. The MAC ceiling also fires on interior partial sums, which the FP32 outputs
do not show: the scanner sees outputs only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from precision_sweep.emulator import datapath
from precision_sweep.emulator.numerics import MAC_OPS
from precision_sweep.samples import feeds_of, hash_parts

FP16_MAX = 65504.0
FP16_TINY = 2.0**-14
SIGMOID_TABLE = (-9.938, 8.320)  # the plain sigmoid table's domain (ane-guide, 03-numerics)
COLUMNS = ["op", "op_type", "layer", "unit", "cliff", "value", "limit", "detail"]

_STATS_MEMO: dict = {}
STATS_FORMAT = 1  # of the JSON op statistics on disk (OpStats' fields)


@dataclass
class OpStats:
    """Statistics of one op of the FP32 program over the calibration split."""

    op_type: str
    name: str
    output: str
    peak: float = 0.0  # max |output| over finite values
    input_max: float = -math.inf  # max of input ``x`` (finite)
    input_min: float = math.inf
    input_peak: float = 0.0
    input_zeros: int = 0
    input_nonzero: int = 0
    input_subnormal: int = 0
    reduced: int = 1  # elements per output of a reduction
    slice_offset: bool = False  # a slice with a nonzero last-axis begin
    extra: dict = field(default_factory=dict)

    def add_output(self, value: np.ndarray) -> None:
        finite = value[np.isfinite(value)]
        if finite.size:
            self.peak = max(self.peak, float(np.max(np.abs(finite))))

    def add_input(self, x: np.ndarray) -> None:
        finite = x[np.isfinite(x)]
        if not finite.size:
            return
        self.input_max = max(self.input_max, float(finite.max()))
        self.input_min = min(self.input_min, float(finite.min()))
        self.input_peak = max(self.input_peak, float(np.max(np.abs(finite))))
        magnitude = np.abs(finite)
        self.input_zeros += int(np.count_nonzero(magnitude == 0))
        self.input_nonzero += int(np.count_nonzero(magnitude))
        self.input_subnormal += int(np.count_nonzero((magnitude > 0) & (magnitude < FP16_TINY)))


def _reduced_count(step, x) -> int:
    axes = step.const_kwargs.get("axes")
    if axes is None:
        return int(x[0].size) if x.ndim else 1
    return int(np.prod([x.shape[int(a) % x.ndim] for a in np.asarray(axes).reshape(-1)]))


def _slice_offset(step, x) -> bool:
    inputs = {**step.const_kwargs, "x": x}
    if "begin" not in inputs or x.ndim == 0:
        return False
    return datapath._last_axis_begin(inputs, step.op_type, x.ndim, x.shape[-1]) != 0


def op_stats(fp32_program, x: np.ndarray, batch: int = 16, plan_cache=None, stats_cache=None) -> dict[str, OpStats]:
    """Per-op statistics of ``fp32_program`` (package path) on ``x``, keyed by op name.
    Memoized in the process per (program, data), and with ``stats_cache`` (a folder) on disk
    per (the program's bytes, data, batch) as plain JSON: the jobs of a sweep, and later sweeps,
    run the FP32 program over the samples once. Its compiled plan kept in ``plan_cache``."""
    from precision_sweep.emulator import Execution
    from precision_sweep.hashing import hash_arrays

    key = (str(fp32_program), hash_arrays(hash_parts(x)))
    if key in _STATS_MEMO:
        return _STATS_MEMO[key]
    stored = None
    if stats_cache is not None and isinstance(fp32_program, (str, os.PathLike)):  # an MLModel object: memo only
        from precision_sweep.hashing import hash_path

        stored = Path(stats_cache) / f"opstats-{hash_path(Path(fp32_program), [key[1], batch, STATS_FORMAT])}.json"
        if stored.exists():
            _STATS_MEMO[key] = {name: OpStats(**entry) for name, entry in json.loads(stored.read_text()).items()}
            return _STATS_MEMO[key]
    emulator = Execution("cpu_only", plan_cache=plan_cache).emulator(fp32_program)
    name = emulator.input_names[0]
    batch = emulator.fixed_batch or batch
    stats: dict[str, OpStats] = {}
    steps = [s for s in emulator.plan.steps if s.outputs]
    for start in range(0, len(x), batch):
        env = feeds_of(x[start : start + batch], name)
        with np.errstate(all="ignore"):
            _, values = emulator.predict(env, capture=True)
        for step in steps:
            output = step.outputs[0][0]
            if output not in values:
                continue
            result = np.asarray(values[output][1])
            if result.dtype.kind not in "fiub":
                continue  # a classifier's labels (text): no numerics to scan
            entry = stats.setdefault(step.name, OpStats(step.op_type, step.name, output))
            entry.add_output(result.astype(np.float32, copy=False))
            source = step.var_kwargs.get("x")
            if isinstance(source, str):
                value = values.get(source, (None, env.get(source)))[1]
                if value is not None:
                    value = np.asarray(value, dtype=np.float32)
                    entry.add_input(value)
                    if step.op_type == "reduce_log_sum_exp":
                        entry.reduced = _reduced_count(step, value)
                    if step.op_type in ("slice_by_index", "slice_by_size"):
                        entry.slice_offset = _slice_offset(step, value)
    _STATS_MEMO[key] = stats
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        partial = stored.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps({name: dataclasses.asdict(entry) for name, entry in stats.items()}))
        partial.replace(stored)
    return stats


@dataclass(frozen=True)
class Cliff:
    op: str
    op_type: str
    layer: str
    unit: str
    cliff: str
    value: float
    limit: float
    detail: str


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


def _where(s: OpStats, layer: str) -> str:
    return f"{s.op_type} `{layer or s.name}`"


def scan(stats: dict[str, OpStats], unit_of, device: str, mapper=None) -> pd.DataFrame:
    """Apply every rule (module docstring) to ``stats``.

    Parameters
    ----------
    stats
        :func:`op_stats` of the FP32 program.
    unit_of
        ``op name -> (unit, ane model or None)``: where the variant runs each op (names as in
        the FP32 program; see :func:`placement_lookup`).
    device
        The Neural Engine generation (m1, m2, m5).
    mapper
        A :class:`~precision_sweep.data.layers.LayerMapper` for layer names.
    """
    from precision_sweep.emulator.devices import get_generation
    from precision_sweep.emulator.numerics import ane_model

    ane = ane_model(get_generation(device))
    ceiling = float(ane.accumulation.ceiling)
    flushes = ane.accumulation.flush_subnormals
    gain = ane.width_slice_gain
    rows: list[Cliff] = []
    for s in stats.values():
        unit = unit_of(s.name)
        layer = mapper.layer_of(s.output, s.name) if mapper is not None else ""
        where = _where(s, layer)

        def flag(cliff, value, limit, detail):
            rows.append(Cliff(s.name, s.op_type, layer, unit, cliff, float(value), float(limit), detail))

        if s.peak > FP16_MAX:
            flag("fp16_max", s.peak, FP16_MAX, f"peak {_fmt(s.peak)} at {where} output, fp16 max {_fmt(FP16_MAX)}")
        if unit != "ane":
            continue
        if s.op_type in MAC_OPS and ceiling <= s.peak <= FP16_MAX:
            flag("mac_ceiling", s.peak, ceiling, f"peak {_fmt(s.peak)} at {where} output, ceiling {_fmt(ceiling)}")
        if s.op_type == "exp" and s.input_max >= datapath.EXP_OVERFLOW:
            flag("exp_table", s.input_max, datapath.EXP_OVERFLOW,
                 f"input up to {_fmt(s.input_max)} at {where}: the exp table is inf from {datapath.EXP_OVERFLOW:.3f}")
        if s.op_type == "softplus" and s.input_max >= datapath.SOFTPLUS_CLIFF:
            flag("softplus_table", s.input_max, datapath.SOFTPLUS_CLIFF,
                 f"input up to {_fmt(s.input_max)} at {where}: softplus drops to 0 from {datapath.SOFTPLUS_CLIFF:.3f}")
        if s.op_type == "sigmoid" and (s.input_max > SIGMOID_TABLE[1] or s.input_min < SIGMOID_TABLE[0]):
            bound = s.input_max if s.input_max > SIGMOID_TABLE[1] else s.input_min
            flag("sigmoid_domain", bound, SIGMOID_TABLE[1] if bound > 0 else SIGMOID_TABLE[0],
                 f"input {_fmt(bound)} at {where}, outside the plain sigmoid table's [{SIGMOID_TABLE[0]}, "
                 f"{SIGMOID_TABLE[1]}] (a user sigmoid may use a wider table)")
        if s.op_type == "reduce_log_sum_exp":
            limit = math.log(FP16_MAX / max(s.reduced, 1))
            if s.input_max > limit:
                flag("logsumexp", s.input_max, limit,
                     f"input up to {_fmt(s.input_max)} at {where} over {s.reduced} values: the sum overflows past "
                     f"ln(65504/{s.reduced}) = {limit:.3f} and the output collapses to 0")
        if gain and s.slice_offset and s.input_peak > FP16_MAX / gain:
            flag("width_slice", s.input_peak, FP16_MAX / gain,
                 f"values up to {_fmt(s.input_peak)} through a width slice with a nonzero begin at {where}: "
                 f"x{gain:g} gain overflows above {FP16_MAX / gain:g} on {device}")
        if s.op_type == "log" and s.input_zeros:
            flag("log_zero", 0.0, 0.0, f"{s.input_zeros} zero input(s) at {where}: log(0) is -45440 on the engine")
        if flushes and s.op_type in MAC_OPS and s.input_nonzero and s.input_subnormal * 2 >= s.input_nonzero:
            share = s.input_subnormal / s.input_nonzero
            flag("subnormals", share, 0.5,
                 f"{share:.0%} of the nonzero inputs of {where} are fp16 subnormal: flushed to 0 in the MAC on {device}")
    return pd.DataFrame([c.__dict__ for c in rows], columns=COLUMNS)


def placement_lookup(emulator, models=None):
    """``op name -> unit`` from a variant's emulator, matching names across precisions (the
    fp16 program's ``_cast_fp16`` suffixes removed); ops it does not know take the unit its
    compute units prefer."""
    from precision_sweep.diagnose.drift import normalize

    units = {normalize(s.name): s.placement.unit for s in emulator.plan.all_steps() if s.placement is not None}
    preferred = emulator.models.preferred.unit

    def unit_of(name: str) -> str:
        return units.get(normalize(name), preferred)

    return unit_of


def cliff_report(fp32_program, x: np.ndarray, variant_emulator, device: str, mapper=None, stats_cache=None) -> pd.DataFrame:
    """The cliffs of a variant (run by ``variant_emulator``) for ``device``, from the FP32
    program's values on ``x``."""
    return scan(op_stats(fp32_program, x, plan_cache=getattr(variant_emulator, "plan_cache", None), stats_cache=stats_cache),
                placement_lookup(variant_emulator),
                device, mapper)


def summary(table: pd.DataFrame, limit: int = 3) -> str:
    """One line: how many cliffs, and the first few details."""
    if table.empty:
        return "no numeric cliffs"
    shown = "; ".join(table["detail"].head(limit))
    more = f" (+{len(table) - limit} more)" if len(table) > limit else ""
    return f"{len(table)} cliff(s): {shown}{more}"
