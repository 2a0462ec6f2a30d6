"""One sweep job: load -> baseline -> convert -> execute -> metrics -> track.

Every job is one MLflow child run that always ends. In a multirun a failing job is recorded
(FAILED, ``error.txt``) and the sweep goes on; in a single run the error is raised to the
entry point (a user error becomes one paragraph and exit 2 there).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from precision_sweep.errors import SkipJob
from precision_sweep.config_checks import check_config
from precision_sweep.limits import job_limits, peak_resident_bytes, stop_in_chain, stops_raise
from precision_sweep.tracking import store
from precision_sweep.tracking.job_run import JobRun

log = logging.getLogger(__name__)


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _job_dir(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(tempfile.mkdtemp(prefix="precision-sweep-job-"))


def open_job_run(cfg: DictConfig) -> JobRun:
    """The job's child run: under the sweep's parent if launched by a multirun."""
    context = store.sweep_context()
    if context:
        uri, experiment_id, parent_run_id = context
    else:
        uri = store.absolute_uri(cfg.tracking.uri)
        experiment_id = store.prepare_experiment(uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
        parent_run_id = None
    run_name = f"{cfg.precision.name}-{cfg.target.name}-{cfg.compute_units.name.value}"
    if cfg.model.get("coreml_file"):
        run_name = f"{Path(str(cfg.model.coreml_file)).stem}-{cfg.compute_units.name.value}"
    return JobRun(store.client_for(uri), experiment_id, parent_run_id, run_name)


class Reused(Exception):
    """A FINISHED run with this job's fingerprint exists and ``resume`` is on: link it."""

    def __init__(self, source):
        super().__init__(f"reusing run {source.info.run_id}")
        self.source = source


def _import_libraries() -> None:
    """Import the heavy libraries before a limit is armed: a limit's exception raised during
    an import would leave a half-imported module that breaks every later job of the process
    (and their memory is not the job's to count)."""
    import coremltools  # noqa: F401
    import tensorflow  # noqa: F401

    from precision_sweep.emulator import ops  # noqa: F401  (the kernels and their compiled twins)


def run_job(cfg: DictConfig) -> dict | None:
    """Run one job; return its metrics (None when skipped or failed in a multirun)."""
    from precision_sweep.metrics.tasks.judge import check_task

    multirun = in_multirun()
    if not multirun:
        check_config(cfg)  # a user error is raised before anything is stored
        check_task(cfg)
        if cfg.precision.get("search"):
            from precision_sweep.search.run import check_search, model_for_checks

            check_search(cfg)  # the settings first: they need no model
            check_search(cfg, model_for_checks(cfg))
    run = open_job_run(cfg)
    stops = None
    try:
        with stops_raise() as stops:  # from here on, Ctrl-C or a scheduler's SIGTERM closes the run KILLED
            if multirun:
                check_config(cfg)  # a grid's own values: this job's run FAILED says why
                check_task(cfg)
            if cfg.limits.timeout_minutes or cfg.limits.max_memory_gb:
                _import_libraries()
            with job_limits(cfg.limits.timeout_minutes, cfg.limits.max_memory_gb):
                metrics = evaluate(cfg, run)
    except SkipJob as exc:
        log.warning("skipped: %s", exc)
        run.skip(str(exc))
        return None
    except Reused as reused:
        log.info("resume: %s/%s already measured by run %s", cfg.precision.name, cfg.target.name, reused.source.info.run_id)
        run.reuse(reused.source)
        return dict(reused.source.data.metrics)
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded, then handled
        # A stop, though a library may have turned it into another error, or swallowed it and
        # failed on an error of its own before the stop was raised again.
        stop = stop_in_chain(exc) or (stops.stop() if stops is not None else None)
        run.fail(exc, stop=stop)
        if stop is exc:
            raise
        if stop is not None:
            raise stop from exc
        log.error("job failed: %s: %s", type(exc).__name__, exc)
        if multirun:
            return None
        raise
    run.finish()
    return metrics


def _resume_or_claim(cfg: DictConfig, run: JobRun, model_hash: str, dataset_hash: str) -> None:
    """Tag the job's fingerprint, close stale twins, and reuse a finished twin if resuming."""
    from precision_sweep.tracking import liveness
    from precision_sweep.tracking.fingerprint import job_fingerprint
    from precision_sweep.tracking.resume import FINGERPRINT_TAG, find_finished

    fingerprint = job_fingerprint(cfg, model_hash, dataset_hash)
    run.set_tags({FINGERPRINT_TAG: fingerprint})
    experiment_id = run.run.info.experiment_id
    liveness.reap(run.client, experiment_id, f"tags.`{FINGERPRINT_TAG}` = '{fingerprint}'")
    if cfg.resume:
        source = find_finished(run.client, experiment_id, fingerprint, exclude_run_id=run.run_id)
        if source is not None:
            raise Reused(source)


def evaluate(cfg: DictConfig, run: JobRun) -> dict:
    """The job's work, logged into ``run``, one stage per step of the data flow. Raises
    SkipJob for combinations that cannot deploy."""
    log.info("job %s/%s started", _label(cfg), cfg.compute_units.name.value)
    job_dir = _record_config(cfg, run)
    model, dataset, baseline = _load_and_baseline(cfg, run)
    search = None
    if cfg.model.coreml_file:
        from precision_sweep.convert.user_file import use_file

        converted = use_file(cfg, run, model, dataset, job_dir)
    elif cfg.precision.get("search"):
        converted, dataset, baseline, search = _search(cfg, run, model, dataset, baseline, job_dir)
    else:
        converted = _convert(cfg, run, model, dataset, job_dir)
    runtime, outputs, labels, others, batches, eval_seconds = _execute(cfg, run, model, converted, dataset)
    every = _every_output(cfg, model, dataset, runtime, outputs, others) if model.output_names else None
    metrics, files = _measure(cfg, run, model, dataset, converted, runtime, outputs, labels, baseline, job_dir, every)
    metrics["eval_seconds"] = eval_seconds
    # the job process's peak so far (a worker that ran earlier jobs counts their peaks too)
    metrics["peak_rss_mb"] = peak_resident_bytes() / 2**20
    if search is not None:  # the budget, judged on the held-out part the job just measured
        from precision_sweep.search.run import judge_held_out

        metrics.update(judge_held_out(cfg, run, metrics, search))
    _record(cfg, run, metrics, files, outputs, baseline, dataset, converted, job_dir, others)
    batches.remove()  # the predictions are recorded: nothing left to resume
    disagrees = metrics.get("agreement", 1.0) < cfg.diagnosis.below_agreement  # tasks without classes: no agreement
    # a task's metric lost beyond its CI (diagnosis on): traced to the ops as a disagreement is
    disagrees = disagrees or (cfg.diagnosis.below_agreement > 0 and metrics.get("metric_gain_ci_high", 0.0) < 0)
    doctor = None
    if dataset.feed is not None and (disagrees or metrics.get("accuracy_delta_ci_high", 0.0) < 0):
        # an image input that disagrees, or loses accuracy beyond its CI: test the preprocessing first
        from precision_sweep.diagnose.run import preprocessing_doctor_in_job

        doctor = preprocessing_doctor_in_job(cfg, run, model, dataset, runtime, baseline, converted.path, job_dir)
    if disagrees:
        if not cfg.model.coreml_file and not (doctor and doctor.found):
            from precision_sweep.diagnose.run import diagnose_in_job

            diagnose_in_job(cfg, run, model, dataset, converted.path, job_dir)
    if not np.isfinite(outputs).all():
        bad = int((~np.isfinite(outputs)).any(axis=-1).sum())
        raise FloatingPointError(
            f"{bad} of {len(outputs)} samples have NaN/Inf outputs under {_label(cfg)} "
            f"({runtime.name}); metrics were logged, see predictions.npz"
        )
    if "accuracy" in metrics:
        log.info(
            "%s: accuracy %.4f (delta %+.2fpp), agreement %.4f, size %d bytes",
            _label(cfg), metrics["accuracy"], 100 * metrics["accuracy_delta"],
            metrics["agreement"], metrics["model_size_bytes"],
        )
    else:
        log.info("%s: %s delta %+.4g [%+.4g, %+.4g], size %d bytes", _label(cfg), cfg.task.name, metrics["metric_delta"],
                 metrics["metric_delta_ci_low"], metrics["metric_delta_ci_high"], metrics["model_size_bytes"])
    return metrics


def _label(cfg: DictConfig) -> str:
    """``precision/target`` of a conversion, or the user's file name."""
    if cfg.model.get("coreml_file"):
        return Path(str(cfg.model.coreml_file)).name
    return f"{cfg.precision.name}/{cfg.target.name}"


def _record_config(cfg: DictConfig, run: JobRun) -> Path:
    """Log what the job is (params, resolved config); skip a recipe its target cannot hold."""
    from precision_sweep.convert import invalid_reason

    own_file = bool(cfg.model.coreml_file)
    run.log_params(
        {
            # a Core ML file of the user's: its precision and target are the file's (use_file)
            **({} if own_file else {"precision": cfg.precision.name, "target": cfg.target.name}),
            "compute_units": cfg.compute_units.name.value,
            "device": cfg.device.name.value,
            "model": cfg.model.name,
            "dataset": cfg.dataset.name,
            "task": cfg.task.name,
            "runtime_requested": cfg.runtime.name,
            "input_type": "file" if own_file else str(cfg.model.input_type),
            "classifier": "file" if own_file else str(bool(cfg.model.classifier)).lower(),
        }
    )
    job_dir = _job_dir(cfg)
    job_dir.mkdir(parents=True, exist_ok=True)
    config_path = job_dir / "resolved_config.yaml"
    config_path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    run.log_artifact(config_path)
    reason = None if own_file else invalid_reason(cfg.precision, cfg.target)
    if reason:
        from precision_sweep.convert.targets import model_format

        run.log_params({"effective_target": "n/a", "model_format": model_format(cfg.target.coremltools_target)})
        raise SkipJob(reason)
    return job_dir


def _load_and_baseline(cfg: DictConfig, run: JobRun):
    """Load model and data (cached), claim the job's fingerprint, and the FP32 TF outputs."""
    from precision_sweep.baseline import baseline_outputs
    from precision_sweep.data import load_inputs

    cache_dir = Path(cfg.paths.cache)
    dataset, model = load_inputs(cfg.model, cfg.dataset, cache_dir, labels=cfg.task.labels)
    run.log_params(
        {"dataset_hash": dataset.content_hash, "model_hash": model.content_hash, **dataset.run_params, **model.run_params}
    )
    _resume_or_claim(cfg, run, model.content_hash, dataset.content_hash)
    baseline = baseline_outputs(model, dataset.x_test, dataset.content_hash, cache_dir)
    if cfg.task.compare is not None:  # labels that do not fit the outputs: refused before converting
        from precision_sweep.metrics.tasks.judge import check_labels

        if model.output_names:
            from precision_sweep.baseline import baseline_by_output

            check_labels(cfg.task, dataset.y_test, baseline_by_output(model, dataset.x_test, dataset.content_hash, cache_dir),
                         model.input_shape)
        else:
            check_labels(cfg.task, dataset.y_test, baseline, model.input_shape)
    return model, dataset, baseline


def _convert(cfg: DictConfig, run: JobRun, model, dataset, job_dir: Path):
    """The Core ML package of this recipe and target (repaired for ``*_auto`` recipes); skip
    it when coremltools raised it above the requested target."""
    from precision_sweep.convert import calibration_split, convert_variant
    from precision_sweep.convert.app_interface import image_feed, interface_for
    from precision_sweep.convert.doctor import explain_conversion_error
    from precision_sweep.convert.targets import model_format, model_suffix, spec_version

    interface = interface_for(cfg, model, dataset)
    if cfg.precision.get("auto_repair") and model.output_names:
        raise SkipJob(
            f"{cfg.precision.name} repairs the drift of one output; model={cfg.model.name} has "
            f"{len(model.output_names)} ({', '.join(model.output_names)}), which it does not weigh yet. Run the "
            "fp16 recipe (each output's drift is logged) or select one output with model.output and model.classifier=true."
        )
    if cfg.precision.get("auto_repair") and not interface.plain:  # before any conversion
        raise SkipJob(
            f"{cfg.precision.name} repairs programs with a tensor input and the model's own output; "
            "with model.input_type=image or model.classifier=true it is not built yet. Run the repair with "
            "model.input_type=tensor model.classifier=false: the ops it keeps are the same."
        )
    if interface.image is not None:
        from precision_sweep.data.preprocessing import check_pixels

        check_pixels(dataset.pixels_test, f"dataset={cfg.dataset.name}")
        run.log_params({"image_type": _image_type_text(interface)})
    dataset.feed = image_feed(interface)
    package = job_dir / f"{cfg.model.name}-{cfg.precision.name}-{cfg.target.name}{model_suffix(cfg.target.coremltools_target)}"
    try:
        converted = convert_variant(
            model, cfg.precision, cfg.target, package, max_batch=cfg.model.max_batch,
            cache_dir=Path(cfg.paths.cache), calibration=calibration_split(dataset, cfg.precision),
            interface=interface,
        )
    except Exception as exc:  # name the layer and TF op, say how to fix it
        raise explain_conversion_error(exc, model)
    if cfg.precision.get("auto_repair"):
        from precision_sweep.repair.greedy import repair_in_job

        converted = repair_in_job(cfg, run, model, dataset, converted)
    effective = converted.effective_target
    run.log_params({"effective_target": effective.lower(), "spec_version": converted.spec_version,
                    "model_format": model_format(cfg.target.coremltools_target)})
    # A neuralnetwork model carries the lowest spec its layers need (the digits model is spec 4
    # at ios14): only a version above the target's keeps it from deploying there.
    if converted.spec_version > spec_version(cfg.target.coremltools_target):
        raise SkipJob(
            f"{cfg.precision.name} at {cfg.target.name}: coremltools raised the model to "
            f"{effective} (spec {converted.spec_version}); it cannot deploy at {cfg.target.name}"
        )
    return converted


def _search(cfg: DictConfig, run: JobRun, model, dataset, baseline, job_dir: Path):
    """precision=search: the mixed-precision search (:mod:`precision_sweep.search.run`) on part
    of the test split; the job goes on with the chosen package and the held-out part."""
    from precision_sweep.convert.app_interface import image_feed, interface_for
    from precision_sweep.convert.targets import model_format
    from precision_sweep.search.run import search_in_job

    if model.output_names:
        from precision_sweep.errors import UserInputError

        raise UserInputError(
            f"precision=search judges one output; model={cfg.model.name} has {len(model.output_names)} "
            f"({', '.join(model.output_names)}). Sweep the recipes instead (each output's drift is logged), or "
            "search on one output with model.classifier=true model.output=<its name>."
        )
    dataset.feed = image_feed(interface_for(cfg, model, dataset))
    converted, held, held_baseline, summary = search_in_job(cfg, run, model, dataset, baseline, job_dir)
    run.log_params({"effective_target": converted.effective_target.lower(), "spec_version": converted.spec_version,
                    "model_format": model_format(cfg.target.coremltools_target)})
    return converted, held, held_baseline, summary


def _image_type_text(interface) -> str:
    scale, bias, layout, _ = interface.image
    return f"scale={scale:.6g} bias={[round(b, 6) for b in bias]} color_layout={layout}"


def _execute(cfg: DictConfig, run: JobRun, model, converted, dataset):
    """Run the package on the test split (Core ML on a Mac, else the emulator); a
    classifier's predicted labels come back too (else None), and a model's other outputs by
    name (else empty)."""
    from precision_sweep.runtime import batch_size_for, execution_of, run_batches, select_runtime
    from precision_sweep.runtime.batches import BatchStore, evaluation_key
    from precision_sweep.tracking.progress import job_bar_wanted

    x = dataset.program_inputs("test")
    execution, output = execution_of(cfg), (model.output_name if model.output_names else None)
    runtime = select_runtime(cfg.runtime.name, converted.path, execution, probe=x, output=output)
    run.set_tags(
        {
            "runtime": runtime.name,
            "precision_sweep.stage": "evaluate",  # lets a watcher see what a RUNNING job is doing
            **({"runtime_note": runtime.note} if runtime.note else {}),
        }
    )
    run.log_params({"runtime": runtime.name})
    start = time.perf_counter()
    labels: list = []
    others: dict = {}
    batch_size, shards = batch_size_for(runtime, cfg.runtime.batch_size), int(cfg.runtime.shards)
    # Each batch saved as it finishes (runtime.batches): resume=true reads an interrupted run's,
    # and shards write theirs there for the job to read.
    store = BatchStore.for_evaluation(Path(cfg.paths.cache), evaluation_key(
        converted.path, execution, runtime.name, dataset.content_hash, output, batch_size))
    if shards > 1:
        from precision_sweep.runtime.shards import evaluate_in_shards

        done = evaluate_in_shards(runtime.name, converted.path, execution, output, x, batch_size, store, shards,
                                  store.saved() if cfg.resume else set())
        run.set_tags({"evaluation_shards": ", ".join(f"{count} batches in process {pid}" for pid, count in done)})
    outputs = run_batches(
        runtime, x, batch_size, progress=job_bar_wanted(cfg.runtime.progress), desc=_label(cfg), labels=labels,
        others=others if model.output_names else None, store=store, reuse=bool(cfg.resume) or shards > 1,
    )
    return runtime, outputs, (np.concatenate(labels) if labels else None), others, store, time.perf_counter() - start


def _every_output(cfg: DictConfig, model, dataset, runtime, outputs, others) -> tuple[dict, dict]:
    """(the program's outputs, TF's) by name, for a model with several outputs: matched by name."""
    from precision_sweep.baseline import baseline_by_output
    from precision_sweep.errors import UserInputError

    program = {runtime.output_name: outputs, **others}
    reference = baseline_by_output(model, dataset.x_test, dataset.content_hash, Path(cfg.paths.cache))
    missing = sorted(set(reference) - set(program))
    if missing:
        raise UserInputError(
            f"The converted program has no output named {', '.join(missing)}; its outputs are "
            f"{', '.join(sorted(program))}, and TF's {', '.join(model.output_names)}. Outputs are matched by name: "
            "convert the model with outputs=[ct.TensorType(name=...)] named as the Keras outputs."
        )
    return {name: program[name] for name in reference}, reference


def _predicted_indices(runtime, labels, class_names: list[str]) -> np.ndarray | None:
    """A classifier's predicted labels as class indices of the dataset (None: no classifier)."""
    if labels is None or runtime.label_name is None:
        return None
    index = {str(name): i for i, name in enumerate(class_names)}
    return np.array([index.get(str(label), -1) for label in labels], dtype=np.int64)


def _measure(cfg: DictConfig, run: JobRun, model, dataset, converted, runtime, outputs, labels, baseline, job_dir: Path,
             every: tuple[dict, dict] | None = None):
    """Accuracy (a classifier's from its ``classLabel``, what an app reads), deltas with
    confidence intervals, agreement (on the scores), each output's drift (``every``: the
    program's and TF's outputs by name, for a model with several), sizes and the device
    report; returns the metrics and the files to log."""
    from precision_sweep.diagnose.run import device_report
    from precision_sweep.emulator import NUMERICS_VERSION
    from precision_sweep.metrics import compare, display_units, drift_by_output
    from precision_sweep.metrics.statistics import paired_report

    if cfg.task.compare is not None:  # a task of its own: its metrics, deltas and CIs
        from precision_sweep.metrics.tasks.judge import judge

        metrics, primary = judge(cfg.task, dataset.y_test, every[0] if every else outputs, every[1] if every else baseline,
                                 confidence=cfg.pick.confidence, n_resamples=cfg.pick.n_resamples, seed=cfg.seed,
                                 input_shape=model.input_shape)
        run.set_tags({"task_metric": primary})
        files = []
    else:
        predicted = _predicted_indices(runtime, labels, dataset.class_names)
        metrics = compare(outputs, baseline, dataset.y_test, predicted=predicted)
        statistics, files = paired_report(
            outputs, baseline, dataset.y_test, dataset.class_names, job_dir, cfg.pick.confidence,
            cfg.pick.n_resamples, cfg.seed, title=f"{cfg.model.name} {_label(cfg)}",
            predicted=predicted, groups=dataset.test_groups,
        )
        metrics.update(statistics)
        run.set_tags({"accuracy_from": "top-1" if predicted is None else "classLabel"})
    if every:  # every output's drift, the judged one's included (its figures are the job's own)
        drift = drift_by_output(*every)
        metrics.update(drift)
        for key in ("max_abs_diff", "mean_abs_diff"):
            metrics.setdefault(key, drift[f"{key}/{runtime.output_name}"])
    metrics.update(
        model_size_bytes=converted.size_bytes,
        weights_bytes=converted.weights_bytes,
        compression_ratio=converted.compression_ratio,
        bits_per_weight=converted.bits_per_weight,
        convert_seconds=converted.convert_seconds,
    )
    metrics.update(display_units(metrics))
    run.log_params({"numerics_version": NUMERICS_VERSION})
    device_metrics, device_files, cliff_text = device_report(
        cfg, model, dataset, converted.path, runtime.emulator, job_dir / "device"
    )
    metrics.update(device_metrics)
    run.set_tags({"cliffs": cliff_text[:4900]})
    if device_metrics.get("cliff_count"):
        log.warning("%s on %s: %s", _label(cfg), cfg.device.name.value, cliff_text)
    return metrics, [*device_files, *files]


def _record(cfg: DictConfig, run: JobRun, metrics, files, outputs, baseline, dataset, converted, job_dir: Path,
            others: dict | None = None) -> None:
    """Log the test set as the run's dataset input, the package as the job's LoggedModel with
    the metrics linked to both, and the artifacts: reports, predictions and the package (the run
    keeps its copy: ``precision-diagnose RUN_ID`` reads it from the run's artifacts)."""
    run.log_dataset(dataset.name, dataset.content_hash, dataset.x_test, dataset.y_test)
    run.create_model(f"{converted.path.stem}-{cfg.compute_units.name.value}")
    run.log_metrics(metrics)
    predictions = job_dir / "predictions.npz"
    np.savez_compressed(predictions, outputs=outputs, baseline=baseline, labels=dataset.y_test,
                        **{f"output_{name}": value for name, value in (others or {}).items()})
    for path in [*files, predictions, converted.path]:
        run.log_artifact(path)
    run.log_model_package(converted.path)
