"""The greedy repair loop: widen the set of higher-precision ops until the budget holds.

Each round runs the current program on the calibration split (budget check) and on a
diagnostic slice of it with every intermediate captured (drift against the FP32 program of the
same model). If the budget fails, the next ops to keep are chosen from the drift table:

* when NaN/Inf appears, the first op at or after the first NaN/Inf (casts excluded: they are
  inserted by coremltools, not chosen), so an overflowing chain is kept until values are back
  in fp16 range;
* otherwise the ops that introduce the most error (largest gain, see
  :func:`precision_sweep.diagnose.drift.rank_ops`).

For fp16 recipes the ops the numeric cliff scanner flags for the device (an output past the
ANE's MAC ceiling, an exp past its table, ...; :mod:`precision_sweep.diagnose.cliffs`) are the
first candidates: the first widening keeps all of them.

fp16 recipes keep ops in fp32 compute; int8 recipes keep the weights of weight-bearing ops in
fp16. Ops are named as coremltools' op selector sees them: the saved program's op name without
the ``_cast_fp16`` suffix (fp16), or the op name in the fp16 program (int8).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from precision_sweep.diagnose.drift import Capture, capture, drift_table
from precision_sweep.data.layers import LayerMapper
from precision_sweep.samples import feeds_of

log = logging.getLogger(__name__)

WEIGHT_OPS = {"conv", "conv_transpose", "linear", "matmul", "einsum"}


@dataclass
class Round:
    kept: list[str]
    agreement: float
    accuracy_drop_pp: float
    size_bytes: int
    ok: bool


@dataclass
class RepairResult:
    path: Path
    kept: list[str]
    kept_layers: list[str]
    n_candidates: int
    budget_met: bool
    rounds: list[Round] = field(default_factory=list)
    base_size_bytes: int = 0
    size_bytes: int = 0

    @property
    def kept_fraction(self) -> float:
        return len(self.kept) / self.n_candidates if self.n_candidates else 0.0


def fp16_with_fp32_ops(model, target_name: str, keep: set[str], max_batch: int = 1024,
                       cache_dir: Path | None = None) -> Path:
    """The package with fp16 compute except the ops named in ``keep`` (sanitized names), built
    by the converter's cached base level: each selection is converted once, across jobs."""
    from precision_sweep.convert.converter import base_package
    from precision_sweep.convert.recipes import ComputeSpec

    compute = ComputeSpec("float16", (), tuple(sorted(keep)))
    return base_package(model, target_name, compute, max_batch, cache_dir, recipe="fp16 repair")


def _predict(emulator, x: np.ndarray, batch: int = 256) -> np.ndarray:
    name = emulator.input_names[0]
    with np.errstate(all="ignore"):
        parts = [emulator.predict(feeds_of(x[i:i + batch], name))[emulator.output_names[0]] for i in range(0, len(x), batch)]
    return np.concatenate(parts).astype(np.float32)


def _choose(table, keep: set[str], widen: int, name_column: str, op_types: set[str] | None) -> list[str]:
    """The next ops to keep at higher precision (see the module docstring)."""
    from precision_sweep.diagnose.drift import rank_ops

    if table.empty:
        return []
    pool = table[(table["op_type"] != "cast") & ~table[name_column].isin(keep)]
    if op_types is not None:
        pool = pool[pool["op_type"].isin(op_types)]
    new_nonfinite = table["nonfinite"] & ~table["ref_nonfinite"]
    if new_nonfinite.any():
        first = int(table.loc[new_nonfinite, "position"].min())
        after = pool[pool["position"] >= first].sort_values("position")
        if not after.empty:
            return list(dict.fromkeys(after[name_column]))[:widen]
    ranked = rank_ops(pool)
    return list(dict.fromkeys(ranked[name_column]))[:widen]


def repair(model, target_name: str, kind: str, start_path: Path, reference: Capture | None,
           reference_program, x_cal: np.ndarray, y_cal: np.ndarray, settings, out_path: Path,
           execution=None, precision=None, max_batch: int = 1024,
           cache_dir: Path | None = None, cliff_ops: list[str] | None = None) -> RepairResult:
    """Greedy mixed-precision repair of the program at ``start_path``.

    Parameters
    ----------
    model
        The :class:`~precision_sweep.data.models.LoadedModel`.
    target_name
        coremltools target name, e.g. ``iOS16``.
    kind
        ``fp16`` (keep ops in fp32 compute) or ``int8`` (keep ops' weights in fp16).
    start_path
        The low-precision package to start from (nothing kept).
    reference_program
        The FP32 program of the same model and target (package path), the drift reference.
    x_cal, y_cal
        Calibration split: the budget is checked here, never on the test split.
    settings
        An :class:`~precision_sweep.convert.schema.AutoRepairConfig`.
    out_path
        Where the repaired package is saved (may equal ``start_path``).
    execution
        An :class:`~precision_sweep.emulator.Execution`: the compute units and device the
        budget is checked under (default: all, m1).
    precision
        The recipe (int8 only): each round is its compression with the kept ops left in fp16.
    cache_dir
        ``paths.cache``: every round's program is one of the converter's cached packages
        (mixed-precision base packages for fp16, compressed packages for int8).
    cliff_ops
        Op names the cliff scanner flagged (fp16 only): kept all together in the first round.
    """
    from precision_sweep.convert.converter import compressed_package, package_size
    from precision_sweep.data.models import predict_probabilities
    from precision_sweep.emulator import Execution

    x_diag = x_cal[: int(settings.diagnostic_samples)]
    execution = execution or Execution()
    reference = reference or capture(reference_program, x_diag, execution)
    tf_out = predict_probabilities(model, x_cal)
    tf_top1 = tf_out.argmax(-1)
    tf_accuracy = float(np.mean(tf_top1 == y_cal))
    mapper = LayerMapper.of_model(model)
    name_column = "key" if kind == "fp16" else "op_name"
    op_types = None if kind == "fp16" else WEIGHT_OPS
    keep: list[str] = []
    current = start_path
    base_size = package_size(start_path)
    rounds: list[Round] = []
    n_candidates = 0
    layer_of: dict[str, str] = {}
    for number in range(int(settings.max_rounds) + 1):
        emulator = execution.emulator(current)
        top1 = _predict(emulator, x_cal).argmax(-1)
        agreement = float(np.mean(top1 == tf_top1))
        drop_pp = 100 * (tf_accuracy - float(np.mean(top1 == y_cal)))
        ok = agreement >= settings.min_agreement and drop_pp <= settings.max_drop + 1e-9
        rounds.append(Round(list(keep), agreement, drop_pp, package_size(current), ok))
        log.info("repair round %d: kept %d op(s), agreement %.4f, drop %.2f pp", number, len(keep), agreement, drop_pp)
        if ok:
            break
        table = drift_table(capture(emulator, x_diag), reference, mapper)
        eligible = table[table["op_type"] != "cast"]
        if op_types is not None:
            eligible = eligible[eligible["op_type"].isin(op_types)]
        n_candidates = max(n_candidates, eligible[name_column].nunique() if not eligible.empty else 0)
        layer_of.update(dict(zip(table[name_column], table["layer"])))
        from precision_sweep.diagnose.drift import normalize

        flagged = [normalize(op) for op in (cliff_ops or []) if kind == "fp16"]
        flagged = [op for op in dict.fromkeys(flagged) if op not in keep and op in set(table[name_column])]
        chosen = flagged or _choose(table, set(keep), int(settings.widen), name_column, op_types)
        if not chosen or number == int(settings.max_rounds):
            break
        if n_candidates and (len(keep) + len(chosen)) / n_candidates > settings.max_kept_fraction:
            log.warning("repair stops: keeping %s would exceed max_kept_fraction", chosen)
            break
        keep.extend(chosen)
        if kind == "fp16":
            current = fp16_with_fp32_ops(model, target_name, set(keep), max_batch, cache_dir)
        else:  # the recipe's compression with the kept ops' weights left in fp16
            current = compressed_package(model, precision, target_name, max_batch, cache_dir, keep_float=tuple(sorted(keep)))
    if n_candidates == 0:
        program = execution.emulator(start_path)
        names = capture(program, x_diag[:1])
        n_candidates = len([1 for n, (t, _) in names.values.items() if t != "cast" and (op_types is None or t in op_types)])
    out_path = Path(out_path)
    if Path(current) != out_path:
        import shutil

        if out_path.exists():
            shutil.rmtree(out_path)
        shutil.copytree(current, out_path)
    return RepairResult(
        path=out_path,
        kept=keep,
        kept_layers=list(dict.fromkeys(layer_of.get(k, "") for k in keep if layer_of.get(k))),
        n_candidates=n_candidates,
        budget_met=rounds[-1].ok,
        rounds=rounds,
        base_size_bytes=base_size,
        size_bytes=package_size(out_path),
    )


def repair_in_job(cfg, run, model, dataset, converted):
    """Repair ``converted`` (the job's low-precision package) in place and log what was kept.

    Returns the job's :class:`~precision_sweep.convert.ConvertedModel` for the repaired package.
    Logged: metrics ``repair_kept_ops``, ``repair_kept_fraction``, ``repair_rounds``,
    ``repair_size_cost_bytes`` (repaired minus unrepaired package size),
    ``repair_calib_agreement``; tags ``repair_budget_met``, ``repair_kept_layers``; artifact
    ``repair.json`` (kept op names and every round's budget check).
    """
    import coremltools as ct

    from precision_sweep.convert.calibration import calibration_data
    from precision_sweep.convert.converter import fp32_package
    from precision_sweep.runtime import execution_of

    settings = cfg.precision.auto_repair
    start = time.perf_counter()
    kind = "int8" if cfg.precision.get("weight_quantization") else "fp16"
    reference = fp32_package(model, cfg.target.coremltools_target, cfg.model.max_batch, Path(cfg.paths.cache))
    x_cal, y_cal = calibration_data(dataset, int(settings.calib_samples))
    cliff_ops = []
    if kind == "fp16" and int(cfg.diagnosis.get("cliff_samples", 64)) > 0:
        from precision_sweep.diagnose.run import cliffs_of

        flagged = cliffs_of(cfg, model, dataset, execution_of(cfg).emulator(converted.path))
        cliff_ops = list(flagged["op"])
    result = repair(
        model, cfg.target.coremltools_target, kind, Path(converted.path), None, reference, x_cal, y_cal,
        settings, Path(converted.path), execution_of(cfg),
        precision=cfg.precision, max_batch=cfg.model.max_batch,
        cache_dir=Path(cfg.paths.cache), cliff_ops=cliff_ops,
    )
    seconds = time.perf_counter() - start
    last = result.rounds[-1]
    run.log_metrics({
        "repair_kept_ops": len(result.kept),
        "repair_kept_fraction": result.kept_fraction,
        "repair_rounds": len(result.rounds) - 1,
        "repair_size_cost_bytes": result.size_bytes - result.base_size_bytes,
        "repair_calib_agreement": last.agreement,
        "repair_seconds": seconds,
    })
    run.set_tags({
        "repair_budget_met": str(result.budget_met).lower(),
        "repair_kept_layers": ",".join(result.kept_layers)[:4900] or "none",
    })
    record = {
        "kind": kind,
        "cliff_ops": cliff_ops,
        "kept_ops": result.kept,
        "kept_layers": result.kept_layers,
        "candidate_ops": result.n_candidates,
        "kept_fraction": result.kept_fraction,
        "budget": {"max_drop_pp": settings.max_drop, "min_agreement": settings.min_agreement},
        "budget_met": result.budget_met,
        "size_bytes": {"unrepaired": result.base_size_bytes, "repaired": result.size_bytes},
        "rounds": [dataclasses.asdict(r) for r in result.rounds],
    }
    run.log_text(json.dumps(record, indent=2), "repair.json")
    if not result.budget_met:
        log.warning("auto repair did not meet the budget on the calibration split (kept %d ops)", len(result.kept))
    spec_version = ct.utils.load_spec(str(result.path)).specificationVersion
    return dataclasses.replace(
        converted,
        spec_version=spec_version,
        convert_seconds=converted.convert_seconds + seconds,
        size_bytes=result.size_bytes,
        **_weights_field(converted, result.path),
    )


def _weights_field(converted, path: Path) -> dict:
    # The converter's ConvertedModel may carry weights_bytes (newer versions): keep it true.
    if not hasattr(converted, "weights_bytes"):
        return {}
    try:
        from precision_sweep.convert.converter import weights_size
    except ImportError:
        return {}
    return {"weights_bytes": weights_size(path)}
