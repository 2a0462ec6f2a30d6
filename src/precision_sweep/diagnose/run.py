"""Diagnose a run: its program against the FP32 program of the same model at the same target.

``diagnose_in_job`` runs inside a job (automatically, when agreement is below
``diagnosis.below_agreement``); ``diagnose_run`` rebuilds everything a finished run needs from
its ``resolved_config.yaml`` and ``.mlpackage`` artifacts (``precision-diagnose RUN_ID``).
Both log ``drift.csv`` and ``drift.png`` and set the tags ``drift_first_op``,
``drift_first_layer`` (and ``drift_nonfinite_op``/``drift_nonfinite_layer`` when NaN/Inf appears).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from precision_sweep.diagnose.drift import DriftReport, diagnose
from precision_sweep.diagnose.layers import LayerMapper

log = logging.getLogger(__name__)


def fp32_twin(model, target, max_batch: int = 1024, cache_dir: Path | None = None) -> Path:
    """The FP32 package of ``model`` for ``target``: the converter's cached fp32 base package,
    which every job has already built as its size reference."""
    from precision_sweep.convert.converter import base_package
    from precision_sweep.convert.recipes import FLOAT32

    return base_package(model, target.coremltools_target, FLOAT32, max_batch, cache_dir, recipe="fp32")


def run_diagnosis(cfg, model, dataset, package: Path, work_dir: Path) -> DriftReport:
    """The drift report of ``package`` against the FP32 twin, on the diagnostic batch."""
    reference = fp32_twin(model, cfg.target, cfg.model.max_batch, Path(cfg.paths.cache))
    batch = dataset.x_test[: int(cfg.diagnosis.samples)]
    return diagnose(
        package, reference, batch, cfg.compute_units.name,
        LayerMapper.from_keras(model.keras_model), float(cfg.diagnosis.threshold),
    )


def write_report(report: DriftReport, out_dir: Path, threshold: float, title: str) -> list[Path]:
    """``drift.csv`` and ``drift.png`` under ``out_dir``."""
    from precision_sweep.metrics.plots import drift_png

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / "drift.csv"
    report.table.to_csv(csv, index=False)
    png = drift_png(out_dir / "drift.png", report.table, threshold, title=f"{title}: {headline(report)}")
    return [csv, png]


def headline(report: DriftReport) -> str:
    """One short line for the plot: where the error jumps and where NaN/Inf appears, by layer."""
    if not report.first_op:
        return "no op past the threshold, no NaN/Inf"
    table = report.table
    row = table[table["is_first_jump"]].iloc[0]
    text = f"error jumps at layer {row['layer'] or '?'} ({row['op_type']}, op #{row['position']})"
    if report.first_nonfinite_op:
        text += f"; NaN/Inf first at layer {report.first_nonfinite_layer or '?'}"
    if report.ranked_layers:
        text += f"; most error introduced by: {', '.join(report.ranked_layers[:3])}"
    return text


def drift_tags(report: DriftReport) -> dict[str, str]:
    tags = {
        "drift_first_op": report.first_op or "none",
        "drift_first_layer": report.first_layer or ("none" if not report.first_op else "unmapped"),
        "drift_summary": report.summary()[:4900],
    }
    if report.first_nonfinite_op:
        tags["drift_nonfinite_op"] = report.first_nonfinite_op
        tags["drift_nonfinite_layer"] = report.first_nonfinite_layer or "unmapped"
    return tags


def diagnose_in_job(cfg, run, model, dataset, package: Path, job_dir: Path) -> DriftReport | None:
    """Diagnose inside a job and log to its run; a diagnosis failure never fails the job."""
    try:
        out_dir = Path(job_dir) / "diagnosis"
        report = run_diagnosis(cfg, model, dataset, package, out_dir)
        for path in write_report(report, out_dir, float(cfg.diagnosis.threshold),
                                 f"{cfg.model.name} {cfg.precision.name}/{cfg.target.name}"):
            run.log_artifact(path)
        run.set_tags(drift_tags(report))
        log.info("drift diagnosis: %s", report.summary())
        return report
    except Exception as exc:  # noqa: BLE001 - the job's own result stands
        log.warning("drift diagnosis failed: %s: %s", type(exc).__name__, exc)
        run.set_tags({"drift_error": f"{type(exc).__name__}: {exc}"[:4900]})
        return None


def diagnose_run(client, run_id: str, work_dir: Path, samples: int | None = None,
                 threshold: float | None = None) -> DriftReport:
    """Diagnose a logged run from its artifacts and log the report to it.

    Raises
    ------
    precision_sweep.errors.UserInputError
        When the run has no ``resolved_config.yaml`` or no ``.mlpackage`` (skipped or failed
        before conversion).
    """
    from precision_sweep.data import load_dataset, load_model
    from precision_sweep.errors import UserInputError

    run = client.get_run(run_id)
    names = {a.path for a in client.list_artifacts(run_id)}
    packages = sorted(n for n in names if n.endswith(".mlpackage"))
    if "resolved_config.yaml" not in names or not packages:
        raise UserInputError(
            f"Run {run_id} has no converted model to diagnose (artifacts: {', '.join(sorted(names)) or 'none'}; "
            f"outcome {run.data.tags.get('precision_sweep.outcome', 'unknown')}). Diagnose an evaluated job run."
        )
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = OmegaConf.load(client.download_artifacts(run_id, "resolved_config.yaml", str(work_dir)))
    if "diagnosis" not in cfg:  # runs logged before the diagnosis group existed
        from precision_sweep.diagnose.schema import DiagnosisConfig

        cfg.diagnosis = OmegaConf.structured(DiagnosisConfig())
    if samples is not None:
        cfg.diagnosis.samples = samples
    if threshold is not None:
        cfg.diagnosis.threshold = threshold
    package = Path(client.download_artifacts(run_id, packages[0], str(work_dir)))
    dataset = load_dataset(cfg.dataset)
    model = load_model(cfg.model, dataset, Path(cfg.paths.cache))
    report = run_diagnosis(cfg, model, dataset, package, work_dir / "diagnosis")
    for path in write_report(report, work_dir / "diagnosis", float(cfg.diagnosis.threshold),
                             f"{cfg.model.name} {cfg.precision.name}/{cfg.target.name} (run {run_id[:8]})"):
        client.log_artifact(run_id, str(path))
    for key, value in drift_tags(report).items():
        client.set_tag(run_id, key, value)
    return report
