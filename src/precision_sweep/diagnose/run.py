"""Diagnose a run: its program against the FP32 program of the same model at the same target.

``diagnose_in_job`` runs inside a job (automatically, when agreement is below
``diagnosis.below_agreement``); ``diagnose_run`` rebuilds everything a finished run needs from
its ``resolved_config.yaml`` and ``.mlpackage`` artifacts (``precision-diagnose RUN_ID``).
Both log ``drift.csv`` and ``drift.png`` and set the tags ``drift_first_op``,
``drift_first_layer`` (and ``drift_nonfinite_op``/``drift_nonfinite_layer`` when NaN/Inf appears).

``device_report`` runs in every job: the placement of each op on the compute units
(``placement.csv``, ``ane_op_fraction``, ``ane_mac_fraction``) and the numeric cliffs the
variant would hit on the chosen device (``cliffs.csv``, ``cliff_count``, :mod:`.cliffs`);
``diagnose_run`` reports the cliffs too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from precision_sweep.diagnose.drift import DriftReport, diagnose
from precision_sweep.data.layers import LayerMapper
from precision_sweep.runtime import batch_size_for, execution_of

log = logging.getLogger(__name__)


def fp32_twin(model, target, max_batch: int = 1024, cache_dir: Path | None = None, interface=None) -> Path:
    """The FP32 package of ``model`` for ``target`` (with the job's app ``interface``): the
    converter's cached FP32 program, which every job has already built as its size reference."""
    from precision_sweep.convert.app_interface import PLAIN
    from precision_sweep.convert.converter import fp32_package

    return fp32_package(model, target.coremltools_target, max_batch, cache_dir, interface or PLAIN)


def _twin_of_job(cfg, model, dataset) -> Path:
    from precision_sweep.convert.app_interface import interface_for

    return fp32_twin(model, cfg.target, cfg.model.max_batch, Path(cfg.paths.cache),
                     interface_for(cfg, model, dataset, "float32"))


def _with_feed(cfg, model, dataset):
    """``dataset`` feeding the job's program input (pixels for an image input)."""
    from precision_sweep.convert.app_interface import image_feed, interface_for

    dataset.feed = image_feed(interface_for(cfg, model, dataset))
    return dataset


def _cliff_inputs(cfg, dataset) -> np.ndarray:
    from precision_sweep.convert.calibration import calibration_data

    x, _ = calibration_data(dataset, int(cfg.diagnosis.get("cliff_samples", 64)))
    return x


def cliffs_of(cfg, model, dataset, emulator):
    """The cliff table of the variant ``emulator`` runs (see :mod:`.cliffs`)."""
    from precision_sweep.diagnose.cliffs import cliff_report

    if cfg.model.get("coreml_file"):
        import pandas as pd

        return pd.DataFrame()  # a user's file has no FP32 twin of the same ops to scan against
    reference = _twin_of_job(cfg, model, dataset)
    return cliff_report(reference, _cliff_inputs(cfg, dataset), emulator, emulator.device, LayerMapper.of_model(model),
                        stats_cache=Path(cfg.paths.cache) / "cliffs")


def device_report(cfg, model, dataset, package: Path, emulator, out_dir: Path) -> tuple[dict, list[Path], str]:
    """Placement and numeric cliffs of a job's variant: ``(metrics, files, one-line summary)``.

    ``emulator`` is the runtime's Emulator, or None when Core ML ran the program (the
    estimate is then built here, beside Core ML's own plan)."""
    from precision_sweep.diagnose.cliffs import summary
    from precision_sweep.runtime import execution_of
    from precision_sweep.runtime.placement_report import record_placement

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    emulator = emulator or execution_of(cfg).emulator(package)
    metrics, files = record_placement(emulator, package, emulator.compute_units, LayerMapper.of_model(model), out_dir)
    text = "cliff scanner off"
    if int(cfg.diagnosis.get("cliff_samples", 64)) > 0:
        table = cliffs_of(cfg, model, dataset, emulator)
        path = out_dir / "cliffs.csv"
        table.to_csv(path, index=False)
        files.append(path)
        metrics["cliff_count"] = float(len(table))
        text = summary(table)
    return metrics, files, text


def run_diagnosis(cfg, model, dataset, package: Path, work_dir: Path) -> DriftReport:
    """The drift report of ``package`` against the FP32 twin, on the diagnostic batch."""
    reference = _twin_of_job(cfg, model, dataset)
    batch = dataset.program_inputs("test")[: int(cfg.diagnosis.samples)]
    return diagnose(
        package, reference, batch, execution_of(cfg),
        LayerMapper.of_model(model), float(cfg.diagnosis.threshold),
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


def _typed_config(path: str, run_id: str, schema: type):
    """The run's resolved config on ``schema``, the app's config schema (fields added since the
    run was logged take their defaults)."""
    from omegaconf.errors import OmegaConfBaseException

    from precision_sweep.errors import UserInputError

    try:
        return OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(path))
    except OmegaConfBaseException as exc:
        raise UserInputError(
            f"Run {run_id} was logged with a config this version cannot read ({exc}). Diagnose a run "
            "of this version: rerun its job (precision-sweep with the same overrides)."
        ) from exc


def diagnose_run(client, run_id: str, work_dir: Path, schema: type, samples: int | None = None,
                 threshold: float | None = None) -> DriftReport:
    """Diagnose a logged run from its artifacts and log the report to it; ``schema`` is the
    app's config schema (:class:`precision_sweep.config.Config`), which types the logged config.

    Raises
    ------
    precision_sweep.errors.UserInputError
        When the run has no ``resolved_config.yaml`` or no ``.mlpackage`` (skipped or failed
        before conversion).
    """
    from precision_sweep.data import load_inputs
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
    cfg = _typed_config(client.download_artifacts(run_id, "resolved_config.yaml", str(work_dir)), run_id, schema)
    if samples is not None:
        cfg.diagnosis.samples = samples
    if threshold is not None:
        cfg.diagnosis.threshold = threshold
    package = Path(client.download_artifacts(run_id, packages[0], str(work_dir)))
    log.info("diagnosing run %s: %s at %s against the FP32 program of %s (cache %s)", run_id,
             cfg.precision.name, cfg.target.name, cfg.model.name, cfg.paths.cache)
    if cfg.model.get("coreml_file"):
        raise UserInputError(
            f"Run {run_id} evaluated a Core ML file of your own ({cfg.model.coreml_file}); its ops have no FP32 "
            "twin converted by precision-sweep to compare with. Its preprocessing doctor's result is above; to "
            "trace drift op by op, sweep the Keras model itself (precision-sweep model=... precision=...)."
        )
    # as the job loaded them: the data preprocessed for the model's inputs, labels of the run's task
    dataset, model = load_inputs(cfg.model, cfg.dataset, Path(cfg.paths.cache), labels=cfg.task.labels)
    _with_feed(cfg, model, dataset)
    report = run_diagnosis(cfg, model, dataset, package, work_dir / "diagnosis")
    for path in write_report(report, work_dir / "diagnosis", float(cfg.diagnosis.threshold),
                             f"{cfg.model.name} {cfg.precision.name}/{cfg.target.name} (run {run_id[:8]})"):
        client.log_artifact(run_id, str(path))
    from precision_sweep.runtime import execution_of

    report.cliffs = cliffs_of(cfg, model, dataset, execution_of(cfg).emulator(package))
    cliffs = work_dir / "diagnosis" / "cliffs.csv"
    report.cliffs.to_csv(cliffs, index=False)
    client.log_artifact(run_id, str(cliffs))
    for key, value in drift_tags(report).items():
        client.set_tag(run_id, key, value)
    return report


def preprocessing_doctor_in_job(cfg, run, model, dataset, runtime, baseline, package: Path, job_dir: Path):
    """Run the preprocessing doctor (:mod:`.preprocessing`) on a job's image-input program and
    report it in the terminal, the run's description, the ``preprocessing_doctor`` tag and
    ``preprocessing_doctor.csv``; a doctor failure never fails the job."""
    from precision_sweep.data.preprocessing import Preprocessing
    from precision_sweep.diagnose.preprocessing import diagnose_preprocessing, file_preprocessing, keras_preprocessing_layers

    try:
        emulator = runtime.emulator or execution_of(cfg).emulator(package)
        layout = dataset.feed.color_layout
        file = file_preprocessing(emulator, layout)
        expected = Preprocessing.from_dataset(cfg.dataset, file.channels)
        scores = emulator.classifier()
        scores_name = scores[1] if scores else emulator.output_names[0]

        def predict(x):
            return np.asarray(emulator.predict({emulator.input_names[0]: x})[scores_name], dtype=np.float32)

        report = diagnose_preprocessing(
            predict, dataset.pixels_test, baseline, dataset.y_test, file, expected, keras_preprocessing_layers(model),
            float(cfg.diagnosis.below_agreement), batch=batch_size_for(runtime, int(cfg.runtime.batch_size)),
            float16_gray=layout == "GRAYSCALE_FLOAT16",
        )
        out_dir = Path(job_dir) / "diagnosis"
        out_dir.mkdir(parents=True, exist_ok=True)
        table = out_dir / "preprocessing_doctor.csv"
        report.table().to_csv(table, index=False)
        run.log_artifact(table)
        text = report.text()
        run.set_tags({"preprocessing_doctor": text[:4900], "preprocessing_cause": "; ".join(report.causes)[:4900] or "none",
                      "mlflow.note.content": text})
        log.warning("%s", text)
        return report
    except Exception as exc:  # noqa: BLE001 - the job's own result stands
        log.warning("preprocessing doctor failed: %s: %s", type(exc).__name__, exc)
        run.set_tags({"preprocessing_doctor_error": f"{type(exc).__name__}: {exc}"[:4900]})
        return None
