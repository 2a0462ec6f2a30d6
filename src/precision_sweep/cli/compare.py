"""``precision-compare MODEL COREML DATA [key=value ...]``: is *my* Core ML file right?

Evaluates a Core ML package made outside precision-sweep against its TF/Keras source on a
labeled dataset, as one job of a sweep (``model.coreml_file`` replaces the conversion): the
accuracy of both, the delta with its confidence interval, agreement, output differences, and
for an image input whose result disagrees, the preprocessing doctor's verdict with the
``ct.ImageType`` arguments that fix it. One MLflow run is logged; the exit code is 0 whatever
the verdict, 2 for bad input (one paragraph, nothing left RUNNING).

``MODEL`` is a model config name (``digits_cnn``) or a ``.keras``/``.h5`` file or a SavedModel
folder; ``DATA`` a dataset config name (``digits``), an ``.npz`` file or an image folder. The
overrides are the usual config keys (``dataset.scale=...`` for the TF side's preprocessing,
``compute_units=...``, ``device=...``, ``tracking.uri=...``).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from precision_sweep.cli.report import fail
from precision_sweep.errors import UserInputError

PROGRAM = "precision-compare"
CONF = Path(__file__).resolve().parent.parent / "conf"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Evaluate a Core ML file (.mlpackage) made outside precision-sweep against its TF/Keras "
        "source on a labeled dataset: accuracy of both, delta with CI, agreement, and the preprocessing doctor.",
        epilog="Example: precision-compare model.keras MyModel.mlpackage data/val_images dataset.scale=1.0 compute_units=all",
    )
    parser.add_argument("model", help="a model config name (digits_cnn), a .keras/.h5 file or a SavedModel folder")
    parser.add_argument("coreml", help="the Core ML file: an .mlpackage folder")
    parser.add_argument("data", help="a dataset config name (digits), an .npz file or an image folder (one subfolder per class)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, as for precision-sweep")
    return parser


def _options(group: str) -> set[str]:
    return {p.stem for p in (CONF / group).glob("*.yaml")}


def _existing(value: str, argument: str, group: str, what: str) -> Path | None:
    """None when ``value`` names a config of ``group``; else the path, which must exist."""
    if value in _options(group) and not Path(value).exists():
        return None
    path = Path(value).expanduser()
    if not path.exists():
        raise UserInputError(
            f"{argument} {value} does not exist and is not a {group} config "
            f"({', '.join(sorted(_options(group)))}). Give {what}."
        )
    return path


def model_overrides(value: str) -> list[str]:
    """The ``model=`` overrides of the MODEL argument."""
    path = _existing(value, "MODEL", "model", "your .keras/.h5 file or SavedModel folder")
    if path is None:
        return [f"model={value}"]
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise UserInputError(f"MODEL {path} is a folder without saved_model.pb: give a SavedModel folder or a .keras/.h5 file.")
        return ["model=saved_model", f"model.path={path.resolve()}"]
    if path.suffix not in (".keras", ".h5"):
        raise UserInputError(f"MODEL {path} is neither a .keras/.h5 file nor a SavedModel folder.")
    return ["model=keras", f"model.path={path.resolve()}"]


def data_overrides(value: str) -> list[str]:
    """The ``dataset=`` overrides of the DATA argument."""
    path = _existing(value, "DATA", "dataset", "an .npz file (x, y) or an image folder with one subfolder per class")
    if path is None:
        return [f"dataset={value}"]
    if path.is_dir():
        return ["dataset=image_folder", f"dataset.path={path.resolve()}"]
    if path.suffix != ".npz":
        raise UserInputError(f"DATA {path} is neither an .npz file nor an image folder.")
    return ["dataset=npz", f"dataset.path={path.resolve()}"]


def _unless_given(derived: list[str], given: list[str]) -> list[str]:
    """``derived`` without the group choice the user gave (``model=tf_keras`` for a Keras 2
    file, ``dataset=npz`` ...): Hydra takes one choice per group."""
    chosen = {o.split("=", 1)[0] for o in given if "=" in o and "." not in o.split("=", 1)[0]}
    return [o for o in derived if o.split("=", 1)[0] not in chosen]


def compose_config(overrides: list[str]):
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from precision_sweep import config as _config  # noqa: F401  (registers the schemas)

    try:  # the configs inside the package, found as the app finds them
        with initialize_config_module(config_module="precision_sweep.conf", version_base="1.3", job_name=PROGRAM):
            return compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserInputError(f"{' '.join(str(exc).split())}") from exc


def _latest_run(cfg, path: Path):
    from precision_sweep.tracking import store

    uri = store.absolute_uri(cfg.tracking.uri)
    client = store.client_for(uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], f"params.coreml_file = '{path}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return uri, (runs[0] if runs else None)


def report(cfg, metrics: dict, run, uri: str) -> str:
    """The terminal report of one comparison."""
    lines = [f"{cfg.model.coreml_file} against model={cfg.model.name} on dataset={cfg.dataset.name} "
             f"({int(metrics.get('n_samples', 0))} samples, compute_units={cfg.compute_units.name.value}, "
             f"device={cfg.device.name.value})"]
    label = run.data.tags.get("accuracy_from", "top-1") if run is not None else "top-1"
    lines.append(f"  accuracy: TF {100 * metrics['baseline_accuracy']:.2f}%, Core ML {100 * metrics['accuracy']:.2f}% "
                 f"({label}); delta {100 * metrics['accuracy_delta']:+.2f} pp "
                 f"[{100 * metrics.get('accuracy_delta_ci_low', float('nan')):+.2f}, "
                 f"{100 * metrics.get('accuracy_delta_ci_high', float('nan')):+.2f}] "
                 f"({100 * cfg.pick.confidence:g}% CI)")
    lines.append(f"  agreement with TF {metrics['agreement']:.4f}; output |diff| max {metrics['max_abs_diff']:.4g}, "
                 f"mean {metrics['mean_abs_diff']:.4g}")
    if run is not None:
        doctor = run.data.tags.get("preprocessing_doctor")
        if doctor:
            lines.append(f"  {doctor}")
        elif metrics["agreement"] >= cfg.diagnosis.below_agreement:
            lines.append("  verdict: the file agrees with TF on this data.")
        lines.append(f"  run {run.info.run_id} in {uri}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TQDM_DISABLE", "1")
    args = build_parser().parse_args(argv)
    from precision_sweep.data.validate import check_coreml_file

    try:
        coreml = check_coreml_file(args.coreml)
        overrides = [*_unless_given(model_overrides(args.model), args.overrides),
                     *_unless_given(data_overrides(args.data), args.overrides), f"model.coreml_file={coreml}",
                     *args.overrides]
        cfg = compose_config(overrides)
    except UserInputError as exc:
        fail(PROGRAM, f"error: {exc}")
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    logging.getLogger("precision_sweep").setLevel(logging.INFO)
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    from precision_sweep.job import run_job

    try:
        metrics = run_job(cfg)
    except UserInputError as exc:
        fail(PROGRAM, f"error: {exc}")
    uri, run = _latest_run(cfg, coreml)
    print(report(cfg, metrics, run, uri), flush=True)


if __name__ == "__main__":
    main()
